"""The period report as one self-contained HTML file: inline CSS, inline SVG charts, no script, no network.

Charts are drawn here as SVG (bars, lines, the latency heat map, the
dependency map), so the file opens the same on an air-gapped laptop, in a
mail attachment or years later. Every text from trace data is escaped.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from html import escape
from typing import Any, Iterable, Sequence

OK, ERR, ACCENT, MUTED, GRID = "#2b5d9b", "#c62828", "#e8710a", "#5d6678", "#e3e6eb"
LINE_COLOURS = {"p50_ms": "#59a14f", "p95_ms": "#2b5d9b", "p99_ms": "#c62828"}

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d2330; background: #f5f6f8;
       margin: 0; padding: 24px; }
main { max-width: 1200px; margin: 0 auto; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 0 0 10px; } h3 { font-size: 14px; margin: 12px 0 6px; }
section { background: #fff; border: 1px solid #d8dce3; border-radius: 8px; padding: 14px 16px; margin: 0 0 16px; }
.muted { color: #5d6678; } .err { color: #c62828; } .small { font-size: 12px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 10px; margin: 10px 0; }
.card { border: 1px solid #d8dce3; border-radius: 6px; padding: 8px 10px; }
.card b { display: block; font-size: 20px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e3e6eb; vertical-align: top; }
th { color: #5d6678; font-weight: 600; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code { font: 12px ui-monospace, Menlo, Consolas, monospace; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(360px, 1fr)); gap: 14px; }
figure { margin: 0; } figcaption { font-size: 12px; color: #5d6678; margin-top: 4px; }
svg text { font: 11px system-ui, sans-serif; fill: #5d6678; }
.legend { display: flex; gap: 14px; font-size: 12px; color: #5d6678; flex-wrap: wrap; }
.legend span::before { content: ""; display: inline-block; width: 10px; height: 10px; margin-right: 4px;
                       background: var(--c); border-radius: 2px; }
.empty { color: #5d6678; font-style: italic; }
"""


def _e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 60_000:
        return f"{value / 60_000:.1f} min"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.1f} ms"
    return f"{value:.2f} ms"


def _num(value: float | int | None, digits: int = 0) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def _pct(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio * 100:.1f} %"


def _time(seconds: int, step_s: int) -> str:
    moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    return moment.strftime("%m-%d" if step_s >= 86400 else "%H:%M")


def _svg(width: int, height: int, body: Iterable[str], label: str, chart: str) -> str:
    return (f'<svg width="100%" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{_e(label)}" data-chart="{_e(chart)}">' + "".join(body) + "</svg>")


def _axes(width: int, height: int, left: int, bottom: int, top: int, y_max: float, y_fmt, buckets: Sequence[int],
          step_s: int) -> list[str]:
    """Horizontal grid lines with y labels, and a few time labels under the plot."""
    out = []
    plot_h = height - bottom - top
    for i in range(5):
        value = y_max * i / 4
        y = top + plot_h - plot_h * i / 4
        out.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_e(y_fmt(value))}</text>')
    n = len(buckets)
    every = max(1, math.ceil(n / 8))
    plot_w = width - left - 8
    for i in range(0, n, every):
        x = left + plot_w * i / n
        out.append(f'<text x="{x:.1f}" y="{height - 6}">{_e(_time(buckets[i], step_s))}</text>')
    return out


