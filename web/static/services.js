// Services page: RED charts per service/operation (rate, errors, p50/p95/p99 over time)
// and the live service map from the collector's dependency edges.
import { getJSON, getText, listServices, listOperations, el, fill, fmtMs, fmtNum, fmtPct, showError, plotTheme, plotText, plotlyReady,
  autoRefresh, contrail, loadBottlenecks, hintBadges, fmtWindow } from "./api.js";
import { drawServiceMap } from "./servicemap.js";
import { drawHeatmap, heatmapLegend } from "./heatmap.js";
import { createCodeFlame, renderTopFunctions } from "./codeflame.js";

const $ = (id) => document.getElementById(id);
const form = $("services-form");
const MAX_LINES = 8;
let knownServices = [];

function readForm() {
  const data = new FormData(form);
  const out = {};
  for (const key of ["service", "operation", "lookback", "step", "group_by", "top"]) { const v = String(data.get(key) || ""); if (v) out[key] = v; }
  return out;
}

function syncUrl(query) {
  const params = new URLSearchParams(query);
  if ($("auto-refresh").checked) params.set("refresh", "1");
  history.replaceState(null, "", `/services${params.toString() ? "?" + params : ""}`);
}

async function fillOperations(keep) {
  const service = form.elements.service.value;
  const ops = service ? await listOperations(service).catch(() => []) : [];
  form.elements.operation.replaceChildren(el("option", { value: "", text: "All operations" }), ...ops.map((o) => el("option", { value: o, text: o })));
  if (keep && ops.includes(keep)) form.elements.operation.value = keep;
}

let statsWindow = null;  // [start, end] of the statistics window, as Date strings for the x axis
const CHARTS = ["chart-rate", "chart-errors", "chart-latency"];
const COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#ff9da7", "#86bcb6", "#8cd17d", "#e15759", "#bab0ac"];
const OTHERS_COLOUR = "#8c8c8c";
const hidden = new Set();  // series keys the user switched off in the legend
let syncing = false;

/** The series to draw: the `top` busiest, then everything else summed into one "others" series. */
export function topSeries(series, top) {
  const total = (s) => s.points.reduce((n, p) => n + p.count, 0);
  const sorted = series.slice().sort((a, b) => total(b) - total(a));
  const shown = sorted.slice(0, top).map((s, i) => ({ ...s, key: `${s.service}\u0000${s.operation}`, colour: COLOURS[i % COLOURS.length],
    label: s.operation ? `${s.service} · ${s.operation}` : s.service, total: total(s) }));
  const rest = sorted.slice(top);
  if (rest.length) {
    const byTime = new Map();
    for (const s of rest) for (const p of s.points) {
      const point = byTime.get(p.time) || { time: p.time, count: 0, error_count: 0 };
      point.count += p.count; point.error_count += p.error_count;
      byTime.set(p.time, point);
    }
    shown.push({ key: "others", others: true, colour: OTHERS_COLOUR, label: `others (${rest.length})`, total: rest.reduce((n, s) => n + total(s), 0),
      points: [...byTime.values()].sort((a, b) => (a.time < b.time ? -1 : 1)) });
  }
  return shown;
}

function emptyState(div, text) {
  if (window.Plotly) window.Plotly.purge(div);
  div.replaceChildren(el("p", { class: "muted chart-empty", text }));
}

function layoutFor(yTitle, extra = {}) {
  const theme = plotTheme();
  return { ...theme, height: 240, showlegend: false, hovermode: "x unified", margin: { ...theme.margin, t: 10 },
    xaxis: { ...theme.xaxis, type: "date", ...(statsWindow ? { range: statsWindow } : {}) },
    yaxis: { ...theme.yaxis, title: { text: yTitle }, rangemode: "tozero" }, ...extra };
}

