"""The Celery handlers' two hot spans, started for less than ``Tracer.start_span`` costs.

Every task message gets a PRODUCER span in the sender and a CONSUMER span in
the worker, and both are started on the path the caller waits on (before the
message is sent, before the task runs). :class:`HotSpans` does what the
OpenTelemetry SDK's ``Tracer.start_span`` does, step for step — the tracer's
own sampler, id generator, limits, resource, instrumentation scope, span
processors (``on_start``) and internal metrics hook — and produces the same
SDK ``Span`` objects, so the exporter, sampling and user spans inside tasks
see no difference. It differs in two ways:

* it is split in two: :meth:`HotSpans.decide` takes the sampling decision and
  makes the ids (all a ``traceparent`` needs), :meth:`Pending.start` builds
  and starts the span object. The publish handler decides before the message
  is sent and builds the span once it has left, off the caller's path;
* with the sampler every :class:`~tracer.manager.TracingManager` installs
  (parent-based, trace-id ratio at the root, the OpenTelemetry default
  delegates for parents) and the SDK's random id generator, the decision is
  made here in a few lines, as those samplers make it (same decision, same
  trace state, the manager's sampled-out count kept); any other sampler is
  called as ``start_span`` calls it;
* the span object is built from a template made once per tracer by the SDK's
  own constructor: the per-span fields are fresh, the shared ones (resource,
  processors, limits, scope, sampler) are the template's. A span with links
  or sampler-provided attributes goes through the SDK constructor. Objects
  for coming run spans are made ahead (:meth:`HotSpans.prepare`, on the
  export thread as it ends the previous ones), so a task's start only fills
  in the new span's identity.

In a task round trip these calls run on cold caches (the process slept while
the broker and the other side worked), where every function call and object
costs several times what it does in a loop: fewer of them is what pays.

The template is checked against an SDK-built span when it is made (same
fields, same container types); anything unexpected — another SDK version,
another tracer class — and :class:`HotSpans` is not used: the handlers call
``Tracer.start_span`` as before. ``tests/celery/test_fast_paths.py`` compares
the spans both ways build, field by field and as exported.
"""

from __future__ import annotations

import random
import threading
from collections import deque as _deque
from time import time_ns as _time_ns
from typing import Any, Sequence

from opentelemetry import trace as trace_api
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

try:
    from opentelemetry.attributes import BoundedAttributes
    from opentelemetry.sdk.trace import Tracer as _SdkTracer
    from opentelemetry.sdk.trace import _Span
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, Decision, ParentBased, TraceIdRatioBased
    from opentelemetry.sdk.util import BoundedList
except ImportError:  # pragma: no cover - the SDK is a dependency of tracer
    _SdkTracer = _Span = BoundedAttributes = BoundedList = None
try:
    from opentelemetry.sdk.trace._tracer_metrics import NoOpTracerMetrics as _NoOpTracerMetrics
except ImportError:  # pragma: no cover - an SDK without internal metrics
    _NoOpTracerMetrics = None

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM_TRACE_ID = getattr(TraceFlags, "RANDOM_TRACE_ID", None)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | (_RANDOM_TRACE_ID or 0))
_NOT_SAMPLED_RANDOM = TraceFlags(TraceFlags.DEFAULT | (_RANDOM_TRACE_ID or 0))
_TRACE_ID_LIMIT = (1 << 64) - 1
_RECORD_AND_SAMPLE = Decision.RECORD_AND_SAMPLE if _SdkTracer is not None else None
_DROP = Decision.DROP if _SdkTracer is not None else None
_CURRENT = object()  # decide(): the parent is the current span of the context given
_getrandbits = random.getrandbits  # what RandomIdGenerator draws from

# The instance fields of an SDK span: built per span by HotSpans, or shared with the template.
_PER_SPAN = frozenset({"_name", "_context", "_kind", "_parent", "_start_time", "_end_time", "_attributes",
                       "_events", "_links", "_lock", "_record_end_metrics"})
_SHARED = frozenset({"_instrumentation_info", "_instrumentation_scope", "_resource", "_status", "_sampler",
                     "_trace_config", "_record_exception", "_set_status_on_exception", "_span_processor",
                     "_limits"})
