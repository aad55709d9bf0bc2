// The live service map, drawn as SVG by hand: services are nodes laid out in layers
// (callers left of callees), edges are caller → callee with width by calls and colour by error rate.
import { fmtNum, fmtPct, fmtMs, serviceColour } from "./api.js";

const NS = "http://www.w3.org/2000/svg";
const NODE_W = 150, NODE_H = 34, COL_GAP = 110, ROW_GAP = 26, PAD = 24;

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** green → amber → red as the error rate goes 0 → 5 % → 20 %+. */
export function errorColour(rate) {
  const r = Math.max(0, Math.min(1, (rate || 0) / 0.2));
  const stops = [[44, 160, 44], [255, 170, 0], [214, 39, 40]];
  const [a, b, t] = r < 0.25 ? [stops[0], stops[1], r / 0.25] : [stops[1], stops[2], (r - 0.25) / 0.75];
  return `rgb(${a.map((c, i) => Math.round(c + (b[i] - c) * t)).join(",")})`;
}

/** Layers by breadth-first distance from the entry services (no callers, or the busiest caller in a cycle). */
function layers(names, edges) {
  const out = new Map(names.map((n) => [n, []]));
  const incoming = new Map(names.map((n) => [n, 0]));
  const outCalls = new Map(names.map((n) => [n, 0]));
  for (const e of edges) {
    if (e.caller === e.callee || !out.has(e.caller) || !out.has(e.callee)) continue;
    out.get(e.caller).push(e.callee);
    incoming.set(e.callee, incoming.get(e.callee) + 1);
    outCalls.set(e.caller, outCalls.get(e.caller) + (e.calls || 0));
  }
  const layer = new Map();
  const seeds = names.filter((n) => incoming.get(n) === 0);
  const rest = names.slice().sort((a, b) => outCalls.get(b) - outCalls.get(a));
  for (const seed of [...seeds, ...rest]) {
    if (layer.has(seed)) continue;
    layer.set(seed, 0);
    const queue = [seed];
    while (queue.length) {
      const name = queue.shift();
      for (const next of out.get(name)) if (!layer.has(next)) { layer.set(next, layer.get(name) + 1); queue.push(next); }
    }
  }
  return layer;
}

