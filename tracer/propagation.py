"""W3C trace context and baggage in and out of header carriers.

HTTP frameworks hand us case-insensitive header maps, Celery hands us plain
dicts whose values may be bytes, lists or anything a client library put
there. Extraction is therefore tolerant and never raises: a carrier we cannot
read simply has no parent.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Iterable, Mapping

from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from . import otel_internals

logger = logging.getLogger(__name__)

FIELDS = ("traceparent", "tracestate", "baggage")
PROPAGATOR = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
_MAX_VALUE = 8192  # longer header values are not trace context; refuse them early


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (int, float, bool)):
        return str(value)
    return None


class TolerantGetter(Getter):
    """Read header values from dicts, header objects or Celery message headers."""

    def get(self, carrier: Any, key: str) -> list[str] | None:
        try:
            value = _lookup(carrier, key)
        except Exception:  # a carrier that misbehaves on lookup has no context
            return None
        if value is None:
            return None
        values = value if isinstance(value, (list, tuple)) else [value]
        # a header value has no whitespace around it (RFC 9110, 5.6.3): an HTTP server strips it, a message
        # carrier may keep it, and opentelemetry-api before 1.45 then drops the whole tracestate
        texts = [t.strip(" \t") for t in (_text(v) for v in values) if t is not None and len(t) <= _MAX_VALUE]
        return texts or None

    def keys(self, carrier: Any) -> list[str]:
        try:
            return [k for k in (_text(k) for k in carrier.keys()) if k is not None]
        except Exception:
            return []


def _lookup(carrier: Any, key: str) -> Any:
    getter = getattr(carrier, "get", None)
    if getter is None:
        return None
    value = getter(key)
    if value is None:
        value = getter(key.encode())
    if value is None and hasattr(carrier, "items"):
        for name, candidate in carrier.items():
            text = _text(name)
            if text is not None and text.lower() == key:
                return candidate
    return value


class DictSetter(Setter):
    def set(self, carrier: Any, key: str, value: str) -> None:
        carrier[key] = value


GETTER = TolerantGetter()
SETTER = DictSetter()


def inject(carrier: Any = None, context: Context | None = None) -> Any:
    """Write traceparent/tracestate/baggage of ``context`` (default: current) into ``carrier``; return it."""
    if carrier is None:
        carrier = {}
    try:
        PROPAGATOR.inject(carrier, context=context, setter=SETTER)
    except Exception as exc:  # a read-only or odd carrier must not break the caller
        logger.debug("contrail: cannot inject trace context into %s: %s", type(carrier).__name__, exc)
    return carrier


def extract(carrier: Any) -> Context | None:
    """Return a Context whose current span is the remote parent in ``carrier``, or None.

    Missing, malformed or invalid trace context yields None; nothing raises. Two ``traceparent`` values
    (a repeated header) are invalid, as W3C Trace Context says: which one is the parent cannot be known.
    Repeated ``tracestate`` values are combined in order; a ``tracestate`` with an invalid member, a
    duplicate key or more than 32 members is discarded whole (the trace itself goes on).
    """
    if carrier is None:
        return None
    try:
        if len(GETTER.get(carrier, "traceparent") or ()) > 1:
            return None
        context = PROPAGATOR.extract(carrier, context=Context(), getter=GETTER)
        if not trace.get_current_span(context).get_span_context().is_valid:
            return None
        return context
    except Exception:
        return None


def carrier_fields(carrier: Any) -> Iterable[str]:
    """The propagation fields present in ``carrier`` (for diagnostics)."""
    return [f for f in FIELDS if GETTER.get(carrier, f)]


# --------------------------------------------------------------------------- the common traceparent, directly

# The plain version-00 traceparent every Contrail publisher writes; anything else takes the propagator.
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_FLAGS = {f"{flags:02x}": TraceFlags(flags) for flags in range(4)}  # sampled, and W3C level 2's random-id bit


def format_traceparent(trace_id: int, span_id: int, flags: int) -> str:
    """A version-00 ``traceparent`` value, formatted as OpenTelemetry's TraceContext propagator does."""
    return f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"


def parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context of a plain version-00 ``traceparent``; None when it is not one.

    The tracer's one traceparent parser, for the messages its own publishers
    wrote (what :func:`format_traceparent` makes); :func:`extract` reads
    everything else. All-zero ids parse, into a span context that is not
    valid (the caller treats it as garbage).
    """
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    trace_hex, span_hex, flags_hex = match.groups()
    flags = _FLAGS.get(flags_hex) or TraceFlags(int(flags_hex, 16))
    return otel_internals.span_context(int(trace_hex, 16), int(span_hex, 16), True, flags)


def extract_parent(carrier: Mapping[str, Any]) -> tuple[Context | None, SpanContext | None]:
    """``(context, its span's SpanContext)`` from a dict-like ``carrier``, or ``(None, None)``.

    A plain version-00 traceparent without tracestate or baggage is parsed by
    :func:`parse_traceparent`; everything else goes through :func:`extract`,
    which gives the same answer more slowly.
    """
    value = carrier.get("traceparent")
    if not value:
        return None, None
    if isinstance(value, str) and not carrier.get("tracestate") and not carrier.get("baggage"):
        remote = parse_traceparent(value)
        if remote is not None:
            if not remote.is_valid:
                return None, None
            return trace.set_span_in_context(NonRecordingSpan(remote), Context()), remote
    context = extract(carrier)
    if context is None:
        return None, None
    return context, trace.get_current_span(context).get_span_context()
