// The latency heat map: time columns x duration rows from GET /stats/heatmap, drawn as SVG.
// Colour depth = count (log scale); cells holding failed traces are drawn in the error colour.
// Drag across cells (or click one) to select a region; onSelect gets its time and duration bounds.
import { el, fmtMs, fmtNum } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const MARGIN = { l: 64, r: 8, t: 6, b: 22 };

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

/** "#rrggbb" between two colours at t in [0, 1]. */
function mix(a, b, t) {
  const pa = [1, 3, 5].map((i) => parseInt(a.slice(i, i + 2), 16)), pb = [1, 3, 5].map((i) => parseInt(b.slice(i, i + 2), 16));
  return "#" + pa.map((v, i) => Math.round(v + (pb[i] - v) * t).toString(16).padStart(2, "0")).join("");
}

const OK_SCALE = ["#c6dbef", "#08306b"], ERR_SCALE = ["#fcbba1", "#a50f15"];

export function cellColour(count, errors, maxCount) {
  const t = maxCount > 1 ? Math.log1p(count) / Math.log1p(maxCount) : 1;
  const [low, high] = errors > 0 ? ERR_SCALE : OK_SCALE;
  return mix(low, high, Math.min(1, Math.max(0, t)));
}

function timeLabel(ns, stepS) {
  const iso = new Date(ns / 1e6).toISOString();
  return stepS >= 86400 ? iso.slice(5, 10) : stepS >= 3600 ? iso.slice(5, 13).replace("T", " ") + "h" : iso.slice(11, 16);
}

/**
 * Draw `data` (the API answer) into `box`. Returns nothing; `onSelect({start_ns, end_ns, min_ns, max_ns, count,
 * errors})` is called when the user selects a region. An empty answer draws an explanatory empty state.
 */
