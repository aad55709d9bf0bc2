// AI page: LLM calls by model (tokens, latency, cost) and, per agent trace, its phases,
// tool calls and LLM calls in the order they happened.
import { getJSON, el, fmtMs, fmtNum, fmtTime, showError, traceHref, plotTheme, plotText, plotlyReady, contrail } from "./api.js";
import { llmHref, moneyText, sessionHref, userHref } from "./ai_common.js";

const $ = (id) => document.getElementById(id);
const form = $("ai-form");
const TRACE_LIMIT = 200;  // the API's maximum: the p95 column reads the LLM calls of these traces

function lookback() { return form.elements.lookback.value; }

function usageRows(usage) {
  const groups = Array.isArray(usage) ? usage : usage.groups || usage.models || [];
  return groups.map((g) => ({
    model: g.key || g.model || "(unknown)", calls: g.calls ?? g.count ?? 0, errors: g.errors ?? g.error_count ?? 0,
    input: g.input_tokens ?? 0, output: g.output_tokens ?? 0, cost: g.cost,
    avg: g.avg_ms ?? (g.calls ? (g.duration_ms ?? 0) / g.calls : null), p95: g.p95_ms ?? null,
  }));
}

/** Nearest-rank percentile of a list of numbers (q in 0..1), or null for an empty list. */
export function percentile(values, q) {
  if (!values.length) return null;
  const sorted = values.slice().sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))];
}

/** LLM call durations per model from /ai/traces (the usage rollup keeps sums, not distributions). */
export function callDurationsByModel(traces) {
  const out = new Map();
  for (const t of traces) {
    for (const call of t.llm_calls || []) {
      const key = call.model || "(unknown)";
      if (!out.has(key)) out.set(key, []);
      if (Number.isFinite(call.duration_ms)) out.get(key).push(call.duration_ms);
    }
  }
  return out;
}

const UNPRICED_TITLE = "no price for this model in the price table (CONTRAIL_PRICE_TABLE, see docs/ai.md): its cost is not counted";

/** A cost cell: "$0.0123", "unpriced" when no call of it had a price, "$0.0123 + unpriced" when some had none. */
export function costText(cost, unpricedCalls, calls) {
  if (cost === undefined || cost === null) return { text: "–" };
  const money = `$${Number(cost).toFixed(4)}`;
  if (!unpricedCalls) return { text: money };
  if (unpricedCalls >= calls && !Number(cost)) return { text: "unpriced", title: UNPRICED_TITLE };
  return { text: `${money} + unpriced`, title: `${unpricedCalls} of ${calls} LLM calls: ${UNPRICED_TITLE}` };
}

let agentTraces = [];  // the latest /ai/traces answer, shared by the models table and the traces table

