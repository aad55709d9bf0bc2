// Trace search: the form mirrors the URL query string (deep links), results as a scatter
// plot (time × duration, errors marked, click to open) and a sortable, paged table.
import { getJSON, listServices, listOperations, el, clear, fmtMs, fmtTime, fmtNum, showError, traceHref,
  plotTheme, plotText, plotlyReady, autoRefresh, contrail, fill, loadBottlenecks, hintBadges, fmtWindow } from "./api.js";
import { drawHeatmap, heatmapLegend } from "./heatmap.js";
import { createLiveTail } from "./livetail.js";

const $ = (id) => document.getElementById(id);
const form = $("search-form");
const FIELDS = ["service", "operation", "status", "min_duration", "max_duration", "services", "lookback", "start", "end", "sort", "limit"];
let cursors = [null];  // cursor of each page seen; index = page number
let pageIndex = 0;
let lastTraces = [];
const selected = new Set();

function toIsoUtc(local) { return local ? `${local.length === 16 ? local + ":00" : local}Z` : ""; }
function fromIsoUtc(value) {
  if (!value) return "";
  const date = /^\d+$/.test(value) ? new Date(Number(value) / 1e6) : new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString().slice(0, 19);
}

/** The API query for the form, and the page URL that mirrors it. */
function formQuery() {
  const data = new FormData(form);
  const query = {};
  for (const name of FIELDS) {
    const value = String(data.get(name) ?? "").trim();
    if (value) query[name] = value;
  }
  if (query.start) query.start = toIsoUtc(query.start);
  if (query.end) query.end = toIsoUtc(query.end);
  if (query.lookback) { delete query.start; delete query.end; }
  if (query.services) query.services = query.services.split(",").map((s) => s.trim()).filter(Boolean).join(",");
  const tags = String(data.get("tag") || "").split("\n").map((t) => t.trim()).filter(Boolean);
  if (tags.length) query.tag = tags;
  return query;
}

function pageUrl(query) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (Array.isArray(value)) value.forEach((v) => params.append(key, v)); else params.set(key, value);
  }
  if ($("auto-refresh").checked) params.set("refresh", "1");
  return `${window.location.pathname}${params.toString() ? "?" + params : ""}`;
}

function fillForm(params) {
  for (const name of FIELDS) {
    const input = form.elements[name];
    if (!input || !params.has(name)) continue;
    input.value = name === "start" || name === "end" ? fromIsoUtc(params.get(name)) : params.get(name);
  }
  if ((params.has("start") || params.has("end")) && !params.has("lookback")) form.elements.lookback.value = "";
  form.elements.tag.value = params.getAll("tag").join("\n");
  toggleRange();
}

function toggleRange() { $("range-fields").hidden = form.elements.lookback.value !== ""; }

async function loadServices() {
  try {
    const services = await listServices();
    const select = form.elements.service;
    const current = new URLSearchParams(window.location.search).get("service") || select.value;
    select.replaceChildren(el("option", { value: "", text: "All services" }),
      ...services.map((s) => el("option", { value: s.name, text: s.name })));
    select.value = current;
    await loadOperations(new URLSearchParams(window.location.search).get("operation") || "");
  } catch (error) {
    showError($("search-error"), error);
  }
}

async function loadOperations(keep) {
  const select = form.elements.operation;
  const service = form.elements.service.value;
  const operations = service ? await listOperations(service).catch(() => []) : [];
  select.replaceChildren(el("option", { value: "", text: "All operations" }), ...operations.map((op) => el("option", { value: op, text: op })));
  if (keep && (operations.includes(keep) || !service)) {
    if (!operations.includes(keep)) select.append(el("option", { value: keep, text: keep }));
    select.value = keep;
  }
}

// ----------------------------------------------------------------- results

