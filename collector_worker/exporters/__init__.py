"""Trace exports: the API trace dict rendered as JSON, OTLP JSON, Mermaid or compact text.

Every exporter takes the exact ``GET /api/v1/traces/<id>`` dict (see
docs/architecture.md), so the API and the CLI render the same bytes.
"""

from __future__ import annotations

from typing import Any, Callable

FORMATS = ("json", "otlp", "mermaid", "text")
DIAGRAMS = ("sequence", "flowchart")  # Mermaid: calls between services, or the span tree

_MIMETYPES = {
    "json": "application/json",
    "otlp": "application/json",
    "mermaid": "text/vnd.mermaid; charset=utf-8",
    "text": "text/plain; charset=utf-8",
}


def _renderer(fmt: str, diagram: str) -> Callable[..., str]:
    if fmt == "mermaid" and diagram == "flowchart":
        from .mermaid_flowchart import render
    elif fmt == "json":
        from .json_export import render
    elif fmt == "otlp":
        from .otlp_json import render
    elif fmt == "mermaid":
        from .mermaid import render
    else:
        from .distiller import render
    return render


def export_trace(trace: dict, fmt: str, budget: int | None = None, budget_unit: str = "chars",
                 diagram: str = "sequence") -> tuple[str, str]:
    """Render ``trace`` in ``fmt`` (json | otlp | mermaid | text); return (mimetype, body).

    ``budget`` bounds the text distiller's output size, in ``budget_unit``
    (``chars`` or ``tokens``, a token counted as four characters); ``diagram``
    picks the Mermaid diagram (``sequence`` of calls between services, or
    ``flowchart`` of the span tree); other formats ignore both. An unknown
    format or diagram raises ValueError.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(FORMATS)}")
    if budget is not None and (isinstance(budget, bool) or int(budget) <= 0):
        raise ValueError("budget must be a positive integer")
    if budget_unit not in ("chars", "tokens"):
        raise ValueError("budget_unit must be chars or tokens")
    if diagram not in DIAGRAMS:
        raise ValueError(f"unknown diagram {diagram!r}: use one of {', '.join(DIAGRAMS)}")
    render = _renderer(fmt, diagram)
    if fmt == "text":
        body = render(trace, budget=budget, budget_unit=budget_unit)
    else:
        body = render(trace)
    return _MIMETYPES[fmt], body


def timeline_events(trace: dict) -> list[dict[str, Any]]:
    """The trace as ordered events: span starts and ends, span events, errors.

    Each item is ``{time_ns, offset_ms, type: span_start|span_end|event|error,
    span_id, service, name, ...}``, sorted by time (starts before ends at the
    same instant) so a reader can replay what happened in order.
    """
    spans = trace.get("spans") or []
    origin = min((int(s.get("start_ns") or 0) for s in spans), default=0)
    events: list[tuple[int, int, dict[str, Any]]] = []
    for seq, span in enumerate(spans):
        base = {"span_id": span.get("span_id"), "service": span.get("service"), "name": span.get("name")}
        start, end = int(span.get("start_ns") or 0), int(span.get("end_ns") or 0)
        events.append((start, 0, {"type": "span_start", "time_ns": start, **base,
                                   "parent_span_id": span.get("parent_span_id"), "kind": span.get("kind")}))
        for event in span.get("events") or []:
            when = int(event.get("time_ns") or start)
            kind = "error" if event.get("name") == "exception" else "event"
            item = {"type": kind, "time_ns": when, **base, "event": event.get("name"),
                    "attributes": event.get("attributes") or {}}
            events.append((when, 1, item))
        end_item = {"type": "span_end", "time_ns": end, **base, "status": span.get("status"),
                    "duration_ms": span.get("duration_ms")}
        if span.get("status") == "error":
            end_item["status_message"] = span.get("status_message")
        events.append((end, 2, end_item))
    events.sort(key=lambda item: (item[0], item[1]))
    out = []
    for when, _order, item in events:
        item["offset_ms"] = round((when - origin) / 1e6, 3)
        out.append(item)
    return out
