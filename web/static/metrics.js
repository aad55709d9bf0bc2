// Metrics page: one application metric (tracing.metrics) of one service over time, with its exemplars.
import { getJSON, el, fmtNum, fmtTime, showError, plotTheme, plotlyReady, autoRefresh, contrail, traceHref } from "./api.js";

const $ = (id) => document.getElementById(id);
const form = $("metrics-form");
let metrics = [];

// What each kind of metric is drawn as: [point field, legend label, line dash].
const LINES = {
  counter: [["rate", "rate (per second)", "solid"]],
  gauge: [["last", "last", "solid"], ["min", "min", "dot"], ["max", "max", "dash"]],
  histogram: [["p50", "p50", "dot"], ["p95", "p95", "solid"], ["p99", "p99", "dash"]],
};

function readForm() {
  const data = new FormData(form);
  const out = {};
  for (const key of ["name", "service", "lookback", "step"]) { const v = String(data.get(key) || ""); if (v) out[key] = v; }
  return out;
}

function syncUrl(query) {
  const params = new URLSearchParams(query);
  if ($("auto-refresh").checked) params.set("refresh", "1");
  history.replaceState(null, "", `/app-metrics${params.toString() ? "?" + params : ""}`);
}

function fillServices(keep) {
  const metric = metrics.find((m) => m.name === form.elements.name.value);
  const services = metric ? metric.services : [];
  form.elements.service.replaceChildren(el("option", { value: "", text: "All services" }),
    ...services.map((s) => el("option", { value: s, text: s })));
  if (keep && services.includes(keep)) form.elements.service.value = keep;
  const about = metric ? [metric.kind, metric.unit && `unit ${metric.unit}`, metric.description,
    `${fmtNum(metric.series)} series`].filter(Boolean).join(" · ") : "No application metrics recorded in the last 7 days.";
  $("metric-about").textContent = about;
}

async function draw(result) {
  const Plotly = await plotlyReady();
  const theme = plotTheme();
  const x = result.points.map((p) => p.time);
  const traces = (LINES[result.kind] || []).map(([key, label, dash]) => ({
    type: "scatter", mode: "lines+markers", name: label, line: { dash }, x, y: result.points.map((p) => p[key]) }));
  const exemplars = result.points.flatMap((p) => p.exemplars.map((e) => ({ ...e, time: p.time })));
  if (exemplars.length && result.kind === "histogram") {
    traces.push({ type: "scatter", mode: "markers", name: "exemplars", marker: { size: 9, symbol: "diamond" },
      x: exemplars.map((e) => e.time), y: exemplars.map((e) => e.value), customdata: exemplars.map((e) => e.trace_id),
      hovertemplate: "trace %{customdata}<extra></extra>" });
  }
  const unit = result.unit ? ` (${result.unit}${result.kind === "counter" ? "/s" : ""})` : "";
  const layout = { ...theme, height: 320, showlegend: true, legend: { orientation: "h", y: -0.2 },
    xaxis: { ...theme.xaxis, type: "date", range: [new Date(result.start_ns / 1e6).toISOString(), new Date(result.end_ns / 1e6).toISOString()] },
    yaxis: { ...theme.yaxis, title: { text: `${result.name}${unit}` }, rangemode: "tozero" } };
  if (!result.points.length) layout.annotations = [{ text: "no data in this window", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
  const div = $("chart-metric");
  await Plotly.react(div, traces, layout, { displayModeBar: false, responsive: true });
  if (!div.dataset.clicks) {
    div.dataset.clicks = "1";
    div.on("plotly_click", (event) => {
      const id = event.points && event.points[0] && event.points[0].customdata;
      if (id) window.location.href = traceHref(id);
    });
  }
  $("chart-title").textContent = `${result.name}${result.service ? " · " + result.service : ""}`;
  $("exemplar-list").replaceChildren(...exemplars.slice(-20).reverse().map((e) => el("li", { class: "hint" },
    el("a", { href: traceHref(e.trace_id, e.span_id), text: `trace ${e.trace_id.slice(0, 8)}…`, class: "exemplar-link" }),
    el("span", { class: "muted", text: ` value ${fmtNum(e.value, 4)} at ${fmtTime(null, e.time_ns)}` }))));
  if (!exemplars.length) $("exemplar-list").append(el("li", { class: "muted", text: "No exemplars in this window." }));
  contrail.metricPoints = result.points.length;
  contrail.metricExemplars = exemplars.length;
}

async function refresh() {
  const query = readForm();
  syncUrl(query);
  showError($("metrics-error"), null);
  if (!query.name) { contrail.metricsReady = true; return; }
  const { name, ...params } = query;
  try {
    await draw(await getJSON(`/metrics/${encodeURIComponent(name)}`, params));
  } catch (error) { showError($("metrics-error"), error); }
  contrail.metricsReady = true;
}

async function init() {
  const params = new URLSearchParams(window.location.search);
  for (const key of ["lookback", "step"]) if (params.has(key)) form.elements[key].value = params.get(key);
  try {
    metrics = (await getJSON("/metrics")).metrics;
  } catch (error) { showError($("metrics-error"), error); }
  form.elements.name.replaceChildren(...metrics.map((m) => el("option", { value: m.name, text: m.name })));
  if (params.get("name")) form.elements.name.value = params.get("name");
  fillServices(params.get("service") || "");
  await refresh();
}

form.addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
form.elements.name.addEventListener("change", () => { fillServices(""); refresh(); });
window.addEventListener("contrail:theme", () => refresh());
autoRefresh($("auto-refresh"), refresh);
init();
