// Services page: RED charts per service/operation (rate, errors, p50/p95/p99 over time)
// and the live service map from the collector's dependency edges.
import { getJSON, listServices, listOperations, el, fmtNum, fmtPct, showError, plotTheme, plotText, plotlyReady,
  autoRefresh, contrail, loadBottlenecks, hintBadges, fmtWindow } from "./api.js";
import { drawServiceMap } from "./servicemap.js";
import { createCodeFlame, renderTopFunctions } from "./codeflame.js";

const $ = (id) => document.getElementById(id);
const form = $("services-form");
const MAX_LINES = 8;
let knownServices = [];

function readForm() {
  const data = new FormData(form);
  const out = {};
  for (const key of ["service", "operation", "lookback", "step"]) { const v = String(data.get(key) || ""); if (v) out[key] = v; }
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

function lineChart(Plotly, div, traces, yTitle) {
  const theme = plotTheme();
  const layout = { ...theme, height: 240, showlegend: true, legend: { orientation: "h", y: -0.25, font: { size: 10 } },
    xaxis: { ...theme.xaxis, type: "date", ...(statsWindow ? { range: statsWindow } : {}) }, yaxis: { ...theme.yaxis, title: { text: yTitle }, rangemode: "tozero" } };
  if (!traces.length) layout.annotations = [{ text: "no data in this window", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  return Plotly.react(div, traces, layout, { displayModeBar: false, responsive: true });
}

async function drawCharts(stats) {
  const Plotly = await plotlyReady();
  const step = stats.step_s || 60;
  statsWindow = stats.start_ns && stats.end_ns
    ? [new Date(stats.start_ns / 1e6).toISOString(), new Date(stats.end_ns / 1e6).toISOString()] : null;
  const series = (stats.series || []).slice()
    .sort((a, b) => b.points.reduce((n, p) => n + p.count, 0) - a.points.reduce((n, p) => n + p.count, 0))
    .slice(0, MAX_LINES);
  const name = (s) => `${plotText(s.service)} · ${plotText(s.operation)}`;
  const x = (s) => s.points.map((p) => p.time);
  await lineChart(Plotly, $("chart-rate"), series.map((s) => ({ type: "scatter", mode: "lines+markers", name: name(s), x: x(s), y: s.points.map((p) => p.count / step) })), "req/s");
  await lineChart(Plotly, $("chart-errors"), series.map((s) => ({ type: "bar", name: name(s), x: x(s), y: s.points.map((p) => p.error_count) })), "errors");
  const latency = [];
  const detailed = series.length <= 2;
  for (const s of series) {
    for (const [key, dash] of detailed ? [["p50_ms", "dot"], ["p95_ms", "solid"], ["p99_ms", "dash"]] : [["p95_ms", "solid"]]) {
      latency.push({ type: "scatter", mode: "lines+markers", name: `${name(s)} ${key.slice(0, 3)}`, line: { dash }, x: x(s), y: s.points.map((p) => p[key]) });
    }
  }
  await lineChart(Plotly, $("chart-latency"), latency, detailed ? "ms (p50 · p95 · p99)" : "ms (p95)");
  contrail.chartSeries = series.length;
}

// System metrics of the chosen service's processes (tracer.system_metrics): gauges per minute (hourly for a
// week), the mean over its processes' exported values and the highest.
const SYSTEM = [["process.cpu.utilization", "chart-cpu", 100, "%"], ["process.memory.rss", "chart-rss", 1e-6, "MB"],
  ["process.threads", "chart-threads", 1, "threads"], ["process.open_file_descriptors", "chart-threads", 1, "open files"]];

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
    for (const [chart, traces] of byChart) await lineChart(Plotly, $(chart), traces, "");
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
      el("td", { text: op.service }), el("td", { text: op.operation }), el("td", { class: "num", text: fmtNum(op.count) }),
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
  const [stats, deps, hints] = await Promise.allSettled([
    getJSON("/stats", query),
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
  for (const key of ["lookback", "step"]) if (params.has(key)) form.elements[key].value = params.get(key);
  try {
    knownServices = (await listServices()).map((s) => s.name);
  } catch (error) { showError($("services-error"), error); }
  form.elements.service.replaceChildren(el("option", { value: "", text: "All services" }), ...knownServices.map((n) => el("option", { value: n, text: n })));
  if (params.get("service")) form.elements.service.value = params.get("service");
  await fillOperations(params.get("operation") || "");
  await refresh();
}

form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
form.elements.service.addEventListener("change", () => fillOperations(""));
window.addEventListener("contrail:theme", () => refresh());
autoRefresh($("auto-refresh"), refresh);
init();