async function loadUsage() {
  const usage = await getJSON("/ai/usage", { lookback: lookback(), group_by: "model" });
  const rows = usageRows(usage);
  const unpriced = new Set(usage.unpriced_models || []);
  const durations = callDurationsByModel(agentTraces);
  let partial = false;
  for (const row of rows) {
    const sample = durations.get(row.model) || [];
    if (row.p95 === null && sample.length) row.p95 = percentile(sample, 0.95);
    row.sampled = sample.length;
    if (row.p95 !== null && sample.length < row.calls) partial = true;
  }
  const tbody = $("models-table").querySelector("tbody");
  tbody.replaceChildren(...rows.map((r) => el("tr", { dataset: { model: r.model } },
    el("td", { class: "nowrap", text: r.model }), el("td", { class: "num", text: fmtNum(r.calls) }),
    el("td", { class: "num", text: fmtNum(r.input) }), el("td", { class: "num", text: fmtNum(r.output) }),
    el("td", { class: "num", text: fmtMs(r.avg) }),
    el("td", { class: "num", "data-col": "p95", text: fmtMs(r.p95),
      title: r.sampled < r.calls ? `p95 of ${fmtNum(r.sampled)} of ${fmtNum(r.calls)} calls (those in the latest ${fmtNum(agentTraces.length)} agent traces)` : `p95 of all ${fmtNum(r.calls)} calls` }),
    el("td", { class: r.errors ? "num text-err" : "num", text: fmtNum(r.errors) }),
    el("td", { class: "num", "data-col": "cost", ...costText(r.cost, unpriced.has(r.model) ? r.calls : 0, r.calls) }))));
  if (!rows.length) tbody.append(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No LLM calls recorded in this window." })));
  const unpricedNote = $("unpriced-note");
  unpricedNote.hidden = !unpriced.size;
  unpricedNote.textContent = unpriced.size ? `Unpriced models (their cost counts as 0): ${[...unpriced].join(", ")}. To price them, ${usage.price_hint}.` : "";
  $("models-note").textContent = !rows.length ? "" : partial
    ? `p95 is taken from the LLM calls of the latest ${fmtNum(agentTraces.length)} agent traces in this window, not from every call.`
    : "p95 is taken from every LLM call in this window.";
  const Plotly = await plotlyReady();
  const theme = plotTheme();
  await Plotly.react($("chart-tokens"), [
    { type: "bar", name: "input tokens", x: rows.map((r) => plotText(r.model)), y: rows.map((r) => r.input) },
    { type: "bar", name: "output tokens", x: rows.map((r) => plotText(r.model)), y: rows.map((r) => r.output) },
  ], { ...theme, height: 240, barmode: "stack", legend: { orientation: "h", y: 1.15 },
    ...(rows.length ? {} : { annotations: [{ text: "no LLM calls in this window", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
      xaxis: { ...theme.xaxis, visible: false }, yaxis: { ...theme.yaxis, visible: false } }) },
  { displayModeBar: false, responsive: true });
  contrail.aiModels = rows.length;
}

async function fetchTraces() {
  const body = await getJSON("/ai/traces", { lookback: lookback(), limit: TRACE_LIMIT });
  agentTraces = Array.isArray(body) ? body : body.traces || [];
}

function renderTraces() {
  const traces = agentTraces;
  const tbody = $("ai-traces-table").querySelector("tbody");
  tbody.replaceChildren(...traces.map((t) => {
    const totals = t.totals || {};
    const failed = t.success === false;
    const llmCalls = Array.isArray(t.llm_calls) ? t.llm_calls.length : t.llm_calls;
    const toolCalls = Array.isArray(t.tool_calls) ? t.tool_calls.length : t.tool_calls;
    const row = el("tr", { tabindex: 0, class: failed ? "row-error selectable" : "selectable", dataset: { traceId: t.trace_id } },
      el("td", { class: "nowrap" }, el("a", { href: traceHref(t.trace_id), title: `${fmtTime(t.start_time, t.start_ns)} UTC`,
        text: fmtTime(t.start_time, t.start_ns).slice(11) })),  // time of day; the full UTC time is in the title
      el("td", { text: t.agent || "–" }),
      el("td", { class: failed ? "text-err" : "text-ok", text: failed ? "failed" : "ok" }),
      el("td", { class: "num", text: fmtMs(t.duration_ms) }),
      el("td", { class: "num", text: fmtNum(totals.llm_calls ?? llmCalls) }),
      el("td", { class: "num", text: fmtNum(totals.tool_calls ?? toolCalls) }),
      el("td", { class: "num", text: fmtNum((totals.input_tokens ?? 0) + (totals.output_tokens ?? 0)) }),
      el("td", { class: "num", "data-col": "cost", ...costText(totals.cost,
        (Array.isArray(t.llm_calls) ? t.llm_calls : []).filter((c) => c.priced === false).length,
        totals.llm_calls ?? llmCalls) }));
    const open = (event) => { if (event.target.closest("a")) return; showSteps(t.trace_id); };
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => { if (event.key === "Enter") open(event); });
    return row;
  }));
  if (!traces.length) tbody.append(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No agent traces in this window." })));
  contrail.aiTraces = traces.length;
}

function stepOf(span) {
  const a = span.attributes || {};
  const op = a["gen_ai.operation.name"];
  if (a["contrail.ai.phase"]) return { kind: "phase", label: `Phase: ${a["contrail.ai.phase"]}` };
  if (op === "invoke_agent") return { kind: "agent", label: `Agent: ${a["gen_ai.agent.name"] || span.name}` };
  if (op === "execute_tool") return { kind: "tool", label: `Tool: ${a["gen_ai.tool.name"] || span.name}` };
  if (op) {
    const model = a["gen_ai.response.model"] || a["gen_ai.request.model"] || "";
    const tokens = [a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]];
    return { kind: "llm", label: `LLM ${op}: ${model}`, extra: tokens.some((t) => t !== undefined) ? `${fmtNum(tokens[0] ?? 0)} in / ${fmtNum(tokens[1] ?? 0)} out tokens` : "" };
  }
  return null;
}

async function showSteps(traceId) {
  const list = $("ai-steps");
  const trace = await getJSON(`/traces/${traceId}`);
  const base = Math.min(...trace.spans.map((s) => Number(s.start_ns)));
  const depthOf = new Map();
  const steps = [];
  for (const span of trace.spans) {  // spans arrive sorted by start time
    const step = stepOf(span);
    const parentDepth = depthOf.get(span.parent_span_id);
    const depth = step ? (parentDepth === undefined ? 0 : parentDepth + 1) : parentDepth;
    if (depth !== undefined) depthOf.set(span.span_id, depth);
    if (step) steps.push({ span, step, depth });
  }
  $("steps-title").textContent = `Steps of trace ${traceId.slice(0, 12)}…`;
  for (const row of $("ai-traces-table").querySelectorAll("tbody tr[data-trace-id]")) {
    row.classList.toggle("is-selected", row.dataset.traceId === traceId);
    row.setAttribute("aria-selected", String(row.dataset.traceId === traceId));
  }
  list.replaceChildren(...steps.map(({ span, step, depth }) => el("li", { class: `step step-${step.kind}${span.status === "error" ? " is-error" : ""}`, style: `margin-left:${depth * 16}px` },
    el("a", { href: step.kind === "llm" ? llmHref(traceId, span.span_id) : traceHref(traceId, span.span_id), text: step.label }),
    el("span", { class: "muted", text: ` +${fmtMs((Number(span.start_ns) - base) / 1e6)} · ${fmtMs(span.duration_ms)}` }),
    step.extra ? el("span", { class: "muted", text: ` · ${step.extra}` }) : null,
    span.status === "error" ? el("span", { class: "badge badge-err", text: span.status_message || "error" }) : null)));
  if (!steps.length) list.append(el("li", { class: "muted", text: "This trace has no AI spans." }));
  contrail.aiSteps = steps.length;
}

async function loadSessions() {
  const body = await getJSON("/ai/sessions", { lookback: lookback(), limit: 20 });
  const tbody = $("ai-sessions-table").querySelector("tbody");
  tbody.replaceChildren(...body.sessions.map((s) => {
    const t = s.totals;
    const money = moneyText(t.cost, t.unpriced_models);
    return el("tr", { dataset: { sessionId: s.session_id } },
      el("td", {}, el("a", { href: sessionHref(s.session_id), text: s.session_id })),
      el("td", {}, ...s.user_ids.flatMap((u, i) => [i ? ", " : "", el("a", { href: userHref(u), text: u })])),
      el("td", { class: "nowrap", text: fmtTime(s.last_time) }),
      el("td", { class: "num", text: fmtNum(t.runs) }), el("td", { class: "num", text: fmtNum(t.llm_calls) }),
      el("td", { class: "num", text: fmtNum(t.input_tokens + t.output_tokens) }),
      el("td", { class: "num", "data-col": "cost", text: money.text, title: money.title }));
  }));
  if (!body.sessions.length) tbody.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No sessions in this window: agent runs started with a session_id show here." })));
  contrail.aiSessions = body.sessions.length;
}

async function loadUsers() {
  const body = await getJSON("/ai/users", { lookback: lookback(), limit: 50 });
  const tbody = $("ai-users-table").querySelector("tbody");
  tbody.replaceChildren(...body.users.map((u) => {
    const money = moneyText(u.cost);
    return el("tr", { dataset: { userId: u.user_id } }, el("td", {}, el("a", { href: userHref(u.user_id), text: u.user_id })),
      el("td", { class: "num", text: fmtNum(u.calls) }), el("td", { class: "num", text: fmtNum(u.input_tokens + u.output_tokens) }),
      el("td", { class: "num", "data-col": "cost", text: money.text }));
  }));
  if (!body.users.length) tbody.append(el("tr", {}, el("td", { colspan: 4, class: "muted", text: "No LLM calls with a user in this window." })));
  contrail.aiUsers = body.users.length;
}

$("ai-find").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = $("find-id").value.trim();
  if (!id) return;
  window.location.assign($("find-kind").value === "user" ? userHref(id) : sessionHref(id));
});

async function refresh() {
  showError($("ai-error"), null);
  history.replaceState(null, "", `/ai?lookback=${encodeURIComponent(lookback())}`);
  const fetched = await Promise.allSettled([fetchTraces()]);
  if (fetched[0].status === "rejected") agentTraces = [];
  renderTraces();
  const results = [...fetched, ...await Promise.allSettled([loadUsage(), agentTraces.length ? showSteps(agentTraces[0].trace_id) : null,
    loadSessions(), loadUsers()])];
  const failed = results.find((r) => r.status === "rejected");
  if (failed) showError($("ai-error"), failed.reason);
  if (!agentTraces.length) {
    $("steps-title").textContent = "Steps of the selected trace";
    $("ai-steps").replaceChildren(el("li", { class: "muted", text: "No agent traces in this window to show steps for." }));
  }
  contrail.aiReady = true;
}

const initial = new URLSearchParams(window.location.search).get("lookback");
if (initial) form.elements.lookback.value = initial;
form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
refresh();