def bar_chart(points: list[dict], step_s: int) -> str:
    """Traces per step, the failed ones stacked in red."""
    width, height, left, bottom, top = 560, 200, 48, 22, 8
    if not any(p["count"] for p in points):
        return '<p class="empty">No traces in this period.</p>'
    y_max = max(p["count"] for p in points) or 1
    plot_w, plot_h = width - left - 8, height - bottom - top
    bw = plot_w / len(points)
    body = _axes(width, height, left, bottom, top, y_max, lambda v: _num(v), [p["bucket"] for p in points], step_s)
    for i, p in enumerate(points):
        if not p["count"]:
            continue
        h = plot_h * p["count"] / y_max
        he = plot_h * p["error_count"] / y_max
        x = left + i * bw
        body.append(f'<rect x="{x + 0.5:.1f}" y="{top + plot_h - h:.1f}" width="{max(1, bw - 1):.1f}" '
                    f'height="{h:.1f}" fill="{OK}"><title>{_e(_time(p["bucket"], 60))}: {p["count"]} traces, '
                    f'{p["error_count"]} failed</title></rect>')
        if he:
            body.append(f'<rect x="{x + 0.5:.1f}" y="{top + plot_h - he:.1f}" width="{max(1, bw - 1):.1f}" '
                        f'height="{he:.1f}" fill="{ERR}"/>')
    return _svg(width, height, body, "Traces per interval, failed ones in red", "throughput")


def line_chart(points: list[dict], step_s: int) -> str:
    """Trace latency p50 / p95 / p99 per step (log scale: one slow spike does not flatten the rest)."""
    width, height, left, bottom, top = 560, 200, 56, 22, 8
    values = [p[k] for p in points for k in LINE_COLOURS if p.get(k)]
    if not values:
        return '<p class="empty">No latency figures in this period.</p>'
    lo, hi = math.log10(max(min(values), 1e-3)), math.log10(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    plot_w, plot_h = width - left - 8, height - bottom - top
    body = []
    for i in range(5):
        value = 10 ** (lo + (hi - lo) * i / 4)
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line x1="{left}" x2="{width - 8}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        body.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_e(_ms(value))}</text>')
    n = len(points)
    every = max(1, math.ceil(n / 8))
    for i in range(0, n, every):
        body.append(f'<text x="{left + plot_w * i / n:.1f}" y="{height - 6}">{_e(_time(points[i]["bucket"], step_s))}</text>')
    for key, colour in LINE_COLOURS.items():
        coords = [(left + plot_w * (i + 0.5) / n, top + plot_h - plot_h * (math.log10(max(p[key], 1e-3)) - lo) / (hi - lo))
                  for i, p in enumerate(points) if p.get(key)]
        if coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            body.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8" data-series="{key}"/>')
            if len(coords) <= 40:  # sparse series: a dot per point, so a lone point still shows
                body += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in coords]
    return _svg(width, height, body, "Trace latency p50, p95 and p99 per interval", "latency")


