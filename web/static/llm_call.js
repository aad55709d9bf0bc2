// LLM call viewer: prompt messages, completion, requested tool calls, parameters, tokens, latency and cost of
// one LLM span. Content is shown only when it was recorded (and redacted) by the tracer; otherwise the page
// says that it was not recorded and how to turn recording on.
import { getJSON, el, fill, fmtMs, fmtNum, fmtTime, showError, traceHref, contrail } from "./api.js";
import { fact, idLink, moneyText, sessionHref, userHref } from "./ai_common.js";

const $ = (id) => document.getElementById(id);
const page = $("llm-page");
const traceId = page.dataset.traceId;
const spanId = page.dataset.spanId;

function json(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value, null, 2);
}

function partNode(part) {
  if (part.type === "text") return el("pre", { class: "message-text", text: part.content ?? "" });
  if (part.type === "tool_call") {
    return el("div", { class: "message-part" }, el("span", { class: "badge", text: "tool call" }), " ",
      el("code", { text: part.name || "?" }), el("pre", { class: "json", text: json(part.arguments ?? "") }));
  }
  if (part.type === "tool_call_response") {
    return el("div", { class: "message-part" }, el("span", { class: "badge", text: "tool result" }),
      part.id ? el("span", { class: "muted", text: ` for ${part.id}` }) : null,
      el("pre", { class: "message-text", text: json(part.response ?? "") }));
  }
  return el("pre", { class: "json", text: json(part) });
}

function messageNode(message) {
  return el("div", { class: `message role-${String(message.role).replace(/[^a-z_]/gi, "")}` },
    el("div", { class: "message-role" }, message.role,
      message.finish_reason ? el("span", { class: "muted", text: ` · finished: ${message.finish_reason}` }) : null),
    ...(message.parts.length ? message.parts.map(partNode) : [el("p", { class: "muted small", text: "(no content)" })]));
}

function messages(box, list, missing) {
  fill(box, ...(list ? list.map(messageNode) : [el("p", { class: "muted not-recorded", text: missing })]));
}

function render(call) {
  $("llm-title").textContent = `LLM call: ${call.model || "(unknown model)"}`;
  document.title = `LLM call ${call.model || ""} · Contrail`;
  const money = moneyText(call.cost, [], call.priced);
  const failed = call.status === "error";
  fill($("llm-summary"),
    ...fact("Service", call.service),
    ...fact("Operation", call.operation || call.name),
    ...fact("Provider", call.provider || "–"),
    ...fact("Requested model", call.request_model || "–"),
    ...fact("Response model", call.response_model || "–"),
    ...fact("Started (UTC)", fmtTime(call.start_time, call.start_ns)),
    ...fact("Latency", fmtMs(call.duration_ms), { "data-col": "latency" }),
    ...fact("Status", failed ? `error${call.status_message ? `: ${call.status_message}` : ""}` : call.status, { class: failed ? "text-err" : "" }),
    ...fact("Input tokens", fmtNum(call.usage.input_tokens), { "data-col": "input-tokens" }),
    ...fact("Output tokens", fmtNum(call.usage.output_tokens), { "data-col": "output-tokens" }),
    ...fact("Cached input tokens", fmtNum(call.usage.cache_read_tokens)),
    ...fact("Cost", money.text, { title: call.priced ? `prices: ${call.price_source}` : call.price_hint, "data-col": "cost" }),
    ...fact("Finish reasons", call.finish_reasons.join(", ") || "–"),
    ...fact("Purpose", call.purpose || "–"),
    ...fact("Agent", call.agent || "–"),
    ...fact("Session", call.session_id ? idLink(sessionHref(call.session_id), call.session_id) : "–"),
    ...fact("User", call.user_id ? idLink(userHref(call.user_id), call.user_id) : "–"),
    ...fact("Trace", idLink(traceHref(call.trace_id, call.span_id), `${call.trace_id.slice(0, 16)}…`)));

  const note = $("content-note");
  note.className = `content-note ${call.content.recorded ? "content-recorded" : "content-missing"}`;
  note.replaceChildren(el("strong", { text: call.content.recorded ? "Recorded content. " : "Content not recorded. " }),
    call.content.note, call.content.truncated ? " Some of it was cut to the attribute length limit (…[truncated])." : "");
  const missing = call.content.recorded ? "Not recorded for this call." : "Not recorded.";
  $("instructions-title").hidden = !call.system_instructions;
  messages($("system-instructions"), call.system_instructions, "");
  if (!call.system_instructions) $("system-instructions").replaceChildren();
  messages($("prompt-messages"), call.input_messages, missing);
  messages($("completion-messages"), call.output_messages, missing);
  const calls = call.tool_calls;
  fill($("tool-calls"), ...(calls.length ? calls.map((c) => el("li", {}, el("code", { text: c.name || "?" }),
    c.id ? el("span", { class: "muted", text: ` (${c.id})` }) : null, el("pre", { class: "json", text: json(c.arguments ?? "") })))
    : [el("li", { class: "muted", text: call.output_messages ? "The model asked for no tool." : "Not recorded." })]));
  const params = Object.entries(call.parameters);
  fill($("llm-parameters"), ...(params.length ? params.flatMap(([k, v]) => fact(k, Array.isArray(v) ? v.join(", ") : v))
    : fact("(none)", "no request parameters recorded")));
  $("tool-definitions").hidden = !call.tool_definitions;
  if (call.tool_definitions) $("tool-definitions-json").textContent = json(call.tool_definitions);
  contrail.llmContentRecorded = call.content.recorded;
}

getJSON(`/ai/llm-calls/${encodeURIComponent(traceId)}/${encodeURIComponent(spanId)}`)
  .then(render)
  .catch((error) => { showError($("llm-error"), error); $("llm-content").hidden = true; })
  .finally(() => { contrail.llmReady = true; });