export function drawHeatmap(box, data, { onSelect, emptyText = "No traces in this window." } = {}) {
  box.replaceChildren();
  const cols = data.columns || [], rows = data.rows || [], cells = data.cells || [];
  box.dataset.cells = String(cells.length);
  if (!cells.length) {
    box.append(el("p", { class: "muted empty-state", text: emptyText }));
    return;
  }
  const width = Math.max(320, box.clientWidth || 800), height = Math.max(140, Math.min(320, 18 * rows.length + MARGIN.t + MARGIN.b));
  const plotW = width - MARGIN.l - MARGIN.r, plotH = height - MARGIN.t - MARGIN.b;
  const cw = plotW / cols.length, rh = plotH / rows.length;
  const rowIndex = new Map(rows.map((r, i) => [r.row, i]));
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "application", class: "heatmap-svg",
    tabindex: 0, "aria-roledescription": "heat map",
    "aria-label": `Latency heat map: ${fmtNum(data.count)} traces, ${fmtNum(data.error_count)} with errors. ` +
      "Drag to select, or use the arrow keys (Shift extends) and Enter." });
  const y = (i) => MARGIN.t + plotH - (i + 1) * rh;  // row 0 (fastest) at the bottom
  const x = (c) => MARGIN.l + c * cw;
  const grid = svg("g", { class: "heatmap-cells" });
  const byKey = new Map();
  for (const [c, r, n, e] of cells) {
    const i = rowIndex.get(r);
    if (i === undefined) continue;
    byKey.set(`${c}:${i}`, [n, e]);
    const rect = svg("rect", { x: x(c) + 0.5, y: y(i) + 0.5, width: Math.max(1, cw - 1), height: Math.max(1, rh - 1),
      fill: cellColour(n, e, data.max_cell), "data-col": c, "data-row": r, "data-count": n, "data-errors": e,
      class: e ? "hm-cell hm-error" : "hm-cell" });
    const row = rows[i];
    const title = svg("title");
    title.textContent = `${cols[c].time} · ${fmtMs(row.min_ms)}–${fmtMs(row.max_ms)}: ${fmtNum(n)} trace${n === 1 ? "" : "s"}` +
      (e ? `, ${fmtNum(e)} with errors` : "");
    rect.append(title);
    grid.append(rect);
  }
  root.append(grid);
  // axes: a duration label every few rows, a time label every few columns
  const axis = svg("g", { class: "heatmap-axis" });
  const rowEvery = Math.max(1, Math.ceil(14 / rh));
  rows.forEach((r, i) => {
    if (i % rowEvery) return;
    const label = svg("text", { x: MARGIN.l - 4, y: y(i) + rh - 2, "text-anchor": "end" });
    label.textContent = fmtMs(r.min_ms);
    axis.append(label);
  });
  const colEvery = Math.max(1, Math.ceil(60 / cw));
  cols.forEach((col, c) => {
    if (c % colEvery || x(c) > width - 34) return;  // no label cut off at the right edge
    const label = svg("text", { x: x(c), y: height - 6 });
    label.textContent = timeLabel(col.start_ns, data.step_s);
    axis.append(label);
  });
  root.append(axis);
  const band = svg("rect", { class: "heatmap-selection", visibility: "hidden" });
  const cursor = svg("rect", { class: "heatmap-cursor", visibility: "hidden", width: cw, height: rh });
  root.append(band, cursor);
  const spoken = el("p", { class: "sr-only", "aria-live": "polite" });
  box.append(root, spoken);

  // selection: pointer down on a cell, drag, release
  const cellAt = (event) => {
    const box2 = root.getBoundingClientRect();
    const px = (event.clientX - box2.left) * (width / box2.width), py = (event.clientY - box2.top) * (height / box2.height);
    const c = Math.floor((px - MARGIN.l) / cw), i = Math.floor((MARGIN.t + plotH - py) / rh);
    return [Math.min(cols.length - 1, Math.max(0, c)), Math.min(rows.length - 1, Math.max(0, i))];
  };
  let anchor = null;
  const showBand = (a, b) => {
    const [c0, c1] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])], [i0, i1] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
    band.setAttribute("x", x(c0)); band.setAttribute("width", (c1 - c0 + 1) * cw);
    band.setAttribute("y", y(i1)); band.setAttribute("height", (i1 - i0 + 1) * rh);
    band.setAttribute("visibility", "visible");
    return { c0, c1, i0, i1 };
  };
  const finish = (region) => {
    let count = 0, errors = 0;
    for (let c = region.c0; c <= region.c1; c++) for (let i = region.i0; i <= region.i1; i++) {
      const hit = byKey.get(`${c}:${i}`);
      if (hit) { count += hit[0]; errors += hit[1]; }
    }
    const selection = { start_ns: cols[region.c0].start_ns, end_ns: cols[region.c1].end_ns,
      min_ns: rows[region.i0].min_ns, max_ns: rows[region.i1].max_ns,
      min_ms: rows[region.i0].min_ms, max_ms: rows[region.i1].max_ms, count, errors };
    box.dataset.selection = JSON.stringify(selection);
    if (onSelect) onSelect(selection);
  };
  // keyboard: arrows move a cursor cell, Shift+arrows stretch the region from where it started, Enter selects
  let at = [0, 0], from = null;
  const describe = ([c, i]) => {
    const hit = byKey.get(`${c}:${i}`) || [0, 0];
    return `${cols[c].time}, ${fmtMs(rows[i].min_ms)}–${fmtMs(rows[i].max_ms)}: ${fmtNum(hit[0])} traces` +
      (hit[1] ? `, ${fmtNum(hit[1])} with errors` : "");
  };
  const moveCursor = () => {
    cursor.setAttribute("x", x(at[0])); cursor.setAttribute("y", y(at[1])); cursor.setAttribute("visibility", "visible");
    if (from) showBand(from, at); else band.setAttribute("visibility", "hidden");
    spoken.textContent = describe(at);
  };
  root.addEventListener("focus", moveCursor);
  root.addEventListener("blur", () => cursor.setAttribute("visibility", "hidden"));
  root.addEventListener("keydown", (event) => {
    const step = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] }[event.key];
    if (step) {
      if (event.shiftKey && !from) from = [...at];
      if (!event.shiftKey) from = null;
      at = [Math.min(cols.length - 1, Math.max(0, at[0] + step[0])), Math.min(rows.length - 1, Math.max(0, at[1] + step[1]))];
      moveCursor();
      event.preventDefault();
    } else if (event.key === "Enter" || event.key === " ") {
      finish(showBand(from || at, at));
      from = null;
      event.preventDefault();
    } else if (event.key === "Escape") {
      from = null;
      band.setAttribute("visibility", "hidden");
    }
  });
  root.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    anchor = cellAt(event);
    at = [...anchor];
    from = null;
    root.setPointerCapture?.(event.pointerId);
    showBand(anchor, anchor);
    event.preventDefault();
  });
  root.addEventListener("pointermove", (event) => { if (anchor) showBand(anchor, cellAt(event)); });
  root.addEventListener("pointerup", (event) => {
    if (!anchor) return;
    at = cellAt(event);
    const region = showBand(anchor, at);
    anchor = null;
    cursor.setAttribute("x", x(at[0])); cursor.setAttribute("y", y(at[1]));
    finish(region);
  });
}

/** A short legend: the colour scales for traces without and with errors (the gradients live in contrail.css). */
export function heatmapLegend(maxCell) {
  const swatch = (kind, label) => el("span", { class: "hm-legend-item" }, el("span", { class: `hm-swatch hm-swatch-${kind}` }), label);
  return el("span", { class: "hm-legend small muted" }, swatch("ok", "traces"), swatch("err", "cells with errors"),
    ` · darkest = ${fmtNum(maxCell)}`);
}