async function drawScatter(traces) {
  const Plotly = await plotlyReady();
  const theme = plotTheme();
  const ok = traces.filter((t) => !t.error_count), bad = traces.filter((t) => t.error_count);
  const trace = (list, name, marker) => ({
    type: "scatter", mode: "markers", name, x: list.map((t) => t.start_time || new Date(t.start_ns / 1e6).toISOString()),
    y: list.map((t) => t.duration_ms), customdata: list.map((t) => t.trace_id),
    text: list.map((t) => `${plotText(t.root_service)} · ${plotText(t.root_operation)}<br>${t.span_count} spans`),
    hovertemplate: "%{text}<br>%{y:.1f} ms<extra></extra>", marker,
  });
  const data = [
    trace(ok, "ok", { color: "#4e79a7", size: 9, opacity: 0.8 }),
    trace(bad, "error", { color: "#d62728", size: 11, symbol: "x" }),
  ];
  // the legend sits in a top margin of its own, right-aligned, so it never covers a point
  const layout = { ...theme, height: 240, margin: { ...theme.margin, t: 30 }, showlegend: true,
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1, yanchor: "bottom" },
    xaxis: { ...theme.xaxis, type: "date" }, yaxis: { ...theme.yaxis, title: { text: "ms" }, rangemode: "tozero" } };
  const div = $("scatter");
  await Plotly.react(div, data, layout, { displayModeBar: false, responsive: true });
  if (!div.dataset.bound) {
    div.dataset.bound = "1";
    div.on("plotly_click", (event) => {
      const id = event.points?.[0]?.customdata;
      if (id) window.location.href = traceHref(id);
    });
  }
  contrail.scatterPoints = traces.length;
}

