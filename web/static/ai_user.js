// AI user page: one user's LLM usage and cost over time by model, and their sessions, latest first.
import { getJSON, el, fill, add, fmtMs, fmtNum, fmtTime, showError, plotTheme, plotText, plotlyReady, contrail } from "./api.js";
import { fact, idLink, moneyText, sessionHref } from "./ai_common.js";

const $ = (id) => document.getElementById(id);
const userId = $("user-page").dataset.userId;
const form = $("user-form");
let cursor = null;

const lookback = () => form.elements.lookback.value;

function renderUsage(body) {
  const t = body.totals;
  const money = moneyText(t.cost, body.unpriced_models);
  fill($("user-summary"),
    ...fact("LLM calls", fmtNum(t.calls)),
    ...fact("Errors", fmtNum(t.errors), { class: t.errors ? "text-err" : "" }),
    ...fact("Tokens in / out", `${fmtNum(t.input_tokens)} / ${fmtNum(t.output_tokens)}`),
    ...fact("Cached input tokens", fmtNum(t.cache_read_tokens)),
    ...fact("Cost", money.text, { title: money.title, "data-col": "cost" }),
    ...fact("Time in LLM calls", fmtMs(t.duration_ms)),
    ...fact("Traces", `${fmtNum(body.traces)}${body.traces_capped ? "+" : ""}`),
    ...fact("Last trace (UTC)", body.last_trace_time ? fmtTime(body.last_trace_time) : "–"));
  $("user-note").textContent = body.unpriced_models.length
    ? `Unpriced models (counted as 0): ${body.unpriced_models.join(", ")} — ${body.price_hint}.` : "";
  const unpriced = new Set(body.unpriced_models);
  const tbody = $("user-models").querySelector("tbody");
  tbody.replaceChildren(...body.models.map((m) => {
    const cost = moneyText(m.cost, [], !unpriced.has(m.key));
    return el("tr", { dataset: { model: m.key } }, el("td", { text: m.key || "(unknown)" }), el("td", { class: "num", text: fmtNum(m.calls) }),
      el("td", { class: "num", text: fmtNum(m.input_tokens) }), el("td", { class: "num", text: fmtNum(m.output_tokens) }),
      el("td", { class: m.errors ? "num text-err" : "num", text: fmtNum(m.errors) }),
      el("td", { class: "num", "data-col": "cost", text: cost.text, title: cost.title }));
  }));
  if (!body.models.length) tbody.append(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No LLM calls of this user in this window." })));
}

async function renderChart(body) {
  const Plotly = await plotlyReady();
  const theme = plotTheme();
  const anyCost = body.models.some((m) => m.cost > 0);
  const field = anyCost ? "cost" : "input_tokens";
  const traces = body.series.map((s) => ({ type: "bar", name: plotText(s.key || "(unknown)"),
    x: s.points.map((p) => p.time), y: s.points.map((p) => p[field] + (field === "input_tokens" ? p.output_tokens : 0)) }));
  await Plotly.react($("chart-user-cost"), traces, { ...theme, height: 240, barmode: "stack",
    legend: { orientation: "h", y: -0.25 },
    yaxis: { ...theme.yaxis, title: { text: anyCost ? "cost ($)" : "tokens (no priced model)" } },
    ...(traces.length ? {} : { annotations: [{ text: "no LLM calls in this window", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }],
      xaxis: { ...theme.xaxis, visible: false }, yaxis: { ...theme.yaxis, visible: false } }) },
  { displayModeBar: false, responsive: true });
}

function sessionRow(s) {
  const t = s.totals;
  const money = moneyText(t.cost, t.unpriced_models);
  return el("tr", { dataset: { sessionId: s.session_id } },
    el("td", {}, idLink(sessionHref(s.session_id), s.session_id)),
    el("td", { class: "nowrap", text: fmtTime(s.last_time) }),
    el("td", { text: s.agents.join(", ") || "–" }),
    el("td", { class: "num", text: `${fmtNum(t.runs)}${s.runs_capped ? "+" : ""}` }),
    el("td", { class: t.failed_runs ? "num text-err" : "num", text: fmtNum(t.failed_runs) }),
    el("td", { class: "num", text: fmtNum(t.llm_calls) }),
    el("td", { class: "num", text: fmtNum(t.input_tokens + t.output_tokens) }),
    el("td", { class: "num", "data-col": "cost", text: money.text, title: money.title }));
}

async function loadSessions(more) {
  if (!more) cursor = null;
  const body = await getJSON("/ai/sessions", { user_id: userId, lookback: lookback(), cursor });
  const tbody = $("user-sessions").querySelector("tbody");
  if (!more) tbody.replaceChildren();
  add(tbody, ...body.sessions.map(sessionRow));
  if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No sessions of this user in this window." })));
  cursor = body.next_cursor;
  $("more-sessions").hidden = !cursor;
  contrail.userSessions = tbody.querySelectorAll("tr[data-session-id]").length;
}

async function refresh() {
  showError($("user-error"), null);
  history.replaceState(null, "", `${window.location.pathname}?lookback=${encodeURIComponent(lookback())}`);
  const results = await Promise.allSettled([
    getJSON(`/ai/users/${encodeURIComponent(userId)}`, { lookback: lookback() }).then((body) => { renderUsage(body); return renderChart(body); }),
    loadSessions(false)]);
  const failed = results.find((r) => r.status === "rejected");
  if (failed) showError($("user-error"), failed.reason);
  contrail.userReady = true;
}

const initial = new URLSearchParams(window.location.search).get("lookback");
if (initial && [...form.elements.lookback.options].some((o) => o.value === initial)) form.elements.lookback.value = initial;
form.addEventListener("submit", (event) => { event.preventDefault(); contrail.userReady = false; refresh(); });
$("more-sessions").addEventListener("click", () => loadSessions(true).catch((e) => showError($("user-error"), e)));
refresh();