def _mix(a: str, b: str, t: float) -> str:
    pa = [int(a[i:i + 2], 16) for i in (1, 3, 5)]
    pb = [int(b[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * t):02x}" for x, y in zip(pa, pb))


def heatmap_chart(data: dict) -> str:
    """The latency heat map of the period: the dashboard's colours, rows fastest at the bottom."""
    cells, rows, cols = data.get("cells") or [], data.get("rows") or [], data.get("columns") or []
    if not cells:
        return '<p class="empty">No traces in this period.</p>'
    width, left, bottom, top = 1100, 64, 22, 6
    rh = 14
    height = top + bottom + rh * len(rows)
    cw = (width - left - 8) / len(cols)
    index = {r["row"]: i for i, r in enumerate(rows)}
    peak = max(1, data.get("max_cell") or 1)
    body = []
    for c, r, n, e in cells:
        i = index[r]
        t = math.log1p(n) / math.log1p(peak) if peak > 1 else 1.0
        colour = _mix("#fcbba1", "#a50f15", t) if e else _mix("#c6dbef", "#08306b", t)
        y = top + rh * (len(rows) - 1 - i)
        body.append(f'<rect x="{left + c * cw + 0.5:.1f}" y="{y + 0.5:.1f}" width="{max(1, cw - 1):.1f}" '
                    f'height="{rh - 1}" fill="{colour}" class="cell"><title>{_e(cols[c]["time"])} · '
                    f'{_e(_ms(rows[i]["min_ms"]))}–{_e(_ms(rows[i]["max_ms"]))}: {n} traces, {e} failed</title></rect>')
    for i, row in enumerate(rows):
        if i % 2 == 0:
            body.append(f'<text x="{left - 4}" y="{top + rh * (len(rows) - i) - 3}" text-anchor="end">'
                        f'{_e(_ms(row["min_ms"]))}</text>')
    every = max(1, math.ceil(len(cols) / 12))
    for c in range(0, len(cols), every):
        body.append(f'<text x="{left + c * cw:.1f}" y="{height - 6}">'
                    f'{_e(_time(cols[c]["start_ns"] // 1_000_000_000, data["step_s"]))}</text>')
    return _svg(width, height, body, "Latency heat map: traces by start time and duration", "heatmap")


def dependency_map(edges: list[dict]) -> str:
    """Services on a circle, an arrow per caller → callee: width by calls, red by error rate."""
    if not edges:
        return '<p class="empty">No calls between services in this period.</p>'
    services = sorted({e["caller"] for e in edges} | {e["callee"] for e in edges})
    width, height = 720, max(260, 60 * min(len(services), 8))
    cx, cy, radius = width / 2, height / 2, min(width, height) / 2 - 50
    pos = {s: (cx + radius * math.cos(2 * math.pi * i / len(services) - math.pi / 2),
               cy + radius * math.sin(2 * math.pi * i / len(services) - math.pi / 2)) for i, s in enumerate(services)}
    most = max(e["calls"] for e in edges)
    body = ['<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" '
            'markerUnits="userSpaceOnUse" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#5d6678"/></marker></defs>']
    for e in edges:
        (x1, y1), (x2, y2) = pos[e["caller"]], pos[e["callee"]]
        if e["caller"] == e["callee"]:
            continue
        length = math.hypot(x2 - x1, y2 - y1) or 1
        sx, sy = x1 + (x2 - x1) * 22 / length, y1 + (y2 - y1) * 22 / length
        ex, ey = x2 - (x2 - x1) * 24 / length, y2 - (y2 - y1) * 24 / length
        colour = _mix("#8c96a8", "#c62828", min(1.0, e["error_rate"] * 5))
        w = 1 + 4 * e["calls"] / most
        body.append(f'<line x1="{sx:.1f}" y1="{sy:.1f}" x2="{ex:.1f}" y2="{ey:.1f}" stroke="{colour}" '
                    f'stroke-width="{w:.1f}" marker-end="url(#arrow)" class="edge"><title>{_e(e["caller"])} → '
                    f'{_e(e["callee"])} ({_e(e["kind"])}): {e["calls"]} calls, {e["errors"]} errors, avg '
                    f'{_e(_ms(e["avg_ms"]))}</title></line>')
    for s, (x, y) in pos.items():
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="20" fill="#fff" stroke="{OK}" stroke-width="2" class="node"/>')
        body.append(f'<text x="{x:.1f}" y="{y + 34:.1f}" text-anchor="middle" style="fill:#1d2330">{_e(s)}</text>')
    return _svg(width, height, body, "Service dependency map", "dependencies")


def hbar_chart(items: list[tuple[str, float]], fmt, chart: str, label: str) -> str:
    """Horizontal bars, largest first (cost per model, calls per agent)."""
    items = [(name, value) for name, value in items if value > 0][:12]
    if not items:
        return '<p class="empty">Nothing to show.</p>'
    width, left, rh = 560, 170, 22
    height = rh * len(items) + 8
    most = max(v for _, v in items)
    body = []
    for i, (name, value) in enumerate(items):
        w = (width - left - 90) * value / most
        y = 4 + i * rh
        body.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{_e(name[:28] or "(unknown)")}</text>')
        body.append(f'<rect x="{left}" y="{y + 3}" width="{max(1, w):.1f}" height="{rh - 6}" fill="{ACCENT}"/>')
        body.append(f'<text x="{left + w + 6:.1f}" y="{y + 14}">{_e(fmt(value))}</text>')
    return _svg(width, height, body, label, chart)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    head = "".join(f'<th{" class=num" if i in numeric else ""}>{_e(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{cell}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _trace_ref(trace: dict, link_base: str | None) -> str:
    text = f'<code>{_e(trace["trace_id"][:16])}</code> {_e(_ms(trace["duration_ms"]))}'
    if link_base:
        return f'<a href="{_e(link_base.rstrip("/"))}/trace/{_e(trace["trace_id"])}">{text}</a>'
    return f'<span title="{_e(trace["trace_id"])}">{text}</span>'


def _examples(op: dict, link_base: str | None) -> str:
    return "<br>".join(_trace_ref(t, link_base) for t in op.get("examples") or []) or '<span class="muted">–</span>'


def render_report(data: dict[str, Any], link_base: str | None = None) -> str:
    """The report page. ``link_base`` (the dashboard's URL) turns example trace ids into links."""
    red = data["red"]
    step = data["step_s"]
    parts = [f"<h1>Contrail report</h1><p class=muted>{_e(data['start'])} – {_e(data['end'])} · "
             f"generated {_e(data['generated'])} · one point = {_e(_step_text(step))}</p>"]
    cards = [("Traces", _num(red["traces"])), ("Failed", f'{_num(red["errors"])} ({_pct(red["error_rate"])})'),
             ("Per minute", _num(red["throughput_per_min"], 2)), ("p50", _ms(red["p50_ms"])),
             ("p95", _ms(red["p95_ms"])), ("p99", _ms(red["p99_ms"]))]
    parts.append('<section id="red"><h2>Requests, errors, duration</h2><div class="cards">' +
                 "".join(f'<div class="card"><span class=muted>{_e(k)}</span><b>{_e(v)}</b></div>' for k, v in cards) +
                 '</div><div class="charts">'
                 f'<figure>{bar_chart(red["series"], step)}<figcaption>Traces per interval '
                 '(failed in red)</figcaption></figure>'
                 f'<figure>{line_chart(red["series"], step)}<figcaption><span class="legend">' +
                 "".join(f'<span style="--c:{c}">{k[:3]}</span>' for k, c in LINE_COLOURS.items()) +
                 '</span> trace duration, log scale</figcaption></figure></div>')
    entry = sorted(red["entry_points"], key=lambda o: -o["count"])[:15]
    if entry:
        parts.append("<h3>Entry points</h3>" + _table(
            ["Service", "Operation", "Traces", "Failed", "p50", "p95", "p99"],
            [(_e(o["service"]), _e(o["operation"]), _num(o["count"]), _pct(o["error_rate"]), _ms(o["p50_ms"]),
              _ms(o["p95_ms"]), _ms(o["p99_ms"])) for o in entry], numeric=(2, 3, 4, 5, 6)))
    parts.append("</section>")
    parts.append(f'<section id="heatmap"><h2>Latency heat map</h2>{heatmap_chart(data["heatmap"])}'
                 '<p class="small muted">Traces by start time (columns) and duration (rows); red cells hold failed '
                 'traces; darker = more.</p></section>')
    parts.append('<section id="slowest"><h2>Slowest operations (p95)</h2>' + (_table(
        ["Service", "Operation", "Calls", "p50", "p95", "p99", "Slowest traces"],
        [(_e(o["service"]), _e(o["operation"]), _num(o["count"]), _ms(o["p50_ms"]), _ms(o["p95_ms"]),
          _ms(o["p99_ms"]), _examples(o, link_base)) for o in data["slowest"]], numeric=(2, 3, 4, 5))
        if data["slowest"] else '<p class="empty">No operations in this period.</p>') + "</section>")
    parts.append('<section id="failing"><h2>Most failing operations</h2>' + (_table(
        ["Service", "Operation", "Calls", "Errors", "Error rate", "Failed traces"],
        [(_e(o["service"]), _e(o["operation"]), _num(o["count"]), f'<span class=err>{_num(o["error_count"])}</span>',
          _pct(o["error_rate"]), _examples(o, link_base)) for o in data["failing"]], numeric=(2, 3, 4))
        if data["failing"] else '<p class="empty">No failed operations in this period.</p>') + "</section>")
    edges = data["dependencies"]
    parts.append(f'<section id="dependencies"><h2>Dependency map</h2>{dependency_map(edges)}' + (_table(
        ["Caller", "Callee", "Kind", "Calls", "Errors", "Avg"],
        [(_e(e["caller"]), _e(e["callee"]), _e(e["kind"]), _num(e["calls"]), _num(e["errors"]), _ms(e["avg_ms"]))
         for e in sorted(edges, key=lambda e: -e["calls"])[:30]], numeric=(3, 4, 5)) if edges else "") + "</section>")
    hints, windows = data["bottlenecks"], data["bottleneck_windows"]
    parts.append(f'<section id="bottlenecks"><h2>Bottleneck hints</h2><p class="small muted">The last '
                 f'{_e(_step_text(windows["recent_s"]))} against the {_e(_step_text(windows["baseline_s"]))} before.</p>' +
                 (_table(["Service", "Operation", "Why", "Recent p95", "Baseline p95", "Recent errors", "Baseline errors"],
                         [(_e(h["service"]), _e(h["operation"]), _e(", ".join(h["flags"])), _ms(h["recent_p95_ms"]),
                           _ms(h["baseline_p95_ms"]), _pct(h["recent_error_rate"]), _pct(h["baseline_error_rate"]))
                          for h in hints], numeric=(3, 4, 5, 6))
                  if hints else '<p class="empty">No operation departs from its baseline.</p>') + "</section>")
    parts.append(_ai_section(data.get("ai")))
    return ("<!doctype html><html lang=en><head><meta charset=utf-8>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Contrail report {_e(data['start'])} – {_e(data['end'])}</title><style>{CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>")


def _ai_section(ai: dict | None) -> str:
    if not ai or not ai["totals"].get("calls"):
        return '<section id="ai"><h2>AI usage and cost</h2><p class="empty">No LLM calls in this period.</p></section>'
    t = ai["totals"]
    cards = [("LLM calls", _num(t["calls"])), ("Failed", _num(t["errors"])), ("Input tokens", _num(t["input_tokens"])),
             ("Output tokens", _num(t["output_tokens"])), ("Cost", f'${t["cost"]:,.4f}')]
    unpriced = ai.get("unpriced_models") or []
    return ('<section id="ai"><h2>AI usage and cost</h2><div class="cards">' +
            "".join(f'<div class="card"><span class=muted>{_e(k)}</span><b>{_e(v)}</b></div>' for k, v in cards) +
            '</div><div class="charts">'
            f'<figure>{hbar_chart([(g["key"], g["cost"]) for g in ai["models"]], lambda v: f"${v:,.4f}", "cost", "Cost per model")}'
            '<figcaption>Cost per model</figcaption></figure>'
            f'<figure>{hbar_chart([(g["key"], g["input_tokens"] + g["output_tokens"]) for g in ai["models"]], _num, "tokens", "Tokens per model")}'
            '<figcaption>Tokens per model (input + output)</figcaption></figure></div>' +
            _table(["Model", "Calls", "Failed", "Input tokens", "Output tokens", "Cost"],
                   [(_e(g["key"] or "(unknown)"), _num(g["calls"]), _num(g["errors"]), _num(g["input_tokens"]),
                     _num(g["output_tokens"]), f'${g["cost"]:,.4f}') for g in ai["models"]], numeric=(1, 2, 3, 4, 5)) +
            (f'<p class="small muted">Without a price: {_e(", ".join(unpriced))} (add them to the price table, '
             f'{_e(ai.get("price_source"))}).</p>' if unpriced else "") +
            "</section>")


def _step_text(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds > 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds // 60} min"