_ATTRIBUTE_FIELDS = frozenset({"_dict", "maxlen", "dropped", "max_value_len", "_lock", "_immutable"})
_LIST_FIELDS = frozenset({"dropped", "_dq", "_lock"})
_new = object.__new__
_Lock = threading.Lock
_new_tuple = tuple.__new__
DEFAULT_TRACE_STATE = getattr(trace_api, "DEFAULT_TRACE_STATE", None)


def _span_context_is_plain_tuple() -> bool:
    """Whether ``SpanContext`` is the tuple ``(trace_id, span_id, is_remote, flags, state, is_valid)``.

    Then the hot paths build it with ``tuple.__new__`` directly: its Python
    ``__new__`` costs microseconds on the cold caches of a task round trip.
    Checked against the constructor once, at import.
    """
    if DEFAULT_TRACE_STATE is None:
        return False
    try:
        for args in ((1, 2, True, _SAMPLED, DEFAULT_TRACE_STATE),
                     ((1 << 128) - 1, (1 << 64) - 1, False, _NOT_SAMPLED_RANDOM, trace_api.TraceState([("k", "v")]))):
            built, made = SpanContext(*args), _new_tuple(SpanContext, (*args, True))
            if (type(made) is not type(built) or tuple(made) != tuple(built) or made.is_valid is not built.is_valid
                    or (made.trace_id, made.span_id, made.is_remote, made.trace_flags, made.trace_state)
                    != (built.trace_id, built.span_id, built.is_remote, built.trace_flags, built.trace_state)):
                return False
        return True
    except Exception:  # pragma: no cover - an API whose SpanContext is built otherwise
        return False


DIRECT_SPAN_CONTEXT = _span_context_is_plain_tuple()


class Pending:
    """A span whose sampling decision and ids are made; :meth:`start` builds and starts it."""

    __slots__ = ("spans", "name", "context", "parent", "parent_context", "kind", "decision", "attributes",
                 "end_metrics", "start_time")

    def __init__(self, spans: "HotSpans", name: str, context: SpanContext, parent: SpanContext | None,
                 parent_context: Any, kind: Any, decision: Any, attributes: Any, end_metrics: Any, start_time: int):
        self.spans, self.name, self.context, self.parent = spans, name, context, parent
        self.parent_context, self.kind, self.decision, self.attributes = parent_context, kind, decision, attributes
        self.end_metrics, self.start_time = end_metrics, start_time

    def get_span_context(self) -> SpanContext:
        return self.context

    def start(self, links: Sequence[Any] = ()) -> Any:
        """The span as ``Tracer.start_span`` would have returned it (started at ``start_time``)."""
        return self.spans._build(self, links)


class Decided:
    """A span whose sampling decision and ids are made (:meth:`HotSpans.fast_ids`) and nothing else.

    What the publish handler holds while the message is sent: the
    ``traceparent`` needs only the ids. :meth:`start` builds the span, as
    :meth:`Pending.start` does, when nothing waits for it.
    """

    __slots__ = ("spans", "name", "context", "kind", "ids", "start_time")

    def __init__(self, spans: "HotSpans", name: str, context: Any, kind: Any, ids: tuple, start_time: int):
        self.spans, self.name, self.context, self.kind, self.ids, self.start_time = (
            spans, name, context, kind, ids, start_time)

    def get_span_context(self) -> SpanContext:
        trace_id, span_id, flags, trace_state, _, _ = self.ids
        return SpanContext(trace_id, span_id, False, flags, trace_state)

    def start(self, links: Sequence[Any] = ()) -> Any:
        return self.spans.pending(self.name, self.context, self.kind, self.ids, self.start_time).start(links)


