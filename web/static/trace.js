// The trace page: header summary, warnings, waterfall / flame graph / statistics tabs,
// the span detail panel, search within the trace and "Copy for AI".
import { getJSON, getText, el, clear, fill, fmtMs, fmtTime, fmtNum, showError, traceHref, contrail } from "./api.js";
import { buildModel, operationStats } from "./tracemodel.js";
import { createWaterfall, renderTicks } from "./waterfall.js";
import { createFlameGraph } from "./flamegraph.js";
import { createCodeFlame, renderTopFunctions } from "./codeflame.js";

const page = document.querySelector(".trace-page");
const traceId = page.dataset.traceId;
const $ = (id) => document.getElementById(id);
const startedAt = performance.now();

let model = null, waterfall = null, flame = null;
let backlinksFrom = [];  // spans of other traces that link into this one
let profiles = [];  // sampling profiles of this trace's spans (tracing.profile, slow-span mode)
let codeFlame = null;

function summaryItem(label, value, cls = "") {
  return [el("dt", { text: label }), el("dd", { class: cls, text: value })];
}

function renderHeader(trace) {
  const s = trace.summary || {};
  fill($("trace-title"), "Trace ", el("code", { text: trace.trace_id }),
    s.root_service ? el("span", { class: "muted", text: `  ${s.root_service} · ${s.root_operation || ""}` }) : null);
  document.title = `${s.root_operation || "Trace"} ${trace.trace_id.slice(0, 8)} · Contrail`;
  fill($("trace-summary"),
    ...summaryItem("Started", fmtTime(s.start_time, s.start_ns)),
    ...summaryItem("Duration", fmtMs(s.duration_ms ?? model.totalMs)),
    ...summaryItem("Spans", fmtNum(s.span_count ?? model.nodes.length)),
    ...summaryItem("Services", (s.services || []).join(", ") || "–"),
    ...summaryItem("Errors", fmtNum(s.error_count ?? 0), s.error_count ? "text-err" : ""),
    ...summaryItem("Depth", fmtNum(model.maxDepth + 1)),
    ...(s.incomplete ? summaryItem("Complete", "no: some parents never arrived", "text-warn") : []),
    ...(s.clock_skew_ms ? summaryItem("Clock skew", fmtMs(s.clock_skew_ms), "text-warn") : []),
  );
  const list = $("trace-warnings");
  const warnings = trace.warnings || [];
  const item = (warning) => {
    const node = warning.span_id ? model.byId.get(warning.span_id) : null;
    return el("li", { class: "warning" }, el("span", { class: "badge badge-warn", text: String(warning.code || "warning").replace(/_/g, " ") }),
      " ", warning.message || "",
      node ? [" ", el("button", { type: "button", class: "btn btn-small", text: "show span", onclick: () => selectSpan(node, { reveal: true }) })] : null);
  };
  // a few warnings are listed; many (a skewed host flags every span it sent) fold behind a summary
  const shown = warnings.length > WARNINGS_SHOWN + 1 ? warnings.slice(0, WARNINGS_SHOWN) : warnings;
  const rest = warnings.slice(shown.length);
  let more = null;
  if (rest.length) {
    const counts = new Map();
    for (const w of rest) counts.set(w.code, (counts.get(w.code) || 0) + 1);
    const restList = el("ul", { class: "warnings" });
    more = el("li", {}, el("details", { class: "more-warnings" },
      el("summary", { text: counts.size === 1
        ? `${fmtNum(rest.length)} more ${String([...counts.keys()][0]).replace(/_/g, " ")} warnings`
        : `${fmtNum(rest.length)} more warnings: ` + [...counts].map(([code, n]) => `${fmtNum(n)} ${String(code).replace(/_/g, " ")}`).join(", ") }),
      restList));
    more.querySelector("details").addEventListener("toggle", () => {  // built on first open: there can be thousands
      if (!restList.childElementCount) fill(restList, rest.map(item));
    });
  }
  fill(list, shown.map(item), more);
}
const WARNINGS_SHOWN = 3;

// ----------------------------------------------------------------- span detail

