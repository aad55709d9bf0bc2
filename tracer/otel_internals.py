"""The OpenTelemetry internals Contrail's hot paths use: here, and nowhere else in the tree.

The Celery handlers start two spans on the path a task round trip waits on,
and the exporter reads every finished span; public API alone costs a traced
Celery round trip several percent more (docs/performance.md, Celery). What
this module reads or writes below the public API:

* the context keys of the current span and of baggage (a context holding only
  a span, read without ``get_current_span``'s checks);
* ``SpanContext`` built as the tuple its ``__new__`` makes, without the call;
* an SDK span's attribute dict, event list, lock and start time (attributes and
  events the tracer built itself, stored without re-validation);
* an SDK tracer's limits, scope, metrics hook and enabled flag, and the
  ``_Span`` constructor (:class:`SpanFactory`: span objects cloned from a
  template the SDK built);
* a finished span's fields (read directly, not through twelve property calls).

Every internal is checked when this module is imported (the span factory: when
it is made for a tracer) against what the public API gives; when the shape
differs (another SDK version), the public path is taken: the same spans,
slower. ``tests/tracer/test_otel_internals.py`` forces every fallback and
compares the spans, and checks that no other module touches an underscore
attribute of opentelemetry, celery or kombu.
"""

from __future__ import annotations

import threading
from collections import deque
from operator import attrgetter
from typing import Any, Mapping, Sequence

from opentelemetry import baggage as baggage_api
from opentelemetry import context as context_api
from opentelemetry import trace as trace_api
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

try:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event as SdkEvent
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace import Tracer as SdkTracer
    from opentelemetry.sdk.trace import _Span
    from opentelemetry.sdk.trace.sampling import Decision
    from opentelemetry.sdk.util import BoundedList
except ImportError:  # pragma: no cover - the SDK is a dependency of tracer
    BoundedAttributes = Resource = SdkEvent = ReadableSpan = SdkTracer = _Span = BoundedList = Decision = None
try:
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics
except ImportError:  # pragma: no cover - an SDK without internal metrics
    NoOpTracerMetrics = None
try:
    from opentelemetry.baggage import _BAGGAGE_KEY
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # pragma: no cover - another API version
    _BAGGAGE_KEY = _SPAN_KEY = None

Context = context_api.Context
_ATTRIBUTE_TYPES = (str, bool, int, float)
_MAX_TRACE_ID = (1 << 128) - 1
_MAX_SPAN_ID = (1 << 64) - 1


# --------------------------------------------------------------------------- context keys


def _context_keys_work() -> bool:
    """Whether a context holding a span or baggage is the dict ``{key: value}`` the public API makes."""
    if _SPAN_KEY is None or _BAGGAGE_KEY is None:
        return False
    try:
        span = NonRecordingSpan(SpanContext(1, 2, True))
        made = trace_api.set_span_in_context(span, Context())
        return (type(made) is Context and dict(made) == {_SPAN_KEY: span}
                and trace_api.get_current_span(Context({_SPAN_KEY: span})) is span
                and baggage_api.set_baggage("k", "v", Context()).get(_BAGGAGE_KEY) == {"k": "v"})
    except Exception:  # pragma: no cover - an API whose contexts are built otherwise
        return False


CONTEXT_KEYS = _context_keys_work()


def _context_with_span_public(span: Any) -> Any:
    return trace_api.set_span_in_context(span, Context())


def _context_with_span_direct(span: Any) -> Any:
    return Context({_SPAN_KEY: span})


def _current_span_public(context: Any) -> Any:
    return trace_api.get_current_span(context)


def _current_span_direct(context: Any) -> Any:
    if type(context) is Context:
        return context.get(_SPAN_KEY)  # None when there is none: the caller treats it as no parent
    return trace_api.get_current_span(context)


def _has_baggage_public(context: Any) -> bool:
    return bool(baggage_api.get_all(context))


def _has_baggage_direct(context: Any) -> bool:
    if type(context) is Context:
        return bool(context.get(_BAGGAGE_KEY))
    return bool(baggage_api.get_all(context))


