// Flame graph (icicle: root on top, time left to right) drawn on a canvas. Only frames inside
// the visible depth band and wider than half a pixel are drawn, so it stays fast at 10k spans.
// Keyboard: the graph is one tab stop; ↑ parent, ↓ first child, ←/→ previous/next frame at the
// same depth, Home the first root, Enter/Space opens the span, + zooms to the focused frame,
// - or Escape resets the zoom. The focused frame is outlined and announced in a live region.
import { serviceColour, textOn, fmtMs } from "./api.js";

const FRAME = 20;

export function createFlameGraph(scroller, canvas, model, { onSelect, announce } = {}) {
  const spacer = scroller.querySelector(".flame-spacer");
  spacer.style.height = `${(model.maxDepth + 1) * FRAME + 8}px`;
  let view = [0, model.totalMs];
  let selectedId = null;
  let hover = null;
  let focused = null;  // the keyboard cursor
  const byDepth = [];
  for (const node of model.preorder) (byDepth[node.depth] ||= []).push(node);

  function colours() {
    const css = getComputedStyle(document.documentElement);
    return { fg: css.getPropertyValue("--fg").trim() || "#111", err: css.getPropertyValue("--err").trim() || "#d62728",
      crit: css.getPropertyValue("--crit").trim() || "#ff7f0e", bg: css.getPropertyValue("--panel").trim() || "#fff",
      focus: css.getPropertyValue("--focus").trim() || "#1a73e8" };
  }

  function draw() {
    const ratio = window.devicePixelRatio || 1;
    const width = scroller.clientWidth, height = scroller.clientHeight;
    if (!width || !height) return;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.width = `${width}px`;
    canvas.style.height = `${height}px`;
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const c = colours();
    const scale = width / (view[1] - view[0]);
    const top = scroller.scrollTop;
    const firstDepth = Math.max(0, Math.floor(top / FRAME));
    const lastDepth = Math.min(byDepth.length - 1, Math.ceil((top + height) / FRAME));
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    for (let depth = firstDepth; depth <= lastDepth; depth++) {
      const y = depth * FRAME - top;
      for (const node of byDepth[depth] || []) {
        const x0 = (node.startMs - view[0]) * scale;
        const x1 = (node.endMs - view[0]) * scale;
        if (x1 < 0 || x0 > width || x1 - x0 < 0.5) continue;
        const x = Math.max(0, x0), w = Math.max(1, Math.min(width, x1) - x);
        ctx.fillStyle = serviceColour(node.span.service);
        ctx.globalAlpha = node.span.critical_path ? 1 : 0.72;
        ctx.fillRect(x, y + 1, w, FRAME - 2);
        ctx.globalAlpha = 1;
        if (node.span.status === "error") { ctx.strokeStyle = c.err; ctx.lineWidth = 2; ctx.strokeRect(x + 1, y + 2, w - 2, FRAME - 4); }
        if (node.id === selectedId || node === hover) { ctx.strokeStyle = c.fg; ctx.lineWidth = 2; ctx.strokeRect(x + 1, y + 2, w - 2, FRAME - 4); }
        if (node === focused && document.activeElement === scroller) {
          ctx.save(); ctx.strokeStyle = c.focus; ctx.lineWidth = 3; ctx.setLineDash([4, 2]);
          ctx.strokeRect(x + 1.5, y + 1.5, Math.max(3, w - 3), FRAME - 3); ctx.restore();
        }
        if (w > 36) {
          ctx.save();
          ctx.beginPath(); ctx.rect(x, y, w, FRAME); ctx.clip();
          ctx.fillStyle = textOn(serviceColour(node.span.service));
          ctx.fillText(`${node.span.name} (${fmtMs(node.durationMs)})`, x + 4, y + FRAME / 2);
          ctx.restore();
        }
      }
    }
  }

  function nodeAt(event) {
    const rect = scroller.getBoundingClientRect();
    const x = event.clientX - rect.left, y = event.clientY - rect.top + scroller.scrollTop;
    const depth = Math.floor(y / FRAME);
    const t = view[0] + (x / scroller.clientWidth) * (view[1] - view[0]);
    const tolerance = (2 / scroller.clientWidth) * (view[1] - view[0]);
    return (byDepth[depth] || []).find((n) => n.startMs - tolerance <= t && t <= n.endMs + tolerance) || null;
  }

  scroller.addEventListener("scroll", () => requestAnimationFrame(draw), { passive: true });
  window.addEventListener("resize", () => requestAnimationFrame(draw));
  scroller.addEventListener("mousemove", (event) => {
    const node = nodeAt(event);
    if (node !== hover) {
      hover = node;
      scroller.title = node ? `${node.span.service} · ${node.span.name} · ${fmtMs(node.durationMs)}` : "";
      requestAnimationFrame(draw);
    }
  });
  scroller.addEventListener("click", (event) => {
    const node = nodeAt(event);
    if (node) { selectedId = node.id; focused = node; describe(); draw(); onSelect?.(node); }
  });

  // ------------------------------------------------------------- keyboard
  const describe = () => {
    if (!focused) return;
    const s = focused.span;
    const text = `${s.service} · ${s.name}, ${fmtMs(focused.durationMs)}` + (s.status === "error" ? ", error" : "") +
      (s.critical_path ? ", on the critical path" : "") + `; depth ${focused.depth + 1} of ${model.maxDepth + 1}` +
      (focused.children.length ? `, ${focused.children.length} ${focused.children.length === 1 ? "child" : "children"}` : "");
    scroller.dataset.focusedSpan = focused.id;
    announce?.(text, focused);
  };

  /** Move the keyboard cursor to `node`: zoom out if it is outside the view, scroll its depth into view. */
  function focusNode(node) {
    if (!node) return;
    focused = node;
    const span = view[1] - view[0];
    if (node.endMs < view[0] || node.startMs > view[1] || (node.durationMs / span) * scroller.clientWidth < 2) {
      const frame = node.parent || node;
      view = frame.durationMs > 0 ? [frame.startMs, frame.endMs] : [0, model.totalMs];
    }
    const top = node.depth * FRAME;
    if (top < scroller.scrollTop) scroller.scrollTop = top;
    else if (top + FRAME > scroller.scrollTop + scroller.clientHeight) scroller.scrollTop = top + FRAME - scroller.clientHeight;
    describe();
    draw();
  }

  function sameDepth(node, step) {
    const row = byDepth[node.depth] || [];
    const index = row.indexOf(node);
    return row[index + step] || null;
  }

  scroller.addEventListener("focus", () => { if (!focused) focused = model.byId.get(selectedId) || model.roots[0] || null; describe(); draw(); });
  scroller.addEventListener("blur", () => draw());
  scroller.addEventListener("keydown", (event) => {
    const node = focused || model.roots[0];
    if (!node) return;
    switch (event.key) {
      case "ArrowUp": if (node.parent) focusNode(node.parent); break;
      case "ArrowDown": if (node.children.length) focusNode(node.children[0]); break;
      case "ArrowLeft": focusNode(sameDepth(node, -1) || node); break;
      case "ArrowRight": focusNode(sameDepth(node, 1) || node); break;
      case "Home": focusNode(model.roots[0]); break;
      case "End": focusNode(byDepth[node.depth][byDepth[node.depth].length - 1]); break;
      case "Enter": case " ":
        focused = node; selectedId = node.id; describe(); draw(); onSelect?.(node); break;
      case "+": case "=":
        if (node.durationMs > 0) { view = [node.startMs, node.endMs]; draw(); } break;
      case "-": case "Escape": case "0":
        view = [0, model.totalMs]; focusNode(node); break;
      default: return;
    }
    event.preventDefault();
  });
  scroller.addEventListener("dblclick", (event) => {
    const node = nodeAt(event);
    if (node && node.durationMs > 0) { view = [node.startMs, node.endMs]; draw(); }
  });

  return {
    draw,
    reset() { view = [0, model.totalMs]; draw(); },
    select(node) { selectedId = node ? node.id : null; if (node) focused = node; draw(); },
    get focused() { return focused; },
  };
}