function kvTable(caption, object) {
  const entries = Object.entries(object || {}).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return null;
  return el("table", { class: "kv" }, el("caption", { text: caption }),
    el("tbody", {}, entries.map(([k, v]) => el("tr", {}, el("th", { scope: "row", text: k }),
      el("td", {}, el("span", { class: "kv-value", text: typeof v === "string" ? v : JSON.stringify(v) }))))));
}

function section(title, ...content) {
  const body = content.flat().filter(Boolean);
  return body.length ? el("section", { class: "detail-section" }, el("h3", { text: title }), ...body) : null;
}

const LLM_OPERATIONS = new Set(["chat", "text_completion", "generate_content", "embeddings", "completion"]);

/** Links from an AI span to the LLM call viewer and to its session and user pages (null for other spans). */
function aiLinks(s) {
  const a = s.attributes || {};
  const llm = a["gen_ai.usage.input_tokens"] !== undefined || a["gen_ai.usage.output_tokens"] !== undefined
    || LLM_OPERATIONS.has(a["gen_ai.operation.name"]) || a["openinference.span.kind"] === "LLM";
  const session = a["session.id"], user = a["user.id"];
  if (!llm && !session && !user) return null;
  const sep = (items) => items.flatMap((item, i) => (i ? [" · ", item] : [item]));
  return el("p", { class: "ai-links" }, ...sep([
    llm ? el("a", { href: `/ai/llm/${traceId}/${s.span_id}`, id: "open-llm-call", text: "Open in the LLM call viewer" }) : null,
    session ? el("a", { href: `/ai/sessions/${encodeURIComponent(session)}`, text: `Session ${session}` }) : null,
    user ? el("a", { href: `/ai/users/${encodeURIComponent(user)}`, text: `User ${user}` }) : null,
  ].filter(Boolean)));
}