def use_context_keys(direct: bool) -> None:
    """Read contexts through their keys (``direct``) or through the public functions (tests force this)."""
    global context_with_span, current_span, has_baggage
    direct = direct and CONTEXT_KEYS
    context_with_span = _context_with_span_direct if direct else _context_with_span_public
    current_span = _current_span_direct if direct else _current_span_public
    has_baggage = _has_baggage_direct if direct else _has_baggage_public


context_with_span = current_span = has_baggage = None  # set just below
use_context_keys(True)
context_with_span.__doc__ = "``trace.set_span_in_context(span, Context())``."
current_span.__doc__ = "``trace.get_current_span(context)``; None for a plain context without a span."
has_baggage.__doc__ = "``bool(baggage.get_all(context))``, without the copy."


# --------------------------------------------------------------------------- SpanContext


def _span_context_is_plain_tuple() -> bool:
    """Whether ``SpanContext`` is the tuple ``(trace_id, span_id, is_remote, flags, state, is_valid)``.

    Its Python ``__new__`` costs microseconds on the cold caches of a task round trip.
    """
    state = getattr(trace_api, "DEFAULT_TRACE_STATE", None)
    if state is None:
        return False
    try:
        for args in ((1, 2, True, TraceFlags(TraceFlags.SAMPLED), state),
                     (_MAX_TRACE_ID, _MAX_SPAN_ID, False, TraceFlags(0), trace_api.TraceState([("k", "v")]))):
            built, made = SpanContext(*args), tuple.__new__(SpanContext, (*args, True))
            if (type(made) is not type(built) or tuple(made) != tuple(built) or made.is_valid is not built.is_valid
                    or (made.trace_id, made.span_id, made.is_remote, made.trace_flags, made.trace_state)
                    != (built.trace_id, built.span_id, built.is_remote, built.trace_flags, built.trace_state)):
                return False
        return True
    except Exception:  # pragma: no cover - an API whose SpanContext is built otherwise
        return False


DIRECT_SPAN_CONTEXT = _span_context_is_plain_tuple()
_DEFAULT_TRACE_STATE = getattr(trace_api, "DEFAULT_TRACE_STATE", None)
_new_tuple = tuple.__new__


def span_context(trace_id: int, span_id: int, is_remote: bool, flags: Any, trace_state: Any = None) -> SpanContext:
    """``SpanContext(trace_id, span_id, is_remote, flags, trace_state)``."""
    if DIRECT_SPAN_CONTEXT:
        return _new_tuple(SpanContext, (trace_id, span_id, is_remote, flags,
                                        _DEFAULT_TRACE_STATE if trace_state is None else trace_state,
                                        0 < trace_id <= _MAX_TRACE_ID and 0 < span_id <= _MAX_SPAN_ID))
    return SpanContext(trace_id, span_id, is_remote, flags, trace_state)


# --------------------------------------------------------------------------- writing to a live span


def _span_fields_work() -> bool:
    """Whether an SDK span keeps its attributes, events and lock as :func:`set_own_attributes` expects."""
    if _Span is None or SdkEvent is None:
        return False
    try:
        span = _Span("probe", SpanContext(1, 2, False))
        bounded, events = span._attributes, span._events
        return (type(bounded) is BoundedAttributes and type(bounded._dict) is dict and bounded._immutable is False
                and hasattr(bounded, "max_value_len") and hasattr(bounded, "maxlen") and span._end_time is None
                and type(events) is BoundedList and type(events._dq) is deque and callable(span._add_event)
                and span._lock is not None)
    except Exception:  # pragma: no cover - another SDK version
        return False


SPAN_FIELDS = _span_fields_work()