/** Hovering one chart shows the same moment in the other two. */
function shareHover(Plotly) {
  for (const id of CHARTS) {
    const div = $(id);
    if (div.dataset.hoverShared) continue;
    div.dataset.hoverShared = "1";
    div.on("plotly_hover", (event) => {
      if (syncing) return;
      const x = event.points?.[0]?.x;
      if (x === undefined) return;
      // Plotly reports a date axis position as "YYYY-MM-DD HH:MM[:SS]" in UTC; Fx.hover wants milliseconds
      const xval = typeof x === "string" ? Date.parse(x.replace(" ", "T") + (/[zZ]|[+-]\d\d:?\d\d$/.test(x) ? "" : "Z")) : x;
      if (Number.isNaN(xval)) return;
      syncing = true;
      try {
        for (const other of CHARTS) if (other !== id && $(other).data?.length) Plotly.Fx.hover($(other), { xval }, "xy");
        contrail.sharedHover = (contrail.sharedHover || 0) + 1;
      } finally { syncing = false; }
    });
    div.on("plotly_unhover", () => {
      if (syncing) return;
      syncing = true;
      try { for (const other of CHARTS) if (other !== id && $(other).data?.length) Plotly.Fx.unhover($(other)); } finally { syncing = false; }
    });
  }
}

function renderLegend(shown, Plotly) {
  const list = $("chart-legend");
  list.replaceChildren(...shown.map((s) => {
    const swatch = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    swatch.setAttribute("width", "14"); swatch.setAttribute("height", "6"); swatch.setAttribute("aria-hidden", "true");
    const bar = document.createElementNS("http://www.w3.org/2000/svg", "rect");
    for (const [k, v] of Object.entries({ width: 14, height: 6, rx: 2, fill: s.colour })) bar.setAttribute(k, v);
    swatch.append(bar);
    const button = el("button", { type: "button", "aria-pressed": String(!hidden.has(s.key)), dataset: { key: s.key },
      title: hidden.has(s.key) ? "Show in the charts" : "Hide from the charts" },
      swatch, el("span", { text: s.label }), el("span", { class: "legend-count", text: fmtNum(s.total) }));
    button.addEventListener("click", () => {
      if (hidden.has(s.key)) hidden.delete(s.key); else hidden.add(s.key);
      button.setAttribute("aria-pressed", String(!hidden.has(s.key)));
      for (const id of CHARTS) {
        const div = $(id);
        if (!div.data?.length) continue;
        const indexes = div.data.map((t, i) => (t.meta === s.key ? i : -1)).filter((i) => i >= 0);
        if (indexes.length) Plotly.restyle(div, { visible: hidden.has(s.key) ? "legendonly" : true }, indexes);
      }
      contrail.hiddenSeries = [...hidden];
    });
    return el("li", {}, button);
  }));
  if (!shown.length) list.replaceChildren(el("li", { class: "muted small", text: "No series in this window." }));
}