function renderDetail(node) {
  const s = node.span;
  const panel = $("span-detail");
  panel.hidden = false;
  $("detail-title").textContent = `${s.service} · ${s.name}`;
  const facts = el("dl", { class: "facts" },
    ...summaryItem("Duration", fmtMs(node.durationMs)),
    ...summaryItem("Self time", fmtMs(Number(s.self_time_ms))),
    ...summaryItem("Starts at", `+${fmtMs(node.startMs)}`),
    ...(node.waitMs ? summaryItem("Queue wait", fmtMs(node.waitMs)) : []),
    ...summaryItem("Kind", s.kind || "–"),
    ...summaryItem("Status", (s.status || "unset") + (s.status_message ? `: ${s.status_message}` : ""), s.status === "error" ? "text-err" : ""),
    ...summaryItem("Critical path", s.critical_path ? "yes" : "no", s.critical_path ? "text-crit" : ""),
    ...summaryItem("Span id", s.span_id),
  );
  const parent = node.parent
    ? el("p", {}, "Parent: ", el("a", { href: traceHref(traceId, node.parent.id), "data-span": node.parent.id, text: `${node.parent.span.service} · ${node.parent.span.name}` }))
    : s.parent_span_id ? el("p", { class: "text-warn", text: `Parent ${s.parent_span_id} was never received.` }) : null;
  const ai = aiLinks(s);
  const warnings = node.warnings.map((w) => el("p", { class: "text-warn" }, el("span", { class: "badge badge-warn", text: w.code }), " ", w.message || ""));

  const exceptions = [];
  const events = (s.events || []).map((event) => {
    const attrs = event.attributes || {};
    const offset = event.time_ns ? (Number(event.time_ns) - model.baseNs) / 1e6 : null;
    if (event.name === "exception") {
      exceptions.push(el("div", { class: "exception" },
        el("p", { class: "text-err" }, el("strong", { text: attrs["exception.type"] || "Exception" }),
          attrs["exception.message"] ? `: ${attrs["exception.message"]}` : null),
        attrs["exception.stacktrace"] ? el("pre", { class: "stack", text: attrs["exception.stacktrace"] }) : null));
    }
    return el("li", {}, el("span", { class: "muted", text: offset === null ? "" : `+${fmtMs(offset)} ` }), el("strong", { text: event.name || "(unnamed event)" }),
      Object.keys(attrs).length ? kvTable("attributes", attrs) : null);
  });

  const links = (s.links || []).map((link) => {
    const linkTrace = String(link.trace_id || ""), linkSpan = link.span_id || null;
    const local = linkTrace === traceId && linkSpan && model.byId.get(linkSpan);
    const text = local ? `${local.span.service} · ${local.span.name} (this trace)`
      : linkTrace === traceId ? "this trace"
      : `trace ${linkTrace.slice(0, 12)}…${linkSpan ? ` span ${linkSpan}` : " (the whole trace)"}`;
    return el("li", {}, el("a", { href: traceHref(linkTrace, linkSpan), "data-span": local ? linkSpan : null, text }),
    Object.keys(link.attributes || {}).length ? kvTable("link attributes", link.attributes) : null);
  });
  const backlinks = model.nodes.filter((other) => (other.span.links || []).some((l) => l.span_id === s.span_id && l.trace_id === traceId))
    .map((other) => el("li", {}, el("a", { href: traceHref(traceId, other.id), "data-span": other.id, text: `${other.span.service} · ${other.span.name}` })));
  for (const back of backlinksFrom.filter((b) => !b.linked_span_id || b.linked_span_id === s.span_id)) {
    backlinks.push(el("li", {}, el("a", { href: traceHref(back.trace_id, back.span_id),
      text: `${back.service || "?"} · ${back.name || "?"} in trace ${String(back.trace_id).slice(0, 12)}…${back.linked_span_id ? "" : " (links the trace)"}` })));
  }

  const body = $("detail-body");
  fill(body, [facts, parent, ai, ...warnings,
    section("Exception", exceptions),
    section("Attributes", kvTable("span attributes", s.attributes) || el("p", { class: "muted", text: "none" })),
    section("Events", events.length ? el("ol", { class: "events" }, events) : null),
    section("Links", links.length ? el("ul", { class: "links" }, links) : null),
    section("Linked from", backlinks.length ? el("ul", { class: "links" }, backlinks) : null),
    section("Code profile", profiles.map((p, index) => p.span_id !== s.span_id ? null : el("p", { class: "profile-link" },
      el("button", { type: "button", class: "btn btn-small", text: `Flame graph: ${p.name}`, onclick: () => showProfile(index) }),
      p.functions?.length ? [" hottest: ", el("code", { text: p.functions[0].function })] : null))),
    section("Resource", kvTable("resource attributes", s.resource)),
  ]);
  contrail.selectedSpanId = s.span_id;
}

function selectSpan(node, { reveal = false } = {}) {
  if (reveal && waterfall) waterfall.select(node);
  flame?.select(node);
  renderDetail(node);
  const url = new URL(window.location.href);
  url.searchParams.set("span", node.id);
  history.replaceState(null, "", url);
}

$("detail-body").addEventListener("click", (event) => {
  const link = event.target.closest("a[data-span]");
  if (!link) return;
  const node = model.byId.get(link.dataset.span);
  if (node) { event.preventDefault(); selectSpan(node, { reveal: true }); }
});
$("detail-close").addEventListener("click", () => { $("span-detail").hidden = true; $("waterfall").focus(); });

// ----------------------------------------------------------------- tabs

const tabs = ["waterfall", "flame", "stats", "profile"];
function showTab(name) {
  for (const tab of tabs) {
    const button = $(`tab-${tab}`);
    const active = tab === name;
    button.setAttribute("aria-selected", String(active));
    button.tabIndex = active ? 0 : -1;
    $(`view-${tab}`).hidden = !active;
  }
  $("wf-legend").hidden = name !== "waterfall";
  if (name === "flame") {
    if (!flame) {
      flame = createFlameGraph($("flame"), $("flame-canvas"), model, {
        onSelect: (n) => selectSpan(n, { reveal: true }),
        announce: (text, node) => { $("flame-focus").textContent = `Focused: ${text}`; contrail.flameFocus = node.id; },
      });
      const current = contrail.selectedSpanId && model.byId.get(contrail.selectedSpanId);
      if (current) flame.select(current);
    }
    flame.draw();
  }
  if (name === "stats") renderStats();
  if (name === "profile") renderProfile();
  if (name === "waterfall") waterfall?.render();
}
for (const tab of tabs) {
  const button = $(`tab-${tab}`);
  button.addEventListener("click", () => showTab(tab));
  button.addEventListener("keydown", (event) => {
    const step = event.key === "ArrowRight" ? 1 : event.key === "ArrowLeft" ? -1 : 0;
    if (!step) return;
    const shown = tabs.filter((t) => !$(`tab-${t}`).hidden);
    const next = shown[(shown.indexOf(tab) + step + shown.length) % shown.length];
    showTab(next); $(`tab-${next}`).focus(); event.preventDefault();
  });
}
$("flame-reset").addEventListener("click", () => flame?.reset());