def set_own_attributes(span: Any, attrs: Mapping[str, Any]) -> None:
    """``span.set_attributes(attrs)`` for attributes the tracer built itself.

    Every key is a non-empty str and every value a str, bool, int or float, so
    the SDK's per-value validation (a large part of a span's cost) can be
    skipped: on a live SDK span the values go straight into its attribute
    dict, truncated to the provider's ``max_attribute_length`` and under the
    span's lock, exactly what ``set_attributes`` would store. Anything else
    (a full attribute dict, a value of another type, an ended or non-recording
    span) goes through ``set_attributes``.
    """
    bounded = getattr(span, "_attributes", None) if SPAN_FIELDS else None
    inner = getattr(bounded, "_dict", None)
    lock = getattr(span, "_lock", None)
    maxlen = getattr(bounded, "maxlen", 0)
    if (type(inner) is not dict or lock is None or getattr(bounded, "_immutable", True) is not False
            or (maxlen is not None and (type(maxlen) is not int or len(inner) + len(attrs) > maxlen))):
        span.set_attributes(attrs)
        return
    limit = getattr(bounded, "max_value_len", None)
    for value in attrs.values():
        if type(value) not in _ATTRIBUTE_TYPES:
            span.set_attributes(attrs)
            return
        if limit is not None and type(value) is str and len(value) > limit:
            attrs = {k: v[:limit] if type(v) is str else v for k, v in attrs.items()}
            break
    with lock:
        if getattr(span, "_end_time", 0) is not None:  # ended: let the SDK warn as it always does
            ended = True
        else:
            ended = False
            for key, value in attrs.items():
                if key in inner:  # the SDK moves a re-set key to the end
                    del inner[key]
                inner[key] = value
    if ended:
        span.set_attributes(attrs)


def add_event(span: Any, event: Any) -> None:
    """Record an SDK ``Event`` whose attributes the tracer built (numbers, strings) as it is."""
    add = getattr(span, "_add_event", None) if SPAN_FIELDS else None
    if add is None:
        span.add_event(event.name, event.attributes, timestamp=event.timestamp)
    else:
        add(event)


def add_own_event(span: Any, name: str, attrs: dict[str, Any], timestamp: int) -> None:
    """``span.add_event(name, attrs, timestamp=timestamp)`` for attributes the tracer built (no re-validation)."""
    if SdkEvent is None:
        span.add_event(name, attrs, timestamp=timestamp)
    else:
        add_event(span, SdkEvent(name, attrs, timestamp))


def add_first_event(span: Any, name: str, attrs: dict[str, Any], timestamp: int) -> None:
    """:func:`add_own_event`, but placed first among the span's events when it is an SDK span with room.

    For an event that happened when the span started, recorded after what the
    code inside the span added.
    """
    events = getattr(getattr(span, "_events", None), "_dq", None) if SPAN_FIELDS else None
    lock = getattr(span, "_lock", None)
    if type(events) is deque and lock is not None and events.maxlen is not None:
        with lock:
            if span._end_time is None and len(events) < events.maxlen:
                events.appendleft(SdkEvent(name, attrs, timestamp))
                return
    add_own_event(span, name, attrs, timestamp)


# --------------------------------------------------------------------------- reading a finished span

_PUBLIC_FIELDS = ("context", "parent", "resource", "status", "instrumentation_scope", "name", "kind",
                  "start_time", "end_time", "attributes", "events", "links")
_read_public = attrgetter(*_PUBLIC_FIELDS)


def _read_direct(span: Any) -> tuple:
    """:data:`_read_public`, from the fields behind the properties (a plain function: Python's attribute
    caches make it faster than an attrgetter of twelve names)."""
    return (span._context, span._parent, span._resource, span._status, span._instrumentation_scope, span._name,
            span._kind, span._start_time, span._end_time, span._attributes, span._events, span._links)


def attribute_dict(value: Any) -> dict:
    """The attributes of a span, event or link as a dict (a BoundedAttributes' own dict, not a copy)."""
    inner = getattr(value, "_dict", None)  # the public path hands over a read-only proxy: copied below
    if type(inner) is dict:
        return inner
    return dict(value) if value else {}


def _direct_read_works() -> bool:
    """Whether a ReadableSpan's fields are the values its public properties return."""
    if ReadableSpan is None:
        return False
    try:
        parent = SpanContext(3, 4, True)
        event = SdkEvent("e", BoundedAttributes(attributes={"n": 1}, immutable=True), 5)
        span = ReadableSpan(name="probe", context=SpanContext(1, 2, False), parent=parent,
                            resource=Resource({"service.name": "probe"}),
                            attributes=BoundedAttributes(attributes={"a": "b"}, immutable=True),
                            events=(event,), links=(), kind=trace_api.SpanKind.CLIENT, start_time=6, end_time=7)
        direct, public = _read_direct(span), _read_public(span)
        same = all(a is b for i, (a, b) in enumerate(zip(direct, public)) if i < 9)
        return (same and type(direct[9]) is BoundedAttributes and type(direct[9]._dict) is dict
                and dict(public[9]) == direct[9]._dict == {"a": "b"} and tuple(direct[10]) == public[10]
                and tuple(direct[11]) == public[11] and type(event.attributes._dict) is dict)
    except Exception:  # pragma: no cover - another SDK version
        return False


