// The virtualized waterfall (Gantt) of a trace: only the rows inside the scroll viewport exist
// in the DOM, so a 10k-span trace costs the same to draw as a 40-span one.
// Keyboard: Up/Down move, Left collapses (or goes to the parent), Right expands (or goes to
// the first child), Enter/Space opens the span, Home/End jump, * expands all.
import { el, clear, fmtMs, serviceColour, textOn, contrail } from "./api.js";
import { searchTextOf } from "./tracemodel.js";

export const ROW_HEIGHT = 26;
const OVERSCAN = 8;
const NAME_COLUMN = 380, LABEL_MARGIN = 90;  // px, as in contrail.css (.wf-row grid, .wf-track margin)
const CHAR_PX = 6.3;  // average width of an 11px label character, a little generous

export function createWaterfall(container, model, { onSelect } = {}) {
  const collapsed = new Set();
  let criticalOnly = false;
  let rows = [];             // visible nodes in display order
  let indexOf = new Map();   // node -> position in rows
  let active = 0;
  let selectedId = null;
  let matches = new Set();
  let scheduled = false;
  let firstPaintDone = false;

  container.setAttribute("aria-rowcount", String(model.nodes.length));
  const spacer = el("div", { class: "wf-spacer" });
  const windowEl = el("div", { class: "wf-window", role: "presentation" });
  spacer.append(windowEl);
  clear(container).append(spacer);

  function flatten() {
    const out = [];
    if (criticalOnly) {
      for (const node of model.preorder) if (node.span.critical_path) out.push(node);
    } else {
      const stack = model.roots.slice().reverse();
      while (stack.length) {
        const node = stack.pop();
        out.push(node);
        if (!collapsed.has(node.id)) for (let i = node.children.length - 1; i >= 0; i--) stack.push(node.children[i]);
      }
    }
    rows = out;
    indexOf = new Map(rows.map((n, i) => [n, i]));
    spacer.style.height = `${rows.length * ROW_HEIGHT}px`;
    if (active >= rows.length) active = Math.max(0, rows.length - 1);
  }

  const pct = (ms) => `${((ms / model.totalMs) * 100).toFixed(4)}%`;
  let trackPx = 600;  // width of the time column, measured on every render

  /**
   * Where a bar's label goes without covering anything: after the bar (the track keeps a margin
   * for it), else before the queue wait / bar, else inside the bar; a label that fits nowhere
   * drops its last parts ("waited", then "self") and as a last resort is cut with an ellipsis.
   */
  function labelPlacement(node, parts) {
    const total = model.totalMs;
    const startPx = (Math.max(0, node.startMs - node.waitMs) / total) * trackPx;
    const barStartPx = (node.startMs / total) * trackPx;
    const endPx = (node.endMs / total) * trackPx;
    const rightRoom = trackPx - endPx + LABEL_MARGIN - 6;
    const leftRoom = startPx - 6;
    const insideRoom = endPx - barStartPx - 10;
    for (let n = parts.length; n >= 1; n--) {
      const text = parts.slice(0, n).join(" · ");
      const width = text.length * CHAR_PX;
      if (width <= rightRoom) return { text, style: `left:${(endPx + 4).toFixed(1)}px` };
      if (width <= leftRoom) return { text, style: `right:${(trackPx - startPx + 4).toFixed(1)}px` };
      if (width <= insideRoom) return { text, inside: true, style: `left:${(barStartPx + 5).toFixed(1)}px` };
    }
    const text = parts.join(" · ");
    if (rightRoom >= leftRoom) return { text, style: `left:${(endPx + 4).toFixed(1)}px;max-width:${Math.max(24, rightRoom).toFixed(0)}px` };
    return { text, style: `left:0;max-width:${Math.max(24, leftRoom).toFixed(0)}px` };
  }

  function rowElement(node, index) {
    const s = node.span;
    const hasChildren = node.children.length > 0 && !criticalOnly;
    const isCollapsed = collapsed.has(node.id);
    const classes = ["wf-row"];
    if (s.critical_path) classes.push("is-critical");
    if (s.status === "error") classes.push("is-error");
    if (node.id === selectedId) classes.push("is-selected");
    if (index === active) classes.push("is-active");
    if (matches.has(node)) classes.push("is-match");
    const selfMs = Number(s.self_time_ms);
    const label = `${s.service} ${s.name}, ${fmtMs(node.durationMs)}` +
      (Number.isFinite(selfMs) ? `, self ${fmtMs(selfMs)}` : "") + (node.waitMs ? `, waited ${fmtMs(node.waitMs)} in the queue` : "") +
      (s.status === "error" ? ", error" : "") + (s.critical_path ? ", on the critical path" : "");
    const row = el("div", {
      class: classes.join(" "), role: "treeitem", id: `wf-${node.id}`,
      "aria-level": node.depth + 1, "aria-selected": node.id === selectedId ? "true" : "false",
      "aria-expanded": hasChildren ? String(!isCollapsed) : null, "aria-label": label,
      dataset: { spanId: node.id, index: String(index) },
      style: `top:${index * ROW_HEIGHT}px;height:${ROW_HEIGHT}px`,
    });
    const caret = hasChildren
      ? el("span", { class: "wf-caret", "aria-hidden": "true", dataset: { toggle: "1" }, text: isCollapsed ? "▸" : "▾" })
      : el("span", { class: "wf-caret wf-leaf", "aria-hidden": "true" });
    const name = el("div", { class: "wf-name", style: `padding-left:${Math.min(node.depth, 40) * 12 + 4}px` },
      caret,
      el("span", { class: "wf-swatch", style: `background:${serviceColour(s.service)}`, "aria-hidden": "true" }),
      el("span", { class: "wf-service", text: s.service }),
      el("span", { class: "wf-op", text: s.name }),
      hasChildren && isCollapsed ? el("span", { class: "wf-count", text: `+${countDescendants(node)}` }) : null,
      s.status === "error" ? el("span", { class: "badge badge-err", title: s.status_message || "error", text: "error" }) : null,
      ...node.warnings.map((w) => el("span", { class: "badge badge-warn", title: w.message || w.code, text: w.code === "clock_skew" ? "clock skew" : w.code === "missing_parent" ? "missing parent" : w.code })),
    );
    const track = el("div", { class: "wf-track" });
    if (node.waitMs > 0) {
      track.append(el("div", {
        class: "wf-wait", title: `queue wait ${fmtMs(node.waitMs)}`,
        style: `left:${pct(Math.max(0, node.startMs - node.waitMs))};width:${pct(Math.min(node.waitMs, node.startMs))}`,
      }));
    }
    track.append(el("div", {
      class: "wf-bar", style: `left:${pct(node.startMs)};width:max(2px,${pct(node.durationMs)});background:${serviceColour(s.service)}`,
    }));
    const parts = [fmtMs(node.durationMs), Number.isFinite(selfMs) ? `self ${fmtMs(selfMs)}` : null,
      node.waitMs ? `waited ${fmtMs(node.waitMs)}` : null].filter(Boolean);
    const place = labelPlacement(node, parts);
    track.append(el("span", { class: `wf-label${place.inside ? " wf-label-inside" : ""}`, style: place.style, text: place.text,
      ...(place.inside ? { "data-on": textOn(serviceColour(s.service)) } : {}) }));    row.append(name, track);
    return row;
  }

  function countDescendants(node) {
    let n = 0;
    const stack = [...node.children];
    while (stack.length) { const c = stack.pop(); n++; stack.push(...c.children); }
    return n;
  }

  function render() {
    scheduled = false;
    trackPx = Math.max(120, (container.clientWidth || 1000) - NAME_COLUMN - LABEL_MARGIN);
    const top = container.scrollTop;
    const height = container.clientHeight || 600;
    const first = Math.max(0, Math.floor(top / ROW_HEIGHT) - OVERSCAN);
    const last = Math.min(rows.length, Math.ceil((top + height) / ROW_HEIGHT) + OVERSCAN);
    const fragment = document.createDocumentFragment();
    for (let i = first; i < last; i++) fragment.append(rowElement(rows[i], i));
    clear(windowEl).append(fragment);
    const current = rows[active];
    if (current && indexOf.get(current) >= first && indexOf.get(current) < last) {
      container.setAttribute("aria-activedescendant", `wf-${current.id}`);
    } else {
      container.removeAttribute("aria-activedescendant");
    }
    contrail.waterfallRenderedRows = last - first;
    if (!firstPaintDone) {
      firstPaintDone = true;
      requestAnimationFrame(() => {
        contrail.waterfallFirstPaintMs = performance.now();
        performance.mark("contrail:waterfall-first-paint");
      });
    }
  }

  function schedule() {
    if (!scheduled) { scheduled = true; requestAnimationFrame(render); }
  }

  function scrollToIndex(index) {
    const top = index * ROW_HEIGHT;
    if (top < container.scrollTop) container.scrollTop = top;
    else if (top + ROW_HEIGHT > container.scrollTop + container.clientHeight) container.scrollTop = top + ROW_HEIGHT - container.clientHeight;
  }

  function setActive(index, { select = false } = {}) {
    if (!rows.length) return;
    active = Math.max(0, Math.min(rows.length - 1, index));
    scrollToIndex(active);
    if (select) selectNode(rows[active]);
    render();
  }

  function selectNode(node, { notify = true } = {}) {
    selectedId = node ? node.id : null;
    if (node && notify && onSelect) onSelect(node);
  }

  function toggle(node, open) {
    if (!node.children.length) return;
    const shouldOpen = open === undefined ? collapsed.has(node.id) : open;
    if (shouldOpen) collapsed.delete(node.id); else collapsed.add(node.id);
    flatten();
    if (indexOf.has(node)) active = indexOf.get(node);
    render();
  }

  /** Make a node visible (expanding its ancestors), scroll to it and optionally select it. */
  function reveal(node, { select = true } = {}) {
    if (criticalOnly && !node.span.critical_path) { criticalOnly = false; api.onCriticalOnlyChange?.(false); }
    for (let p = node.parent; p; p = p.parent) collapsed.delete(p.id);
    flatten();
    active = indexOf.get(node) ?? 0;
    const top = active * ROW_HEIGHT - container.clientHeight / 3;
    container.scrollTop = Math.max(0, top);
    if (select) selectNode(node);
    render();
  }

  container.addEventListener("scroll", schedule, { passive: true });
  window.addEventListener("resize", schedule);

  container.addEventListener("click", (event) => {
    const rowEl = event.target.closest(".wf-row");
    if (!rowEl) return;
    const index = Number(rowEl.dataset.index);
    const node = rows[index];
    if (!node) return;
    active = index;
    if (event.target.closest("[data-toggle]")) { toggle(node); return; }
    selectNode(node);
    render();
  });

  container.addEventListener("keydown", (event) => {
    const node = rows[active];
    const page = Math.max(1, Math.floor(container.clientHeight / ROW_HEIGHT) - 1);
    switch (event.key) {
      case "ArrowDown": setActive(active + 1); break;
      case "ArrowUp": setActive(active - 1); break;
      case "PageDown": setActive(active + page); break;
      case "PageUp": setActive(active - page); break;
      case "Home": setActive(0); break;
      case "End": setActive(rows.length - 1); break;
      case "ArrowRight":
        if (!node) return;
        if (node.children.length && collapsed.has(node.id) && !criticalOnly) toggle(node, true);
        else if (node.children.length && !criticalOnly) setActive(active + 1);
        break;
      case "ArrowLeft":
        if (!node) return;
        if (node.children.length && !collapsed.has(node.id) && !criticalOnly) toggle(node, false);
        else if (node.parent && indexOf.has(node.parent)) setActive(indexOf.get(node.parent));
        break;
      case "Enter": case " ":
        if (node) { selectNode(node); render(); }
        break;
      case "*": expandAll(); break;
      default: return;
    }
    event.preventDefault();
  });

  function expandAll() { collapsed.clear(); flatten(); render(); }
  function collapseAll() {
    for (const node of model.nodes) if (node.children.length) collapsed.add(node.id);
    active = 0; flatten(); container.scrollTop = 0; render();
  }

  flatten();
  render();

  const api = {
    render, reveal, expandAll, collapseAll, toggle,
    get visibleCount() { return rows.length; },
    setCriticalOnly(on) { criticalOnly = on; flatten(); container.scrollTop = 0; active = 0; render(); },
    select(node) { reveal(node, { select: false }); selectNode(node, { notify: false }); render(); },
    /** Highlight nodes matching `query`; returns the matches in display (preorder) order. */
    find(query) {
      const q = query.trim().toLowerCase();
      matches = new Set(q ? model.preorder.filter((n) => searchTextOf(n).includes(q)) : []);
      render();
      return model.preorder.filter((n) => matches.has(n));
    },
    onCriticalOnlyChange: null,
  };
  return api;
}

/** Time ticks over the waterfall's track column. */
export function renderTicks(target, totalMs, count = 5) {
  clear(target);
  for (let i = 0; i <= count; i++) {
    target.append(el("span", { class: "wf-tick", style: `left:${(i / count) * 100}%`, text: fmtMs((totalMs * i) / count) }));
  }
}
