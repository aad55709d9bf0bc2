// Live tail: polls GET /traces/tail with a cursor and puts each newly finalized trace on top of a table.
// Polling (not a held-open stream) so it works behind gunicorn's sync workers. Pausing keeps the cursor,
// so resuming brings in what was finalized meanwhile; new filters start over.
import { getJSON, el, fill, fmtMs, fmtNum, fmtTime, showError, traceHref, contrail } from "./api.js";

const POLL_MS = 2000;
const MAX_ROWS = 100;

export function createLiveTail({ body, status, button, errorBox, filters }) {
  let cursor = null, timer = null, running = false, key = "", generation = 0;
  const rows = new Map();  // trace id -> tr

  function row(t) {
    return el("tr", { class: (t.error_count ? "row-error " : "") + "tail-new", dataset: { traceId: t.trace_id } },
      el("td", {}, el("a", { href: traceHref(t.trace_id), class: "trace-link", text: fmtTime(t.start_time, t.start_ns) })),
      el("td", {}, el("strong", { text: t.root_service || "?" }), " ", el("span", { text: t.root_operation || "(missing root)" })),
      el("td", { class: "num", text: fmtMs(t.duration_ms) }),
      el("td", { class: "num", text: fmtNum(t.span_count) }),
      el("td", {}, (t.services || []).join(", ")),
      el("td", { class: t.error_count ? "num text-err" : "num", text: fmtNum(t.error_count) }));
  }

  function show(traces) {
    if (!rows.size && traces.length) body.replaceChildren();
    for (const t of traces) {  // oldest first: each goes on top
      rows.get(t.trace_id)?.remove();  // a re-finalized trace moves up with its new summary
      const tr = row(t);
      rows.set(t.trace_id, tr);
      body.prepend(tr);
    }
    while (rows.size > MAX_ROWS) {
      const oldest = body.lastElementChild;
      rows.delete(oldest.dataset.traceId);
      oldest.remove();
    }
    if (!rows.size) fill(body, el("tr", {}, el("td", { colspan: 6, class: "muted", text: "Waiting for traces that match these filters…" })));
    contrail.tailRows = rows.size;
    contrail.tailIds = [...rows.keys()];
  }

  async function poll() {
    timer = null;
    if (!running) return;
    const asked = generation;
    let more = false;
    try {
      const answer = await getJSON("/traces/tail", { ...filters(), ...(cursor ? { cursor } : { limit: 20 }) });
      if (!running || asked !== generation) return;  // paused or filters changed meanwhile
      cursor = answer.cursor;
      more = answer.more;
      show(answer.traces || []);
      showError(errorBox, null);
      status.textContent = `Live · ${fmtNum(rows.size)} shown · checked ${new Date().toISOString().slice(11, 19)} UTC`;
      contrail.tailPolls = (contrail.tailPolls || 0) + 1;
    } catch (error) {
      if (asked !== generation) return;
      showError(errorBox, error);
      status.textContent = "Live · retrying";
    }
    if (running) timer = setTimeout(poll, more ? 0 : POLL_MS);
  }

  function setRunning(on) {
    running = on;
    button.textContent = on ? "Pause" : (cursor ? "Resume" : "Start live tail");
    button.setAttribute("aria-pressed", String(on));
    if (!on) { generation += 1; if (timer) clearTimeout(timer); timer = null; status.textContent = cursor ? "Paused" : "Stopped"; }
    else if (!timer) poll();
    contrail.tailRunning = on;
  }

  button.addEventListener("click", () => setRunning(!running));

  return {
    /** The filters changed: start over with an empty table (keeps running if it was). */
    reset() {
      const next = JSON.stringify(filters());
      if (next === key) return;
      key = next;
      generation += 1;
      cursor = null;
      rows.clear();
      fill(body, el("tr", {}, el("td", { colspan: 6, class: "muted", text: running ? "Waiting for traces…" : "Start the live tail to see traces as they arrive." })));
      if (running) { if (timer) clearTimeout(timer); timer = null; poll(); }
    },
    start() { setRunning(true); },
  };
}