def use_direct_reads(direct: bool) -> None:
    """Read finished spans through their fields (``direct``) or their public properties (tests force this)."""
    global READ_DIRECT, span_fields
    READ_DIRECT = direct and _direct_read_works()
    span_fields = _read_direct if READ_DIRECT else _read_public


span_fields = None  # set just below
use_direct_reads(True)
# span_fields(span) -> (context, parent, resource, status, instrumentation_scope, name, kind, start_time, end_time,
#                       attributes, events, links) of a ReadableSpan; AttributeError for anything else


# --------------------------------------------------------------------------- span objects of a tracer

# The instance fields of an SDK span: built per span by SpanFactory, or shared with the template.
_PER_SPAN = frozenset({"_name", "_context", "_kind", "_parent", "_start_time", "_end_time", "_attributes",
                       "_events", "_links", "_lock", "_record_end_metrics"})
_SHARED = frozenset({"_instrumentation_info", "_instrumentation_scope", "_resource", "_status", "_sampler",
                     "_trace_config", "_record_exception", "_set_status_on_exception", "_span_processor",
                     "_limits"})
_ATTRIBUTE_FIELDS = frozenset({"_dict", "maxlen", "dropped", "max_value_len", "_lock", "_immutable"})
_LIST_FIELDS = frozenset({"dropped", "_dq", "_lock"})
_new = object.__new__
_Lock = threading.Lock