async function drawCharts(stats) {
  const Plotly = await plotlyReady();
  const step = stats.step_s || 60;
  statsWindow = stats.start_ns && stats.end_ns
    ? [new Date(stats.start_ns / 1e6).toISOString(), new Date(stats.end_ns / 1e6).toISOString()] : null;
  const top = Number(form.elements.top.value || MAX_LINES);
  const shown = topSeries(stats.series || [], top);
  renderLegend(shown, Plotly);
  contrail.chartSeries = shown.length;
  contrail.chartLabels = shown.map((s) => s.label);
  if (!shown.length) {
    const text = form.elements.service.value
      ? "No requests for this selection in this window: widen the lookback or pick another operation."
      : "No requests in this window: widen the lookback, or check that collectors are running (status bar).";
    for (const id of CHARTS) emptyState($(id), text);
    return;
  }
  for (const id of CHARTS) $(id).querySelector(".chart-empty")?.remove();
  const x = (s) => s.points.map((p) => p.time);
  const visible = (s) => (hidden.has(s.key) ? "legendonly" : true);
  const hover = (s) => `${plotText(s.label)}: %{y:.3~f}<extra></extra>`;
  await Plotly.react($("chart-rate"), shown.map((s) => ({ type: "scatter", mode: "lines", name: plotText(s.label), meta: s.key, visible: visible(s),
    line: { color: s.colour, width: s.others ? 1.5 : 2, dash: s.others ? "dot" : "solid" }, x: x(s), y: s.points.map((p) => p.count / step), hovertemplate: hover(s) })),
  layoutFor("req/s"), { displayModeBar: false, responsive: true });
  await Plotly.react($("chart-errors"), shown.map((s) => ({ type: "bar", name: plotText(s.label), meta: s.key, visible: visible(s),
    marker: { color: s.colour }, x: x(s), y: s.points.map((p) => p.error_count), hovertemplate: hover(s) })),
  layoutFor("errors", { barmode: "stack" }), { displayModeBar: false, responsive: true });
  const withLatency = shown.filter((s) => !s.others);  // percentiles of different operations do not add up
  const detailed = withLatency.length <= 2;
  const latency = [];
  for (const s of withLatency) {
    for (const [key, dash] of detailed ? [["p50_ms", "dot"], ["p95_ms", "solid"], ["p99_ms", "dash"]] : [["p95_ms", "solid"]]) {
      latency.push({ type: "scatter", mode: "lines", name: `${plotText(s.label)} ${key.slice(0, 3)}`, meta: s.key, visible: visible(s),
        line: { color: s.colour, dash, width: 2 }, x: x(s), y: s.points.map((p) => p[key]),
        hovertemplate: `${plotText(s.label)} ${key.slice(0, 3)}: %{y:.1f} ms<extra></extra>` });
    }
  }
  $("latency-title").textContent = detailed ? "Latency p50 / p95 / p99 (ms)" : "Latency p95 (ms)";
  await Plotly.react($("chart-latency"), latency, layoutFor(detailed ? "ms (p50 · p95 · p99)" : "ms (p95)"), { displayModeBar: false, responsive: true });
  shareHover(Plotly);
}

// ----------------------------------------------------------------- per-operation heat map

async function drawOperationHeatmap(query) {
  const panel = $("op-heatmap-panel");
  panel.hidden = !query.service;
  if (!query.service) return;
  const params = { scope: "span", service: query.service, operation: query.operation, lookback: query.lookback || "1h" };
  $("op-heatmap-scope").textContent = `(${[query.service, query.operation || "all operations"].join(" · ")})`;
  $("op-heatmap-selection").hidden = true;
  try {
    const data = await getJSON("/stats/heatmap", params);
    drawHeatmap($("op-heatmap"), data, {
      emptyText: "No spans of this selection in this window.",
      onSelect: (sel) => {
        const box = $("op-heatmap-selection");
        const search = new URLSearchParams({ service: query.service, start: new Date(sel.start_ns / 1e6).toISOString().slice(0, 19) + "Z",
          end: new Date(sel.end_ns / 1e6 - 1).toISOString().slice(0, 19) + "Z" });
        if (query.operation) search.set("operation", query.operation);
        if (sel.min_ns > 0) search.set("min_duration", `${sel.min_ns}ns`);  // a trace lasts at least as long as its spans
        fill(box, `${fmtNum(sel.count)} span${sel.count === 1 ? "" : "s"} of ${fmtMs(sel.min_ms)}–${fmtMs(sel.max_ms)} selected (${fmtNum(sel.errors)} failed). `,
          el("a", { href: `/?${search}`, text: "Find traces that started then, hold this operation and last at least as long" }));
        box.hidden = false;
      },
    });
    fill($("op-heatmap-legend"), data.cells.length ? heatmapLegend(data.max_cell) : null);
    contrail.opHeatmapCells = data.cells.length;
  } catch (error) {
    showError($("services-error"), error);
  }
}

// System metrics of the chosen service's processes (tracer.system_metrics): gauges per minute (hourly for a
// week), the mean over its processes' exported values and the highest.
const SYSTEM = [["process.cpu.utilization", "chart-cpu", 100, "%"], ["process.memory.rss", "chart-rss", 1e-6, "MB"],
  ["process.threads", "chart-threads", 1, "threads"], ["process.open_file_descriptors", "chart-threads", 1, "open files"]];

/** A system-metrics chart: a few series (mean and max of one process metric), so a legend of its own. */
function systemChart(Plotly, div, traces) {
  const layout = layoutFor("", { showlegend: true, legend: { orientation: "h", y: -0.25, font: { size: 10 } } });
  return Plotly.react(div, traces, layout, { displayModeBar: false, responsive: true });
}

