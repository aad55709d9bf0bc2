// Code-level flame graph of a sampling profile, drawn as SVG from folded stacks ("a;b;c" root first,
// with sample counts): root on top, each frame as wide as the samples that ran in it or below it,
// children widest first. Click (or Enter on) a frame to zoom to it, click the top bar to zoom out.
// Frames are focusable buttons named "function: N samples (x %)". Also the top-functions table.
import { el, fill, fmtNum } from "./api.js";

const ROW = 18;
const SVG_NS = "http://www.w3.org/2000/svg";

export function buildTree(stacks) {
  const root = { name: "all", value: 0, self: 0, children: new Map(), parent: null, depth: 0 };
  for (const { stack, samples } of stacks) {
    root.value += samples;
    let node = root;
    for (const frame of String(stack).split(";")) {
      let child = node.children.get(frame);
      if (!child) {
        child = { name: frame, value: 0, self: 0, children: new Map(), parent: node, depth: node.depth + 1 };
        node.children.set(frame, child);
      }
      child.value += samples;
      node = child;
    }
    node.self += samples;
  }
  return root;
}

function hue(name) {  // warm colours, stable per function
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return h % 55;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function functionName(frame) {  // "Class.method (dir/file.py:12)" -> "Class.method"
  const cut = frame.lastIndexOf(" (");
  return cut > 0 ? frame.slice(0, cut) : frame;
}

export function createCodeFlame(container, stacks, { onFocus } = {}) {
  const root = buildTree(stacks);
  let zoom = root;

  function render() {
    const width = Math.max(320, container.clientWidth || 800);
    let depth = 0;
    const rows = [];
    const ancestors = [];
    for (let node = zoom; node; node = node.parent) ancestors.unshift(node);
    ancestors.forEach((node, i) => rows.push({ node, x: 0, w: width, y: i, ancestor: node !== zoom }));
    const base = ancestors.length - 1;
    (function layout(node, x, w, level) {
      depth = Math.max(depth, level);
      let offset = x;
      const children = [...node.children.values()].sort((a, b) => b.value - a.value || a.name.localeCompare(b.name));
      for (const child of children) {
        const cw = w * child.value / node.value;
        if (cw >= 0.5) {
          rows.push({ node: child, x: offset, w: cw, y: level + 1 });
          layout(child, offset, cw, level + 1);
        }
        offset += cw;
      }
    })(zoom, 0, width, base);
    const height = (depth + 1) * ROW + 2;
    const graph = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, class: "code-flame-svg", role: "group",
      "aria-label": `Flame graph of ${fmtNum(root.value)} samples` });
    for (const { node, x, w, y, ancestor } of rows) {
      const share = root.value ? node.value / root.value : 0;
      const label = `${node.name}: ${fmtNum(node.value)} samples (${(share * 100).toFixed(1)} %)` +
        (node.self ? `, ${fmtNum(node.self)} in the function itself` : "");
      const group = svg("g", { class: ancestor ? "cf-frame cf-ancestor" : "cf-frame", tabindex: w >= 3 ? 0 : -1, role: "button",
        "aria-label": label, "data-name": node.name, "data-samples": node.value, transform: `translate(${x.toFixed(2)},${y * ROW})` });
      const title = svg("title");
      title.textContent = label;
      const colour = node === root ? "hsl(0, 0%, 70%)" : `hsl(${hue(functionName(node.name))}, 85%, ${ancestor ? 75 : 62}%)`;
      group.append(title, svg("rect", { width: Math.max(0.5, w - 0.5).toFixed(2), height: ROW - 1, rx: 1, fill: colour }));
      const chars = Math.floor((w - 6) / 6.4);
      if (chars >= 3) {
        const text = svg("text", { x: 3, y: ROW - 5 });
        const name = node === root ? `all (${fmtNum(root.value)} samples)` : node.name;
        text.textContent = name.length > chars ? `${name.slice(0, chars - 1)}…` : name;
        group.append(text);
      }
      const choose = () => { zoom = node === zoom && node.parent ? node.parent : node; render(); onFocus?.(zoom); };
      group.addEventListener("click", choose);
      group.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") { event.preventDefault(); choose(); }
        if (event.key === "Escape") { zoom = root; render(); onFocus?.(zoom); }
      });
      graph.append(group);
    }
    container.replaceChildren(graph);
  }

  render();
  return {
    root,
    render,
    reset() { zoom = root; render(); },
    zoomTo(name) {
      const found = [];
      (function walk(node) { if (node.name === name) found.push(node); node.children.forEach(walk); })(root);
      if (found.length) { zoom = found[0]; render(); }
      return found.length > 0;
    },
  };
}

export function renderTopFunctions(tbody, functions) {
  fill(tbody, (functions || []).map((f) => el("tr", {},
    el("td", {}, el("code", { text: functionName(f.function) }), " ",
      el("span", { class: "muted small", text: f.function.slice(functionName(f.function).length).trim() })),
    el("td", { class: "num", text: fmtNum(f.self_samples) }), el("td", { class: "num", text: `${f.self_pct.toFixed(1)} %` }),
    el("td", { class: "num", text: fmtNum(f.total_samples) }), el("td", { class: "num", text: `${f.total_pct.toFixed(1)} %` }))));
}
