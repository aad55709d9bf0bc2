// AI session page: the session's agent runs in the order they happened, each with its phases, tool calls
// and LLM calls (tokens, cost) in start order, and its errors; totals for the whole session above.
import { getJSON, el, fill, add, fmtMs, fmtNum, fmtTime, showError, traceHref, contrail } from "./api.js";
import { fact, idLink, llmHref, moneyText, userHref } from "./ai_common.js";

const $ = (id) => document.getElementById(id);
const sessionId = $("session-page").dataset.sessionId;
const PAGE = Number(new URLSearchParams(window.location.search).get("limit")) || 50;  // runs per page (?limit=)
let cursor = null;
let shown = 0;

function renderSummary(body) {
  const t = body.totals;
  const users = body.user_ids.length ? body.user_ids.flatMap((u, i) => [i ? ", " : "", idLink(userHref(u), u)]) : ["–"];
  fill($("session-summary"),
    ...fact("Users", el("span", {}, ...users)),
    ...fact("Agents", body.agents.join(", ") || "–"),
    ...fact("Runs", `${fmtNum(t.runs)}${t.failed_runs ? ` (${fmtNum(t.failed_runs)} failed)` : ""}`),
    ...fact("First run (UTC)", fmtTime(body.first_time)),
    ...fact("Last run (UTC)", fmtTime(body.last_time)),
    ...fact("Time in runs", fmtMs(t.duration_ms)),
    ...fact("LLM calls", fmtNum(t.llm_calls)),
    ...fact("Tool calls", `${fmtNum(t.tool_calls)}${t.failed_tool_calls ? ` (${fmtNum(t.failed_tool_calls)} failed)` : ""}`),
    ...fact("Tokens in / out", `${fmtNum(t.input_tokens)} / ${fmtNum(t.output_tokens)}`),
    ...fact("Cost", moneyText(t.cost, t.unpriced_models).text, { title: moneyText(t.cost, t.unpriced_models).title, "data-col": "cost" }),
    ...fact("Errors", fmtNum(t.errors), { class: t.errors ? "text-err" : "" }));
  $("session-note").textContent = body.runs_capped
    ? `Totals cover the first ${fmtNum(t.runs)} runs of ${fmtNum(body.total_runs)}${body.total_capped ? "+" : ""}.` : "";
}

function stepItem(run, step) {
  const offset = el("span", { class: "muted", text: ` +${fmtMs(step.offset_ms)} · ${fmtMs(step.duration_ms)}` });
  const failed = step.kind === "phase" ? step.error : step.success === false;
  let label;
  let extra = null;
  if (step.kind === "phase") label = el("a", { href: traceHref(run.trace_id, step.span_id), text: `Phase: ${step.name}` });
  else if (step.kind === "tool") label = el("a", { href: traceHref(run.trace_id, step.span_id), text: `Tool: ${step.name}` });
  else {
    label = el("a", { href: llmHref(run.trace_id, step.span_id), class: "llm-link", text: `LLM: ${step.model || "(unknown model)"}` });
    const money = moneyText(step.cost, [], step.priced);
    extra = el("span", { class: "muted" }, ` · ${fmtNum(step.input_tokens)} in / ${fmtNum(step.output_tokens)} out tokens · `,
      el("span", { text: money.text, title: money.title }));
  }
  return el("li", { class: `step step-${step.kind}${failed ? " is-error" : ""}`, dataset: { spanId: step.span_id } },
    label, offset, extra, failed ? el("span", { class: "badge badge-err", text: "failed" }) : null);
}

function runItem(run, number) {
  const t = run.totals;
  const failed = run.success === false;
  const unpriced = [...new Set(run.llm_calls.filter((c) => !c.priced && c.model).map((c) => c.model))];
  const money = moneyText(t.cost, unpriced);
  return el("li", { class: `run${failed ? " run-failed" : ""}`, dataset: { traceId: run.trace_id } },
    el("div", { class: "run-head" },
      el("span", { class: "run-no", text: `#${number}` }),
      el("a", { href: traceHref(run.trace_id), class: "run-time", text: fmtTime(run.start_time, run.start_ns) }),
      el("span", { text: run.agent || "(no agent)" }),
      el("span", { class: failed ? "text-err" : "text-ok", text: failed ? "failed" : "ok" }),
      el("span", { class: "muted", text: `${fmtMs(run.duration_ms)} · ${fmtNum(t.llm_calls)} LLM · ${fmtNum(t.tool_calls)} tools · ${fmtNum(t.input_tokens + t.output_tokens)} tokens · ` }),
      el("span", { text: money.text, title: money.title })),
    run.steps.length ? el("ol", { class: "steps" }, ...run.steps.map((step) => stepItem(run, step)))
      : el("p", { class: "muted small", text: "No phases, tool or LLM calls recorded in this run." }),
    run.errors.length ? el("ul", { class: "run-errors", "aria-label": "Errors" }, ...run.errors.map((e) =>
      el("li", {}, el("a", { href: traceHref(run.trace_id, e.span_id), text: e.name }),
        el("span", { class: "muted", text: ` (${e.service})` }), e.message ? `: ${e.message}` : ""))) : null);
}

async function load() {
  showError($("session-error"), null);
  const body = await getJSON(`/ai/sessions/${encodeURIComponent(sessionId)}`, { limit: PAGE, cursor });
  if (!shown) { renderSummary(body); $("session-runs").replaceChildren(); }
  add($("session-runs"), ...body.runs.map((run, i) => runItem(run, shown + i + 1)));
  shown += body.runs.length;
  cursor = body.next_cursor;
  $("more-runs").hidden = !cursor;
  $("runs-count").textContent = `${fmtNum(shown)} of ${fmtNum(body.total_runs)}${body.total_capped ? "+" : ""} runs shown`;
  contrail.sessionRuns = shown;
}

$("more-runs").addEventListener("click", () => load().catch((e) => showError($("session-error"), e)));
load().catch((error) => {
  showError($("session-error"), error);
  fill($("session-runs"), el("li", { class: "muted", text: "No runs to show." }));
}).finally(() => { contrail.sessionReady = true; });