async function drawSystem(query) {
  const service = query.service;
  const empty = $("system-empty");
  if (!service) {
    $("system-charts").hidden = true;
    empty.hidden = false;
    empty.textContent = "Pick a service to see its processes' CPU, memory, threads and open files.";
    contrail.systemMetrics = null;
    return;
  }
  const step = query.step || (query.lookback === "7d" ? "1h" : "1m");
  const answers = await Promise.allSettled(SYSTEM.map(([name]) =>
    getJSON(`/metrics/${encodeURIComponent(name)}`, { service, lookback: query.lookback || "1h", step })));
  const Plotly = await plotlyReady();
  const byChart = new Map();
  let points = 0;
  answers.forEach((answer, i) => {
    const [name, chart, scale, label] = SYSTEM[i];
    const traces = byChart.get(chart) || [];
    byChart.set(chart, traces);
    if (answer.status !== "fulfilled") return;
    const pts = answer.value.points || [];
    points += pts.length;
    if (!pts.length) return;
    const x = pts.map((p) => p.time);
    traces.push({ type: "scatter", mode: "lines+markers", name: `${label} (mean)`, x, y: pts.map((p) => p.mean * scale) });
    if (chart !== "chart-threads") {
      traces.push({ type: "scatter", mode: "lines", name: `${label} (max)`, line: { dash: "dot" }, x, y: pts.map((p) => p.max * scale) });
    }
    contrail[`system_${name}`] = pts.length;
  });
  empty.hidden = points > 0;
  $("system-charts").hidden = points === 0;
  if (!points) {
    empty.textContent = `No system metrics from ${service} in this window: its tracers record them with CONTRAIL_SYSTEM_METRICS=true.`;
  } else {
    for (const [chart, traces] of byChart) await systemChart(Plotly, $(chart), traces);
  }
  contrail.systemMetrics = { service, points };
}

// The chosen operation's profiles merged into one flame graph (GET /profiles), when it has any.
async function drawProfile(query) {
  const panel = $("profile-panel");
  if (!query.service || !query.operation) { panel.hidden = true; contrail.operationProfiles = null; return; }
  const merged = await getJSON("/profiles", { service: query.service, operation: query.operation, lookback: query.lookback || "1h" });
  contrail.operationProfiles = merged.profiles;
  panel.hidden = merged.profiles === 0;
  if (!merged.profiles) return;
  $("op-profile-summary").textContent = `${fmtNum(merged.profiles)} profile${merged.profiles === 1 ? "" : "s"}, ${fmtNum(merged.samples)} samples` +
    (merged.dropped ? ` (${fmtNum(merged.dropped)} left out by the size bound)` : "");
  createCodeFlame($("op-flame"), merged.stacks);
  renderTopFunctions($("op-functions").querySelector("tbody"), merged.functions);
}

const hintKey = (service, operation) => `${service}\u0000${operation}`;

function renderOperations(operations, hints) {
  const byOp = new Map(hints.map((h) => [hintKey(h.service, h.operation), h]));
  const tbody = $("ops-table").querySelector("tbody");
  tbody.replaceChildren(...operations.map((op) => {
    const hint = byOp.get(hintKey(op.service, op.operation));
    return el("tr", { class: hint ? "has-hint" : null, dataset: { service: op.service, operation: op.operation } },
      el("td", { text: op.service }), el("td", { text: op.operation || "(all operations)" }), el("td", { class: "num", text: fmtNum(op.count) }),
      el("td", { class: op.error_count ? "num text-err" : "num", text: fmtNum(op.error_count) }),
      el("td", { class: "num", text: fmtPct(op.error_rate) }), el("td", { class: "num", text: fmtNum(op.throughput_per_s, 3) }),
      ...["p50_ms", "p90_ms", "p95_ms", "p99_ms"].map((k) => el("td", { class: "num", text: fmtNum(op[k], 1) })),
      el("td", { class: "hint-cell" }, hint ? hintBadges(hint) : el("span", { class: "muted", text: "–", title: "no departure from its baseline" })));
  }));
  if (!operations.length) tbody.append(el("tr", {}, el("td", { colspan: 11, class: "muted", text: "No statistics in this window." })));
}