class HotSpans:
    """``Tracer.start_span`` for the Celery handlers' spans; see the module docstring."""

    def __init__(self, tracer: Any):
        self.tracer = tracer
        self._template: dict[str, Any] | None = None
        self._counting: Any = None  # the manager's CountingSampler, when its decisions are made here
        self._spares: list[Any] = []  # span objects made ahead by prepare(); list.pop/append are atomic
        self._bound = 0
        self.usable = False
        try:
            self.usable = self._prepare()
        except Exception:  # anything unexpected: the handlers use Tracer.start_span
            self.usable = False

    def _prepare(self) -> bool:
        tracer = self.tracer
        if _SdkTracer is None or type(tracer) is not _SdkTracer or _RANDOM_TRACE_ID is None:
            return False
        for name in ("sampler", "id_generator", "resource", "span_processor", "instrumentation_info",
                     "_span_limits", "_instrumentation_scope", "_tracer_metrics", "_is_enabled"):
            if not hasattr(tracer, name):
                return False
        probe = self._sdk_span("probe", trace_api.INVALID_SPAN_CONTEXT, None, trace_api.SpanKind.INTERNAL,
                               {}, (), None)
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
        self._counting, self._bound = _known_sampler(tracer)
        limits = tracer._span_limits
        self._max_attributes = limits.max_span_attributes
        self._max_value_len = limits.max_span_attribute_length
        self._max_events = limits.max_events
        self._max_links = limits.max_links
        self._on_start = tracer.span_processor.on_start
        self._noop_end = _NoOpTracerMetrics().start_span(None, _DROP) if _NoOpTracerMetrics else None
        # the clone must equal what the SDK built (besides locks): checked once here, and in the tests
        clone = self._clone("probe", trace_api.INVALID_SPAN_CONTEXT, None, trace_api.SpanKind.INTERNAL, None)
        return describe(clone) == describe(probe)

    # ------------------------------------------------------------ Tracer.start_span, in two steps
    def decide(self, name: str, context: Any, kind: Any, links: Sequence[Any] = (),
               start_time: int | None = None, parent: Any = _CURRENT) -> Pending | None:
        """Sampling decision and ids, as ``Tracer.start_span(name, context, kind, links=links)`` makes them.

        ``parent`` is the span context of the current span in ``context``, when
        the caller has it at hand. None when the tracer is disabled by its
        configurator (``start_span`` then returns a non-recording span of the
        parent: let it).
        """
        tracer = self.tracer
        if parent is _CURRENT:
            parent = trace_api.get_current_span(context).get_span_context()
        ids = self.fast_ids(parent)
        if ids is not None:
            return self.pending(name, context, kind, ids, start_time)
        if not tracer._is_enabled():
            return None
        id_generator = tracer.id_generator
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = id_generator.generate_trace_id()
        else:
            trace_id = parent.trace_id
        result = tracer.sampler.should_sample(context, trace_id, name, kind, None, links)
        decision, attributes, trace_state = result.decision, result.attributes, result.trace_state
        flags = _SAMPLED if decision.is_sampled() else _NOT_SAMPLED
        if id_generator.is_trace_id_random() if parent is None else parent.trace_flags.random_trace_id:
            flags = TraceFlags(flags | _RANDOM_TRACE_ID)
        span_id = id_generator.generate_span_id()
        return self._pending(name, SpanContext(trace_id, span_id, False, flags, trace_state), parent, context, kind,
                             decision, attributes, start_time)

    def fast_ids(self, parent: SpanContext | None) -> tuple | None:
        """``(trace_id, span_id, flags, trace_state, parent, sampled)`` for a span under ``parent``, or None.

        The decision and ids :meth:`decide` makes, without building anything,
        when the tracer samples and makes ids as TracingManager sets it up
        (``CountingSampler(ParentBased(TraceIdRatioBased))`` with the default
        delegates, ``RandomIdGenerator``), in line, as those make them: a
        parent's sampled flag decides, the trace-id ratio decides a root. None
        for anything else (another sampler or id generator, a tracer disabled
        by its configurator): :meth:`decide` then asks them.
        """
        tracer = self.tracer
        counting = self._counting
        if (counting is None or tracer.sampler is not counting or type(tracer.id_generator) is not RandomIdGenerator
                or not tracer._is_enabled()):
            return None
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = _getrandbits(128)  # RandomIdGenerator.generate_trace_id(), same generator
            while trace_id == 0:
                trace_id = _getrandbits(128)
            sampled = trace_id & _TRACE_ID_LIMIT < self._bound
            trace_state = None
            random_id = True  # RandomIdGenerator.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            flags = parent.trace_flags
            sampled = (flags & 1) == 1
            trace_state = parent.trace_state
            random_id = (flags & _RANDOM_TRACE_ID) != 0
        if sampled:
            flags = _SAMPLED_RANDOM if random_id else _SAMPLED
        else:
            counting.dropped += 1
            flags = _NOT_SAMPLED_RANDOM if random_id else _NOT_SAMPLED
        span_id = _getrandbits(64)  # RandomIdGenerator.generate_span_id()
        while span_id == 0:
            span_id = _getrandbits(64)
        return trace_id, span_id, flags, trace_state, parent, sampled

    def pending(self, name: str, context: Any, kind: Any, ids: tuple, start_time: int | None = None) -> Pending:
        """The :class:`Pending` span of ``ids`` (from :meth:`fast_ids`)."""
        trace_id, span_id, flags, trace_state, parent, sampled = ids
        return self._pending(name, SpanContext(trace_id, span_id, False, flags, trace_state), parent, context, kind,
                             _RECORD_AND_SAMPLE if sampled else _DROP, None, start_time)

    def start(self, name: str, context: Any, kind: Any, ids: tuple, start_time: int) -> Any:
        """The span of ``ids`` (from :meth:`fast_ids`), started at ``start_time``: ``start_span``'s result.

        What ``_build(pending(...))`` does for a span without links, sampler
        attributes or event, in one call and without the :class:`Pending`: a
        task's run span starts on the path the task waits on.
        """
        trace_id, span_id, flags, trace_state, parent, sampled = ids
        if DIRECT_SPAN_CONTEXT:  # valid ids (fast_ids made them): is_valid is True
            span_context = _new_tuple(SpanContext, (trace_id, span_id, False, flags, DEFAULT_TRACE_STATE
                                                    if trace_state is None else trace_state, True))
        else:
            span_context = SpanContext(trace_id, span_id, False, flags, trace_state)
        metrics = self.tracer._tracer_metrics
        end_metrics = (self._noop_end if type(metrics) is _NoOpTracerMetrics
                       else metrics.start_span(parent, _RECORD_AND_SAMPLE if sampled else _DROP))
        if not sampled:
            return NonRecordingSpan(span_context)
        span = self._clone(name, span_context, parent, kind, end_metrics, True)
        span._start_time = start_time
        self._on_start(span, parent_context=context)
        return span

    def _pending(self, name: str, span_context: SpanContext, parent: SpanContext | None, context: Any, kind: Any,
                 decision: Any, attributes: Any, start_time: int | None) -> Pending:
        metrics = self.tracer._tracer_metrics
        end_metrics = self._noop_end if type(metrics) is _NoOpTracerMetrics else metrics.start_span(parent, decision)
        if start_time is None:
            start_time = _time_ns()
        return Pending(self, name, span_context, parent, context, kind, decision, attributes, end_metrics,
                       start_time)

    def start_span(self, name: str, context: Any, kind: Any, links: Sequence[Any] | None = None,
                   start_time: int | None = None, parent: Any = _CURRENT, event: Any = None) -> Any:
        """``Tracer.start_span(name, context=context, kind=kind, links=links, start_time=start_time)``.

        ``parent``: see :meth:`decide`. ``event``: an SDK ``Event`` recorded
        on the new span right after it started, as ``span._add_event(event)``
        would (nothing on a non-recording span).
        """
        links = links or ()
        pending = self.decide(name, context, kind, links, start_time, parent) if self.usable else None
        if pending is None:
            span = self.tracer.start_span(name, context=context, kind=kind, links=links, start_time=start_time)
            if event is not None:
                add = getattr(span, "_add_event", None)
                if add is None:
                    span.add_event(event.name, event.attributes, timestamp=event.timestamp)
                else:
                    add(event)
            return span
        return self._build(pending, links, event, True)

    def _build(self, pending: Pending, links: Sequence[Any], event: Any = None, spare: bool = False) -> Any:
        """The started span of ``pending``; ``spare``: take an object made ahead (a span started on a path
        something waits on; spans built off it, like the publish spans, leave those to the run spans)."""
        decision = pending.decision
        if decision is not _RECORD_AND_SAMPLE and not decision.is_recording():
            return NonRecordingSpan(pending.context)
        if links or pending.attributes:
            span = self._sdk_span(pending.name, pending.context, pending.parent, pending.kind, pending.attributes,
                                  links, pending.end_metrics)
            span.start(start_time=pending.start_time, parent_context=pending.parent_context)
            if event is not None:
                span._add_event(event)
            return span
        span = self._clone(pending.name, pending.context, pending.parent, pending.kind, pending.end_metrics, spare)
        # Span.start() on a span nobody else can see yet: set the start time, tell the processors
        span._start_time = pending.start_time
        self._on_start(span, parent_context=pending.parent_context)
        if event is not None:
            if span._end_time is None:  # what Span._add_event checks (a processor could have ended it)
                span._events.append(event)
            else:
                span._add_event(event)  # the SDK's warning
        return span

    # ------------------------------------------------------------ span objects
    def _sdk_span(self, name: str, context: SpanContext, parent: SpanContext | None, kind: Any, attributes: Any,
                  links: Sequence[Any], end_metrics: Any) -> Any:
        """The span exactly as ``Tracer.start_span`` constructs it."""
        tracer = self.tracer
        return _Span(name=name, context=context, parent=parent, sampler=tracer.sampler, resource=tracer.resource,
                     attributes=attributes, span_processor=tracer.span_processor, kind=kind, links=links,
                     instrumentation_info=tracer.instrumentation_info, record_exception=True,
                     set_status_on_exception=True, limits=tracer._span_limits,
                     instrumentation_scope=tracer._instrumentation_scope, record_end_metrics=end_metrics)

    def _clone(self, name: str, context: SpanContext, parent: SpanContext | None, kind: Any,
               end_metrics: Any, spare: bool = False) -> Any:
        """What :meth:`_sdk_span` builds when there are no links and no sampler attributes, built directly.

        With ``spare``, the object comes from :meth:`prepare` when one is ready
        (its containers and locks made earlier, off the caller's path), else it
        is made now.
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
                             _record_end_metrics=end_metrics)
        return span

    def _blank(self) -> Any:
        """A new span object with every field but its identity (name, context, kind, parent, metrics hook)."""
        attributes = _new(BoundedAttributes)
        attributes.__dict__.update(_dict={}, maxlen=self._max_attributes, dropped=0,
                                   max_value_len=self._max_value_len, _lock=_Lock(), _immutable=False)
        events = _new(BoundedList)
        events.__dict__.update(dropped=0, _dq=_deque(maxlen=self._max_events), _lock=_Lock())
        links = _new(BoundedList)
        links.__dict__.update(dropped=0, _dq=_deque(maxlen=self._max_links), _lock=_Lock())
        span = _new(_Span)
        fields = span.__dict__
        fields.update(self._template)
        fields.update(_name=None, _context=None, _kind=None, _parent=None, _start_time=None, _end_time=None,
                      _attributes=attributes, _events=events, _links=links, _lock=_Lock(),
                      _record_end_metrics=None)
        return span

    def prepare(self, spares: int = 1) -> None:
        """Make one span object for a coming span now, while nothing waits, unless ``spares`` are ready.

        Called once per ended run span, so as many objects are ready as tasks
        started since the last round of ends, up to ``spares``.
        """
        if self.usable and len(self._spares) < spares:
            self._spares.append(self._blank())


def _known_sampler(tracer: Any) -> tuple[Any, int]:
    """(the CountingSampler, the root's bound) when the tracer samples as TracingManager sets it up, else (None, 0)."""
    from .manager import CountingSampler

    counting = tracer.sampler
    if type(counting) is not CountingSampler or type(counting.inner) is not ParentBased:
        return None, 0
    inner = counting.inner
    root = getattr(inner, "_root", None)
    if (type(root) is not TraceIdRatioBased or getattr(inner, "_remote_parent_sampled", None) is not ALWAYS_ON
            or getattr(inner, "_local_parent_sampled", None) is not ALWAYS_ON
            or getattr(inner, "_remote_parent_not_sampled", None) is not ALWAYS_OFF
            or getattr(inner, "_local_parent_not_sampled", None) is not ALWAYS_OFF
            or TraceIdRatioBased.TRACE_ID_LIMIT != _TRACE_ID_LIMIT or type(root.bound) is not int):
        return None, 0
    return counting, root.bound


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

