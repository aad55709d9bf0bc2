// Compare two traces of the same flow: which operations got slower or faster, which appeared
// or disappeared. Reads GET /traces/compare; the URL (?a=&b=) is the shareable link.
import { getJSON, el, fmtMs, fmtNum, showError, traceHref, contrail } from "./api.js";

const $ = (id) => document.getElementById(id);
const form = $("compare-form");
let result = null;

function change(op) {
  if (op.presence === "only_a") return { label: "disappeared", cls: "chg-gone" };
  if (op.presence === "only_b") return { label: "appeared", cls: "chg-new" };
  const delta = op.delta_ms, base = Math.max(op.duration_ms_a, 1e-6);
  if (op.count_a !== op.count_b) return { label: `count ${op.count_a}→${op.count_b}`, cls: "chg-struct" };
  if (Math.abs(delta) < 0.05 || Math.abs(delta) / base < 0.05) return { label: "same", cls: "chg-same" };
  return delta > 0 ? { label: "slower", cls: "chg-slower" } : { label: "faster", cls: "chg-faster" };
}

const plural = (n, word) => `${fmtNum(n)} ${word}${n === 1 ? "" : "s"}`;

function summaryCard(name, s) {
  return el("div", { class: "card" }, el("h2", {}, `Trace ${name} `, el("a", { href: traceHref(s.trace_id), text: s.trace_id.slice(0, 12) + "…" })),
    el("p", {}, el("strong", { text: `${s.root_service} · ${s.root_operation}` })),
    el("p", { text: `${fmtMs(s.duration_ms)} · ${fmtNum(s.span_count)} spans · ${fmtNum(s.error_count)} errors` }));
}

function render() {
  const onlyChanged = $("changed-only").checked;
  const tbody = $("compare-table").querySelector("tbody");
  const rows = (result?.operations || []).map((op) => ({ op, chg: change(op) }))
    .filter(({ chg }) => !onlyChanged || chg.label !== "same");
  tbody.replaceChildren(...rows.map(({ op, chg }) => {
    const pct = op.presence === "both" && op.duration_ms_a > 0 ? (op.delta_ms / op.duration_ms_a) * 100 : null;
    // the change is a pill in the first cell; colouring the whole row made the numbers hard to read
    return el("tr", { class: `chg-row ${chg.cls}-row`, dataset: { change: chg.label } },
      el("td", {}, el("span", { class: `chg ${chg.cls}`, text: chg.label })),
      el("td", { text: op.service }), el("td", { text: op.name }),
      el("td", { class: "num", text: fmtNum(op.count_a) }), el("td", { class: "num", text: fmtNum(op.count_b) }),
      el("td", { class: "num", text: fmtNum(op.duration_ms_a, 2) }), el("td", { class: "num", text: fmtNum(op.duration_ms_b, 2) }),
      el("td", { class: "num", text: (op.delta_ms > 0 ? "+" : "") + fmtNum(op.delta_ms, 2) }),
      el("td", { class: "num", text: pct === null ? "–" : `${pct > 0 ? "+" : ""}${pct.toFixed(0)} %` }));
  }));
  if (!rows.length && result) tbody.append(el("tr", {}, el("td", { colspan: 9, class: "muted", text: "No operation changed by more than 5 %." })));
}

async function run() {
  const a = form.elements.a.value.trim().toLowerCase(), b = form.elements.b.value.trim().toLowerCase();
  if (!a || !b) return;
  history.replaceState(null, "", `/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
  showError($("compare-error"), null);
  try {
    result = await getJSON("/traces/compare", { a, b });
  } catch (error) {
    result = null;
    showError($("compare-error"), error);
    render();
    return;
  }
  const delta = result.duration_delta_ms;
  const st = result.structure || {};
  $("compare-summary").replaceChildren(
    summaryCard("A", result.a), summaryCard("B", result.b),
    el("div", { class: "card" }, el("h2", { text: "Difference" }),
      el("p", { class: delta > 0 ? "text-err" : "text-ok", text: `B is ${fmtMs(Math.abs(delta))} ${delta > 0 ? "slower" : "faster"} (${result.span_count_delta >= 0 ? "+" : ""}${result.span_count_delta} spans)` }),
      el("p", { text: `${plural((st.only_in_b || []).length, "operation")} appeared, ${fmtNum((st.only_in_a || []).length)} disappeared, ${fmtNum((st.count_changed || []).length)} changed count` }),
      result.same_root ? null : el("p", { class: "text-warn", text: "These traces have different root operations: they may not be the same flow." })),
  );
  render();
  contrail.compareRows = (result.operations || []).length;
}

form.addEventListener("submit", (event) => { event.preventDefault(); run(); });
$("changed-only").addEventListener("change", render);
run();