function renderTable(traces) {
  const body = $("results-body");
  clear(body);
  if (!traces.length) {
    body.append(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No traces match these filters." })));
    return;
  }
  for (const t of traces) {
    const box = el("input", { type: "checkbox", "aria-label": `Select trace ${t.trace_id} for comparison`, dataset: { traceId: t.trace_id } });
    box.checked = selected.has(t.trace_id);
    body.append(el("tr", { class: t.error_count ? "row-error" : "", dataset: { traceId: t.trace_id } },
      el("td", {}, box),
      el("td", {}, el("a", { href: traceHref(t.trace_id), class: "trace-link", text: fmtTime(t.start_time, t.start_ns) })),
      el("td", {}, el("strong", { text: t.root_service || "?" }), " ", el("span", { text: t.root_operation || "(missing root)" }),
        t.incomplete ? el("span", { class: "badge badge-warn", text: "incomplete" }) : null),
      el("td", { class: "num", text: fmtMs(t.duration_ms) }),
      el("td", { class: "num", text: fmtNum(t.span_count) }),
      el("td", {}, (t.services || []).join(", ")),
      el("td", { class: t.error_count ? "num text-err" : "num", text: fmtNum(t.error_count) }),
    ));
  }
}

function updateSortHeaders(sort) {
  for (const th of document.querySelectorAll("#results-table th[data-sort]")) {
    const [field, dir] = (sort || "start_desc").split("_");
    th.setAttribute("aria-sort", th.dataset.sort === field ? (dir === "asc" ? "ascending" : "descending") : "none");
  }
}

async function runSearch({ push = false, resetPaging = true } = {}) {
  const query = formQuery();
  if (resetPaging) { cursors = [null]; pageIndex = 0; }
  if (push) history.pushState(null, "", pageUrl(query));
  else history.replaceState(null, "", pageUrl(query));
  const apiQuery = { ...query };
  if (cursors[pageIndex]) apiQuery.cursor = cursors[pageIndex];
  showError($("search-error"), null);
  $("search-submit").disabled = true;
  if (resetPaging) loadHeatmap(query);  // in parallel with the search; paging does not change it
  try {
    const result = await getJSON("/traces", apiQuery);
    const traces = result.traces || [];
    lastTraces = traces;
    cursors[pageIndex + 1] = result.next_cursor || null;
    const total = result.total ?? traces.length;
    $("result-count").textContent = `${fmtNum(total)} trace${total === 1 ? "" : "s"} match`;
    const limit = Number(query.limit || 50);
    $("page-info").textContent = traces.length ? `${fmtNum(pageIndex * limit + 1)}–${fmtNum(pageIndex * limit + traces.length)} of ${fmtNum(total)}` : "";
    $("page-prev").disabled = pageIndex === 0;
    $("page-next").disabled = !result.next_cursor;
    renderTable(traces);
    updateSortHeaders(query.sort);
    await drawScatter(traces);
    tail.reset();
    contrail.searchResults = traces.length;
    contrail.searchTotal = total;
  } catch (error) {
    showError($("search-error"), error);
    contrail.searchError = error.message;
  } finally {
    $("search-submit").disabled = false;
  }
}

function updateCompareButton() {
  const button = $("compare-selected");
  button.disabled = selected.size !== 2;
  button.textContent = `Compare selected (${selected.size}/2)`;
}

// ----------------------------------------------------------------- latency heat map

let heatmapQuery = {};
let lastHeatmap = null;

/** The heat map follows the form's service, operation and time range; it counts traces by their root. */
async function loadHeatmap(query) {
  heatmapQuery = {};
  for (const name of ["service", "operation", "lookback", "start", "end"]) if (query[name]) heatmapQuery[name] = query[name];
  if (!heatmapQuery.lookback && !heatmapQuery.start && !heatmapQuery.end) heatmapQuery.lookback = "1h";
  const scope = [heatmapQuery.service, heatmapQuery.operation].filter(Boolean).join(" · ");
  $("heatmap-scope").textContent = scope ? `(traces starting at ${scope})` : "(all traces)";
  showError($("heatmap-error"), null);
  try {
    const data = await getJSON("/stats/heatmap", heatmapQuery);
    lastHeatmap = data;
    renderHeatmap(data);
  } catch (error) {
    showError($("heatmap-error"), error);
  }
}

function renderHeatmap(data) {
  drawHeatmap($("heatmap"), data, {
    onSelect: listSelection,
    emptyText: heatmapQuery.service ? "No traces start at this service/operation in this window." : "No traces in this window.",
  });
  fill($("heatmap-legend"), data.cells.length ? heatmapLegend(data.max_cell) : null);
  contrail.heatmapCells = data.cells.length;
}

let lastSelection = null;
async function listSelection(selection) {
  lastSelection = selection;
  const params = { start: selection.start_ns, end: selection.end_ns, min_duration: `${selection.min_ns}ns`,
    max_duration: `${selection.max_ns}ns`, service: heatmapQuery.service, operation: heatmapQuery.operation, limit: 100 };
  contrail.selectionReady = false;
  const panel = $("heatmap-selection");
  panel.hidden = false;
  try {
    const answer = await getJSON("/stats/heatmap/traces", params);
    const traces = answer.traces || [];
    const range = `${fmtTime(null, selection.start_ns).slice(0, 16)}–${fmtTime(null, selection.end_ns).slice(11, 16)} UTC, ` +
      `${fmtMs(selection.min_ms)}–${fmtMs(selection.max_ms)}`;
    $("selection-title").textContent = `${fmtNum(answer.total)}${answer.total_capped ? "+" : ""} trace${answer.total === 1 ? "" : "s"} in the selection (${range})` +
      (traces.length < answer.total ? `, ${fmtNum(traces.length)} shown` : "");
    const body = $("selection-body");
    fill(body, traces.length ? traces.map((t) => el("tr", { class: t.error_count ? "row-error" : "", dataset: { traceId: t.trace_id } },
      el("td", {}, el("a", { href: traceHref(t.trace_id), class: "trace-link", text: fmtTime(t.start_time, t.start_ns) })),
      el("td", {}, el("strong", { text: t.root_service || "?" }), " ", el("span", { text: t.root_operation || "" })),
      el("td", { class: "num", text: fmtMs(t.duration_ms) }),
      el("td", { class: "num", text: fmtNum(t.span_count) }),
      el("td", { class: t.error_count ? "num text-err" : "num", text: fmtNum(t.error_count) })))
      : el("tr", {}, el("td", { colspan: 5, class: "muted", text: "No stored traces here (tail sampling may have dropped them)." })));
    contrail.selectionIds = traces.map((t) => t.trace_id);
    contrail.selectionReady = true;
  } catch (error) {
    showError($("heatmap-error"), error);
  }
}

$("selection-clear").addEventListener("click", () => {
  $("heatmap-selection").hidden = true;
  lastSelection = null;
  if (lastHeatmap) renderHeatmap(lastHeatmap);
});
$("selection-apply").addEventListener("click", () => {
  if (!lastSelection) return;
  const iso = (ns) => new Date(ns / 1e6).toISOString().slice(0, 19);
  form.elements.lookback.value = "";
  form.elements.start.value = iso(lastSelection.start_ns);
  form.elements.end.value = iso(lastSelection.end_ns - 1e6);
  form.elements.min_duration.value = `${lastSelection.min_ns}ns`;
  form.elements.max_duration.value = `${lastSelection.max_ns}ns`;
  toggleRange();
  runSearch({ push: true });
});

// ----------------------------------------------------------------- live tail

/** The search filters the live tail applies (its own window replaces the time range). */
function tailFilters() {
  const query = formQuery();
  for (const name of ["lookback", "start", "end", "sort", "limit"]) delete query[name];
  return query;
}

const tail = createLiveTail({ body: $("tail-body"), status: $("tail-status"), button: $("tail-toggle"),
  errorBox: $("tail-error"), filters: tailFilters });

// ----------------------------------------------------------------- bottleneck hints

const HINTS_SHOWN = 3;
async function showHintSummary() {
  const box = $("hint-summary");
  let result;
  try {
    result = await loadBottlenecks();
  } catch (_) { box.hidden = true; return; }  // the search page works without hints
  const { hints, recentS, baselineS } = result;
  contrail.bottlenecks = hints.length;
  box.hidden = !hints.length;
  if (!hints.length) { box.replaceChildren(); return; }
  const servicesHref = (h) => `/services?service=${encodeURIComponent(h.service)}&operation=${encodeURIComponent(h.operation)}`;
  fill(box,
    el("strong", { text: `${fmtNum(hints.length)} operation${hints.length === 1 ? "" : "s"} off baseline` }),
    el("span", { class: "muted", text: `(last ${fmtWindow(recentS)} vs the ${fmtWindow(baselineS)} before):` }),
    ...hints.slice(0, HINTS_SHOWN).map((h) => el("span", { class: "hint", dataset: { service: h.service, operation: h.operation } },
      el("a", { href: servicesHref(h), text: `${h.service} · ${h.operation}` }), ...hintBadges(h))),
    hints.length > HINTS_SHOWN ? el("a", { href: "/services", text: `+${fmtNum(hints.length - HINTS_SHOWN)} more on Services` }) : null,
  );
}

// ----------------------------------------------------------------- wiring

form.addEventListener("submit", (event) => { event.preventDefault(); runSearch({ push: true }); });
form.addEventListener("reset", () => setTimeout(() => { toggleRange(); runSearch({ push: true }); }, 0));
form.elements.lookback.addEventListener("change", toggleRange);
form.elements.service.addEventListener("change", () => loadOperations(""));
$("page-next").addEventListener("click", () => { pageIndex += 1; runSearch({ resetPaging: false }); });
$("page-prev").addEventListener("click", () => { pageIndex = Math.max(0, pageIndex - 1); runSearch({ resetPaging: false }); });
$("results-table").querySelector("thead").addEventListener("click", (event) => {
  const th = event.target.closest("th[data-sort]");
  if (!th) return;
  const [field, dir] = (form.elements.sort.value || "start_desc").split("_");
  form.elements.sort.value = `${th.dataset.sort}_${field === th.dataset.sort && dir === "desc" ? "asc" : "desc"}`;
  runSearch({ push: true });
});
$("results-body").addEventListener("change", (event) => {
  const id = event.target.dataset.traceId;
  if (!id) return;
  if (event.target.checked) {
    selected.add(id);
    while (selected.size > 2) selected.delete(selected.values().next().value);
  } else selected.delete(id);
  for (const box of $("results-body").querySelectorAll("input[type=checkbox]")) box.checked = selected.has(box.dataset.traceId);
  updateCompareButton();
});
$("compare-selected").addEventListener("click", () => {
  const [a, b] = [...selected];
  const first = lastTraces.find((t) => t.trace_id === a), second = lastTraces.find((t) => t.trace_id === b);
  const [older, newer] = first && second && first.start_ns > second.start_ns ? [b, a] : [a, b];
  window.location.href = `/compare?a=${encodeURIComponent(older)}&b=${encodeURIComponent(newer)}`;
});
window.addEventListener("popstate", () => { fillForm(new URLSearchParams(window.location.search)); runSearch(); });
window.addEventListener("contrail:theme", () => { if (lastTraces.length) drawScatter(lastTraces); });
let resizeTimer = null;
window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => lastHeatmap && renderHeatmap(lastHeatmap), 150); });

fillForm(new URLSearchParams(window.location.search));
if (new URLSearchParams(window.location.search).get("live") === "1") tail.start();
autoRefresh($("auto-refresh"), () => { runSearch({ resetPaging: false }); showHintSummary(); });
loadServices().then(() => runSearch());
showHintSummary();