// ----------------------------------------------------------------- code profiles

function profileLabel(p) {
  const node = model.byId.get(p.span_id);
  const where = node ? `${node.span.service} · ${node.span.name}` : p.operation || p.span_id;
  return `${where} — ${p.name}${p.mode === "slow" ? " (slow span)" : ""}, ${fmtNum(p.samples)} samples`;
}

function renderProfile() {
  const index = Number($("profile-select").value || 0);
  const p = profiles[index];
  if (!p) return;
  $("profile-summary").textContent = `${fmtMs(p.duration_ms)} profiled every ${fmtMs(p.interval_ms)}` +
    (p.dropped ? `; ${fmtNum(p.dropped)} samples left out (profile size bound)` : "");
  codeFlame = createCodeFlame($("code-flame"), p.stacks, {
    onFocus: (node) => { contrail.codeFlameZoom = node.name; },
  });
  renderTopFunctions($("profile-functions").querySelector("tbody"), p.functions);
  contrail.profileShown = p.span_id;
}

function showProfile(index) {
  $("profile-select").value = String(index);
  showTab("profile");
  $("tab-profile").focus();
}

$("profile-select").addEventListener("change", renderProfile);
$("profile-reset").addEventListener("click", () => codeFlame?.reset());

async function loadProfiles() {
  try {
    profiles = (await getJSON(`/traces/${traceId}/profiles`)).profiles || [];
  } catch (_) { profiles = []; }
  fill($("profile-select"), profiles.map((p, index) => el("option", { value: String(index), text: profileLabel(p) })));
  $("tab-profile").hidden = profiles.length === 0;
  if (profiles.length && contrail.selectedSpanId) renderDetail(model.byId.get(contrail.selectedSpanId));
  if (profiles.length && new URLSearchParams(window.location.search).get("view") === "profile") {
    const wanted = profiles.findIndex((p) => p.span_id === contrail.selectedSpanId);
    showProfile(Math.max(0, wanted));
  }
  contrail.profilesReady = true;
}

// ----------------------------------------------------------------- statistics view

let statsSort = { key: "self", dir: -1 };
function renderStats() {
  const rows = operationStats(model);
  const { key, dir } = statsSort;
  rows.sort((a, b) => (typeof a[key] === "string" ? a[key].localeCompare(b[key]) : a[key] - b[key]) * dir);
  const tbody = $("stats-table").querySelector("tbody");
  tbody.replaceChildren(...rows.map((r) => el("tr", {},
    el("td", { text: r.service }), el("td", { text: r.operation }), el("td", { class: "num", text: fmtNum(r.count) }),
    el("td", { class: "num", text: fmtNum(r.total, 2) }), el("td", { class: "num", text: fmtNum(r.self, 2) }),
    el("td", { class: "num", text: fmtNum(r.avg, 2) }), el("td", { class: "num", text: fmtNum(r.max, 2) }),
    el("td", { class: r.errors ? "num text-err" : "num", text: fmtNum(r.errors) }))));
  for (const th of $("stats-table").querySelectorAll("th[data-key]")) {
    th.setAttribute("aria-sort", th.dataset.key === key ? (dir > 0 ? "ascending" : "descending") : "none");
  }
}
$("stats-table").querySelector("thead").addEventListener("click", (event) => {
  const th = event.target.closest("th[data-key]");
  if (!th) return;
  statsSort = { key: th.dataset.key, dir: statsSort.key === th.dataset.key ? -statsSort.dir : (["service", "operation"].includes(th.dataset.key) ? 1 : -1) };
  renderStats();
});