export function drawServiceMap(container, edges, { services = [], onSelect } = {}) {
  const names = [...new Set([...services, ...edges.flatMap((e) => [e.caller, e.callee])])].filter(Boolean).sort();
  container.replaceChildren();
  if (!names.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No service calls recorded in this window yet.";
    container.append(p);
    return { nodes: 0, edges: 0 };
  }
  const layer = layers(names, edges);
  const columns = [];
  for (const name of names) (columns[layer.get(name)] ||= []).push(name);
  for (let i = columns.length - 1; i >= 0; i--) if (!columns[i]) columns.splice(i, 1);
  const tallest = Math.max(...columns.map((c) => c.length));
  // back edges (callee in an earlier column) arc below the nodes: keep room for them
  const backEdges = edges.some((e) => e.caller !== e.callee && layer.get(e.callee) < layer.get(e.caller));
  const sameColumn = edges.some((e) => e.caller !== e.callee && layer.get(e.callee) === layer.get(e.caller));
  const width = PAD * 2 + columns.length * NODE_W + (columns.length - 1) * COL_GAP + (sameColumn ? 50 : 0);
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP + 20 + (backEdges ? 50 : 0);
  const pos = new Map();
  columns.forEach((col, ci) => col.forEach((name, ri) => {
    const offset = (height - (backEdges ? 50 : 0) - PAD * 2 - (col.length * NODE_H + (col.length - 1) * ROW_GAP)) / 2;
    pos.set(name, { x: PAD + ci * (NODE_W + COL_GAP), y: PAD + offset + ri * (NODE_H + ROW_GAP) });
  }));

  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width: "100%", height: Math.min(height, 520),
    role: "img", "aria-label": `Service map: ${names.length} services, ${edges.length} call edges`, class: "map-svg" });
  const defs = svg("defs");
  root.append(defs);
  const maxCalls = Math.max(1, ...edges.map((e) => e.calls || 0));
  const edgeGroup = svg("g", { class: "map-edges" });
  edges.forEach((e, i) => {
    const a = pos.get(e.caller), b = pos.get(e.callee);
    if (!a || !b) return;
    const colour = errorColour(e.error_rate ?? (e.calls ? (e.errors || 0) / e.calls : 0));
    const marker = svg("marker", { id: `arrow-${i}`, viewBox: "0 0 10 10", refX: 10, refY: 5, markerUnits: "userSpaceOnUse", markerWidth: 12, markerHeight: 12, orient: "auto-start-reverse" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: colour }));
    defs.append(marker);
    const strokeWidth = 1.5 + 7 * Math.log1p(e.calls || 0) / Math.log1p(maxCalls);
    let d;
    if (e.caller === e.callee) {
      const x = a.x + NODE_W * 0.7, y = a.y;
      d = `M${x},${y} C${x + 30},${y - 40} ${x - 50},${y - 40} ${x - 20},${y}`;
    } else if (b.x > a.x) {
      const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2, mid = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}`;
    } else if (b.x === a.x) {  // same column: arc out to the right of both boxes
      const x = a.x + NODE_W, y1 = a.y + NODE_H / 2 + (b.y > a.y ? 5 : -5), y2 = b.y + NODE_H / 2 + (b.y > a.y ? -5 : 5);
      const bulge = (b.y > a.y ? 30 : 52) + Math.min(30, Math.abs(b.y - a.y) / 4);  // the two directions apart
      d = `M${x},${y1} C${x + bulge},${y1} ${x + bulge},${y2} ${x},${y2}`;
    } else {  // back edge (cycle): leave the caller on its left, run under every box, come up into the callee
      const floor = Math.max(...[...pos.values()].map((p) => p.y)) + NODE_H + 34;
      const x1 = a.x, y1 = a.y + NODE_H / 2 + 6, x2 = b.x + NODE_W / 2, y2 = b.y + NODE_H;
      d = `M${x1},${y1} C${x1 - 40},${floor} ${x2 + 40},${floor} ${x2},${y2}`;
    }
    const path = svg("path", { d, fill: "none", stroke: colour, "stroke-width": strokeWidth.toFixed(2), "marker-end": `url(#arrow-${i})`,
      class: "map-edge", "data-caller": e.caller, "data-callee": e.callee, "stroke-linecap": "round" });
    path.append(svg("title", {}, `${e.caller} → ${e.callee}${e.kind ? ` (${e.kind})` : ""}: ${fmtNum(e.calls)} calls, ` +
      `${fmtNum(e.errors || 0)} errors (${fmtPct(e.error_rate || 0)}), avg ${fmtMs(e.avg_ms)}`));
    edgeGroup.append(path);
  });
  root.append(edgeGroup);

  const nodeGroup = svg("g", { class: "map-nodes" });
  for (const name of names) {
    const p = pos.get(name);
    const g = svg("g", { class: "map-node", transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "button", "aria-label": `Service ${name}`, "data-service": name });
    g.append(svg("rect", { width: NODE_W, height: NODE_H, rx: 8, class: "map-node-box" }),
      svg("rect", { width: 6, height: NODE_H, rx: 3, fill: serviceColour(name) }),
      svg("text", { x: NODE_W / 2 + 3, y: NODE_H / 2, "dominant-baseline": "middle", "text-anchor": "middle", class: "map-node-label" },
        name.length > 20 ? name.slice(0, 19) + "…" : name),
      svg("title", {}, name));
    if (onSelect) {
      g.addEventListener("click", () => onSelect(name));
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); onSelect(name); } });
    }
    nodeGroup.append(g);
  }
  root.append(nodeGroup);
  container.append(root);
  return { nodes: names.length, edges: edgeGroup.childElementCount };
}
