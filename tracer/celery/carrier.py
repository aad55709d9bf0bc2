"""Contrail's headers in a task message: W3C context, publish time and chord links, in and out.

The publish handler writes them into the message headers; the worker reads
them back from whatever Celery hands it (protocol 2 request attributes,
protocol 1 ``request.headers``, a message's headers). Reading never raises:
garbage means no parent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping  # isinstance against typing.Mapping costs three times as much
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, TraceFlags

from .. import otel_internals, propagation

PUBLISHED_HEADER = "contrail_published_ns"
LINKS_HEADER = "contrail_links"
PROPAGATION_KEYS = ("traceparent", "tracestate", "baggage")
CARRIER_KEYS = PROPAGATION_KEYS + (PUBLISHED_HEADER, LINKS_HEADER)


def inject(carrier: dict, span: Any, current: Any = None) -> None:
    """W3C headers for ``span`` (a span or a pending one; baggage from ``current``, the current context).

    Every publish pays for this, so traceparent/tracestate are formatted
    directly; only a message that carries baggage goes through the full
    propagator.
    """
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return
    if otel_internals.has_baggage(current):
        propagation.inject(carrier, trace.set_span_in_context(NonRecordingSpan(span_context)))
        return
    carrier["traceparent"] = propagation.format_traceparent(span_context.trace_id, span_context.span_id,
                                                            span_context.trace_flags)
    if span_context.trace_state:
        carrier["tracestate"] = span_context.trace_state.to_header()


def extract(carrier: Mapping[str, Any]) -> Any:
    """The remote context in ``carrier``, or None (no header or garbage)."""
    return propagation.extract_parent(carrier)[0]


def request_carrier(request: Any) -> dict[str, Any]:
    """Contrail's headers from a task request, whichever protocol delivered it.

    Protocol 2 merges message headers into the request's attributes; protocol 1
    keeps them in ``request.headers``; revoke and failure signals in the
    worker's parent hand over a ``Context`` built the same way.
    """
    found: dict[str, Any] = {}
    state = getattr(request, "__dict__", None)
    if type(state) is dict and not isinstance(request, Mapping):
        # A task request (celery's Context): plain dicts, no attribute lookups that miss. Same answer
        # as the general path below: the nested headers first, then the request's own attributes.
        nested = state.get("headers")
        if nested is None or type(nested) is dict:
            for key in CARRIER_KEYS:
                value = nested.get(key) if nested else None
                if value is None:
                    value = state.get(key)
                if value is not None:
                    found[key] = value
            return found
    nested = getattr(request, "headers", None)
    sources = [nested] if isinstance(nested, Mapping) else []
    if isinstance(request, Mapping):
        sources.append(request)
    for source in sources:
        for key in CARRIER_KEYS:
            if key in source and source[key] is not None:
                found[key] = source[key]
    for key in CARRIER_KEYS:
        if key not in found:
            value = getattr(request, key, None)
            if value is not None:
                found[key] = value
    return found


def encode_links(links: list) -> str:
    """The ``contrail_links`` header: ``[[trace_id, span_id], ...]`` as JSON."""
    return json.dumps(links)


def decode_links(value: Any) -> list[Link]:
    """Links carried as ``[[trace_id, span_id], ...]`` (JSON or a list); garbage is ignored."""
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return []
    links = []
    for item in value if isinstance(value, list) else ():
        try:
            trace_id, span_id = int(item[0], 16), int(item[1], 16)
        except (TypeError, ValueError, IndexError):
            continue
        if trace_id and span_id:
            links.append(Link(SpanContext(trace_id, span_id, is_remote=True,
                                          trace_flags=TraceFlags(TraceFlags.SAMPLED)),
                              {"celery.link": "chord_header"}))
    return links


def queue_wait(published: Any, start_ns: int) -> tuple[float, int] | None:
    """``(queue wait in ms, published ns)`` from the ``contrail_published_ns`` header, or None."""
    try:
        published_ns = int(published) if published is not None else None
    except (TypeError, ValueError):
        return None
    if not published_ns:
        return None
    return max(0.0, (start_ns - published_ns) / 1e6), published_ns