// ----------------------------------------------------------------- find, expand, copy

let findResults = [], findPos = -1;
$("trace-find").addEventListener("input", (event) => {
  findResults = waterfall.find(event.target.value);
  findPos = -1;
  $("find-count").textContent = event.target.value ? `${findResults.length} match${findResults.length === 1 ? "" : "es"}` : "";
});
$("trace-find").addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || !findResults.length) return;
  event.preventDefault();
  findPos = (findPos + (event.shiftKey ? -1 : 1) + findResults.length) % findResults.length;
  selectSpan(findResults[findPos], { reveal: true });
  $("find-count").textContent = `${findPos + 1} of ${findResults.length}`;
});
$("expand-all").addEventListener("click", () => waterfall.expandAll());
$("collapse-all").addEventListener("click", () => waterfall.collapseAll());
$("critical-only").addEventListener("change", (event) => waterfall.setCriticalOnly(event.target.checked));

async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch (_) {
    const area = el("textarea", { style: "position:fixed;left:-9999px", "aria-hidden": "true" });
    area.value = text;
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok;
  }
}
$("copy-ai").addEventListener("click", async () => {
  const status = $("copy-status");
  status.textContent = "Copying…";
  try {
    const text = await getText(`/traces/${traceId}/export`, { format: "text", download: "0" });
    contrail.copiedText = text;
    status.textContent = (await copyText(text)) ? `Copied ${fmtNum(text.length)} characters for AI.` : "Copy failed: the browser refused clipboard access.";
  } catch (error) {
    status.textContent = `Copy failed: ${error.message}`;
  }
});

// A plain link would download without the API token (and save a 401 error as the "trace" when one is
// configured): fetch through the API client, which sends the token, and save what it returns.
$("export-json").addEventListener("click", async (event) => {
  event.preventDefault();
  const status = $("copy-status");
  try {
    const body = await getText(`/traces/${traceId}/export`, { format: "json", download: "0" });
    const url = URL.createObjectURL(new Blob([body], { type: "application/json" }));
    const link = el("a", { href: url, download: `trace-${traceId}.json`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
  } catch (error) {
    status.textContent = `Export failed: ${error.message}`;
  }
});

// ----------------------------------------------------------------- load

async function load() {
  let trace;
  try {
    trace = await getJSON(`/traces/${traceId}`);
  } catch (error) {
    showError($("trace-error"), error.status === 404 ? { message: `No trace ${traceId} is stored (it may still be arriving, or was removed by retention).` } : error);
    contrail.traceLoadError = error.message;
    // Nothing to show, copy, export or compare: leave only the message (and the way back to search).
    for (const id of ["copy-ai", "compare-link", "export-json"]) $(id).hidden = true;
    document.querySelector(".trace-body").hidden = true;
    return;
  }
  contrail.traceFetchMs = performance.now() - startedAt;
  const t0 = performance.now();
  model = buildModel(trace);
  renderHeader(trace);
  renderTicks($("wf-ticks"), model.totalMs);
  waterfall = createWaterfall($("waterfall"), model, { onSelect: (node) => selectSpan(node) });
  waterfall.onCriticalOnlyChange = (on) => { $("critical-only").checked = on; };
  contrail.waterfallBuildMs = performance.now() - t0;
  contrail.spanCount = model.nodes.length;
  contrail.waterfall = waterfall;
  const wanted = new URLSearchParams(window.location.search).get("span");
  if (wanted && model.byId.has(wanted)) selectSpan(model.byId.get(wanted), { reveal: true });
  contrail.traceReady = true;
  await loadProfiles();
  try {
    backlinksFrom = (await getJSON(`/traces/${traceId}/backlinks`)).linked_from || [];
    if (backlinksFrom.length && contrail.selectedSpanId) renderDetail(model.byId.get(contrail.selectedSpanId));
  } catch (_) { backlinksFrom = []; }
}

load();