class SpanFactory:
    """SDK span objects of one tracer, as ``Tracer.start_span`` builds them, for less.

    The object is built from a template made once by the SDK's own
    constructor: the per-span fields are fresh, the shared ones (resource,
    processors, limits, scope, sampler) are the template's. It is checked
    against an SDK-built span when made (same fields, same container types);
    anything unexpected and ``usable`` is False: the caller uses
    ``Tracer.start_span``.
    """

    def __init__(self, tracer: Any):
        self.tracer = tracer
        self._spares: list[Any] = []  # span objects made ahead by prepare(); list.pop/append are atomic
        self.usable = False
        try:
            self.usable = self._prepare()
        except Exception:  # anything unexpected: the caller uses Tracer.start_span
            self.usable = False

    def _prepare(self) -> bool:
        tracer = self.tracer
        if SdkTracer is None or type(tracer) is not SdkTracer:
            return False
        for name in ("sampler", "id_generator", "resource", "span_processor", "instrumentation_info",
                     "_span_limits", "_instrumentation_scope", "_tracer_metrics", "_is_enabled"):
            if not hasattr(tracer, name):
                return False
        probe = self.sdk_span("probe", trace_api.INVALID_SPAN_CONTEXT, None, trace_api.SpanKind.INTERNAL, {}, (),
                              None)
        fields = vars(probe)
        if set(fields) != _PER_SPAN | _SHARED:
            return False
        if (type(probe._attributes) is not BoundedAttributes or set(vars(probe._attributes)) != _ATTRIBUTE_FIELDS
                or type(probe._attributes._dict) is not dict):
            return False
        for bounded in (probe._events, probe._links):
            if type(bounded) is not BoundedList or set(vars(bounded)) != _LIST_FIELDS:
                return False
        self._template = {key: fields[key] for key in _SHARED}
        limits = tracer._span_limits
        self._max_attributes = limits.max_span_attributes
        self._max_value_len = limits.max_span_attribute_length
        self._max_events = limits.max_events
        self._max_links = limits.max_links
        self.is_enabled = tracer._is_enabled  # the tracer's configurator can switch it off
        self.on_start = tracer.span_processor.on_start
        self._noop_end = NoOpTracerMetrics().start_span(None, Decision.DROP) if NoOpTracerMetrics else None
        # the clone must equal what the SDK built (besides locks): checked once here, and in the tests
        clone = self.clone("probe", trace_api.INVALID_SPAN_CONTEXT, None, trace_api.SpanKind.INTERNAL, None)
        return describe(clone) == describe(probe)

    def end_metrics(self, parent: SpanContext | None, decision: Any) -> Any:
        """The SDK's internal metrics hook for a span starting now (what ``start_span`` passes the span)."""
        metrics = self.tracer._tracer_metrics
        return self._noop_end if type(metrics) is NoOpTracerMetrics else metrics.start_span(parent, decision)

    def sdk_span(self, name: str, context: SpanContext, parent: SpanContext | None, kind: Any, attributes: Any,
                 links: Sequence[Any], end_metrics: Any) -> Any:
        """The span exactly as ``Tracer.start_span`` constructs it (not started)."""
        tracer = self.tracer
        return _Span(name=name, context=context, parent=parent, sampler=tracer.sampler, resource=tracer.resource,
                     attributes=attributes, span_processor=tracer.span_processor, kind=kind, links=links,
                     instrumentation_info=tracer.instrumentation_info, record_exception=True,
                     set_status_on_exception=True, limits=tracer._span_limits,
                     instrumentation_scope=tracer._instrumentation_scope, record_end_metrics=end_metrics)

    def clone(self, name: str, context: SpanContext, parent: SpanContext | None, kind: Any, end_metrics: Any,
              start_time: int | None = None, spare: bool = False) -> Any:
        """What :meth:`sdk_span` builds when there are no links and no sampler attributes, built directly.

        With ``start_time`` it is marked started at that time (the processors
        are told by the caller: ``on_start``). With ``spare``, the object comes
        from :meth:`prepare` when one is ready (its containers and locks made
        earlier, off the caller's path), else it is made now.
        """
        span = None
        if spare:
            try:
                span = self._spares.pop()
            except IndexError:
                pass
        if span is None:
            span = self._blank()
        span.__dict__.update(_name=name, _context=context, _kind=kind, _parent=parent,
                             _record_end_metrics=end_metrics, _start_time=start_time)
        return span

    def _blank(self) -> Any:
        """A new span object with every field but its identity (name, context, kind, parent, metrics hook)."""
        attributes = _new(BoundedAttributes)
        attributes.__dict__.update(_dict={}, maxlen=self._max_attributes, dropped=0,
                                   max_value_len=self._max_value_len, _lock=_Lock(), _immutable=False)
        events = _new(BoundedList)
        events.__dict__.update(dropped=0, _dq=deque(maxlen=self._max_events), _lock=_Lock())
        links = _new(BoundedList)
        links.__dict__.update(dropped=0, _dq=deque(maxlen=self._max_links), _lock=_Lock())
        span = _new(_Span)
        fields = span.__dict__
        fields.update(self._template)
        fields.update(_name=None, _context=None, _kind=None, _parent=None, _start_time=None, _end_time=None,
                      _attributes=attributes, _events=events, _links=links, _lock=_Lock(),
                      _record_end_metrics=None)
        return span

    def prepare(self, spares: int = 1) -> None:
        """Make one span object for a coming span now, while nothing waits, unless ``spares`` are ready."""
        if self.usable and len(self._spares) < spares:
            self._spares.append(self._blank())

    @staticmethod
    def append_event(span: Any, event: Any) -> None:
        """Record ``event`` on a span :meth:`clone` made and a processor may have ended (``Span._add_event``)."""
        if span._end_time is None:
            span._events.append(event)
        else:
            span._add_event(event)  # the SDK's warning


def describe(span: Any) -> dict[str, Any]:
    """A span's fields as comparable values (locks by type, bounded containers by their contents)."""
    out: dict[str, Any] = {"__class__": type(span)}
    for key, value in vars(span).items():
        if key == "_lock":
            out[key] = type(value)
        elif BoundedAttributes is not None and type(value) in (BoundedAttributes, BoundedList):
            out[key] = (type(value), {k: (type(v) if k == "_lock" else (type(v), v.maxlen, list(v))
                                          if k == "_dq" else v) for k, v in vars(value).items()})
        else:
            out[key] = value
    return out