function renderHints(result) {
  const list = $("hints-list");
  const { hints, recentS, baselineS } = result;
  $("hints-window").textContent = `last ${fmtWindow(recentS)} against the ${fmtWindow(baselineS)} before, per operation`;
  list.replaceChildren(...hints.map((h) => el("li", { class: "hint", dataset: { service: h.service, operation: h.operation } },
    el("button", { type: "button", class: "btn btn-small hint-op", title: `Show ${h.service} · ${h.operation} in the charts`,
      onclick: () => showOperation(h.service, h.operation) }, el("span", { class: "muted", text: `${h.service} · ` }), h.operation),
    ...hintBadges(h))));
  if (!hints.length) list.append(el("li", { class: "muted", text: "No operation departs from its own baseline." }));
  $("hints-count").textContent = hints.length ? `${fmtNum(hints.length)} flagged` : "";
  $("hints-count").className = hints.length ? "badge badge-warn" : "";
}

async function showOperation(service, operation) {
  form.elements.service.value = service;
  await fillOperations(operation);
  await refresh();
}

async function refresh() {
  const query = readForm();
  syncUrl(query);
  showError($("services-error"), null);
  const { lookback } = query;
  const { top: _top, ...statsQuery } = query;
  drawOperationHeatmap(query);
  const [stats, deps, hints] = await Promise.allSettled([
    getJSON("/stats", statsQuery),
    getJSON("/dependencies", { lookback }),
    loadBottlenecks(),
  ]);
  const hintList = hints.status === "fulfilled" ? hints.value.hints : [];
  if (hints.status === "fulfilled") renderHints(hints.value);
  else showError($("services-error"), hints.reason);
  contrail.bottlenecks = hintList.length;
  if (stats.status === "fulfilled") {
    renderOperations(stats.value.operations || [], hintList);
    await drawCharts(stats.value);
  } else showError($("services-error"), stats.reason);
  if (deps.status === "fulfilled") {
    const body = deps.value;
    const edges = Array.isArray(body) ? body : body.dependencies || body.edges || [];
    const drawn = drawServiceMap($("service-map"), edges, {
      services: knownServices,
      onSelect: (name) => { form.elements.service.value = name; fillOperations("").then(refresh); },
    });
    contrail.serviceMap = drawn;
  } else showError($("services-error"), deps.reason);
  try {
    await drawSystem(query);
    await drawProfile(query);
  } catch (error) { showError($("services-error"), error); }
  contrail.servicesReady = true;
}

async function init() {
  const params = new URLSearchParams(window.location.search);
  for (const key of ["lookback", "step", "group_by", "top"]) if (params.has(key)) form.elements[key].value = params.get(key);
  try {
    knownServices = (await listServices()).map((s) => s.name);
  } catch (error) { showError($("services-error"), error); }
  form.elements.service.replaceChildren(el("option", { value: "", text: "All services" }), ...knownServices.map((n) => el("option", { value: n, text: n })));
  if (params.get("service")) form.elements.service.value = params.get("service");
  await fillOperations(params.get("operation") || "");
  await refresh();
}

/** "Download report": the period report of the chosen lookback, fetched with the API token, saved as a file. */
async function downloadReport() {
  const button = $("download-report");
  button.disabled = true;
  const lookback = form.elements.lookback.value || "24h";
  try {
    const page = await getText("/report", { lookback });
    const link = el("a", { href: URL.createObjectURL(new Blob([page], { type: "text/html" })),
      download: `contrail-report-${lookback}-${new Date().toISOString().slice(0, 16).replace(/[-:T]/g, "")}.html` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    contrail.reportDownloaded = page.length;
  } catch (error) {
    showError($("services-error"), error);
  } finally {
    button.disabled = false;
  }
}

$("download-report").addEventListener("click", downloadReport);
form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
form.elements.service.addEventListener("change", () => fillOperations(""));
window.addEventListener("contrail:theme", () => refresh());
autoRefresh($("auto-refresh"), refresh);
init();
