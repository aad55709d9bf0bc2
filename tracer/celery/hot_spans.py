"""The Celery handlers' two hot spans, started for less than ``Tracer.start_span`` costs.

Every task message gets a PRODUCER span in the sender and a CONSUMER span in
the worker, and both are started on the path the caller waits on (before the
message is sent, before the task runs). :class:`HotSpans` does what the
OpenTelemetry SDK's ``Tracer.start_span`` does, step for step — the tracer's
own sampler, id generator, limits, resource, instrumentation scope, span
processors (``on_start``) and internal metrics hook — and produces the same
SDK ``Span`` objects, so the exporter, sampling and user spans inside tasks
see no difference. It differs in three ways:

* it is split in two: :meth:`HotSpans.decide` takes the sampling decision and
  makes the ids (all a ``traceparent`` needs), :meth:`Pending.start` builds
  and starts the span object. The publish handler decides before the message
  is sent and builds the span once it has left, off the caller's path;
* with the sampler every :class:`~tracer.manager.TracingManager` installs
  (:func:`tracer.sampling.ratio_sampler`) and the SDK's random id generator,
  the decision is made here in a few lines, as those samplers make it (same
  decision, same trace state, the manager's sampled-out count kept); any
  other sampler is called as ``start_span`` calls it;
* the span object comes from :class:`tracer.otel_internals.SpanFactory`
  (cloned from a template the SDK built; objects for coming run spans made
  ahead, on the export thread as it ends the previous ones). A span with
  links or sampler-provided attributes goes through the SDK constructor.

In a task round trip these calls run on cold caches (the process slept while
the broker and the other side worked), where every function call and object
costs several times what it does in a loop: fewer of them is what pays.

When the factory finds an SDK it does not know, :class:`HotSpans` is not
used: the handlers call ``Tracer.start_span``. ``tests/celery/test_hot_spans.py``
compares the spans both ways build, field by field and as exported.
"""

from __future__ import annotations

import random
from time import time_ns as _time_ns
from typing import Any, Sequence

from opentelemetry import trace as trace_api
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from .. import otel_internals
from ..otel_internals import SpanFactory
from ..sampling import CountingSampler

try:
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
    from opentelemetry.sdk.trace.sampling import Decision, ParentBased, TraceIdRatioBased
except ImportError:  # pragma: no cover - the SDK is a dependency of tracer
    RandomIdGenerator = Decision = ParentBased = TraceIdRatioBased = None

_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)
_RANDOM_TRACE_ID = getattr(TraceFlags, "RANDOM_TRACE_ID", None)
_SAMPLED_RANDOM = TraceFlags(TraceFlags.SAMPLED | (_RANDOM_TRACE_ID or 0))
_NOT_SAMPLED_RANDOM = TraceFlags(TraceFlags.DEFAULT | (_RANDOM_TRACE_ID or 0))
_TRACE_ID_LIMIT = (1 << 64) - 1
_RECORD_AND_SAMPLE = Decision.RECORD_AND_SAMPLE if Decision is not None else None
_DROP = Decision.DROP if Decision is not None else None
_CURRENT = object()  # decide(): the parent is the current span of the context given
_getrandbits = random.getrandbits  # what RandomIdGenerator draws from


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
        return self.spans.build(self, links)


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
        self.factory = SpanFactory(tracer)
        self._counting: Any = None  # the manager's CountingSampler, when its decisions are made here
        self._bound = 0
        self.usable = self.factory.usable and _RANDOM_TRACE_ID is not None
        if self.usable:
            factory = self.factory
            self._counting, self._bound = known_sampler(tracer)
            self._is_enabled, self._on_start = factory.is_enabled, factory.on_start
            self._clone, self._end_metrics = factory.clone, factory.end_metrics

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
        if not self._is_enabled():
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
        (:func:`tracer.sampling.ratio_sampler`, ``RandomIdGenerator``), in line,
        as those make them: a parent's sampled flag decides, the trace-id ratio
        decides a root. None for anything else (another sampler or id
        generator, a tracer disabled by its configurator): :meth:`decide` then
        asks them.
        """
        tracer = self.tracer
        counting = self._counting
        if (counting is None or tracer.sampler is not counting or type(tracer.id_generator) is not RandomIdGenerator
                or not self._is_enabled()):
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

        What ``build(pending(...))`` does for a span without links, sampler
        attributes or event, in one call and without the :class:`Pending`: a
        task's run span starts on the path the task waits on.
        """
        trace_id, span_id, flags, trace_state, parent, sampled = ids
        span_context = otel_internals.span_context(trace_id, span_id, False, flags, trace_state)
        end_metrics = self._end_metrics(parent, _RECORD_AND_SAMPLE if sampled else _DROP)
        if not sampled:
            return NonRecordingSpan(span_context)
        span = self._clone(name, span_context, parent, kind, end_metrics, start_time, True)
        self._on_start(span, parent_context=context)
        return span

    def _pending(self, name: str, span_context: SpanContext, parent: SpanContext | None, context: Any, kind: Any,
                 decision: Any, attributes: Any, start_time: int | None) -> Pending:
        end_metrics = self._end_metrics(parent, decision)
        if start_time is None:
            start_time = _time_ns()
        return Pending(self, name, span_context, parent, context, kind, decision, attributes, end_metrics,
                       start_time)

    def start_span(self, name: str, context: Any, kind: Any, links: Sequence[Any] | None = None,
                   start_time: int | None = None, parent: Any = _CURRENT, event: Any = None) -> Any:
        """``Tracer.start_span(name, context=context, kind=kind, links=links, start_time=start_time)``.

        ``parent``: see :meth:`decide`. ``event``: an SDK ``Event`` recorded
        on the new span right after it started (nothing on a non-recording span).
        """
        links = links or ()
        pending = self.decide(name, context, kind, links, start_time, parent) if self.usable else None
        if pending is None:
            span = self.tracer.start_span(name, context=context, kind=kind, links=links, start_time=start_time)
            if event is not None:
                otel_internals.add_event(span, event)
            return span
        return self.build(pending, links, event, True)

    def build(self, pending: Pending, links: Sequence[Any], event: Any = None, spare: bool = False) -> Any:
        """The started span of ``pending``; ``spare``: take an object made ahead (a span started on a path
        something waits on; spans built off it, like the publish spans, leave those to the run spans)."""
        decision = pending.decision
        if decision is not _RECORD_AND_SAMPLE and not decision.is_recording():
            return NonRecordingSpan(pending.context)
        if links or pending.attributes:
            span = self.factory.sdk_span(pending.name, pending.context, pending.parent, pending.kind,
                                         pending.attributes, links, pending.end_metrics)
            span.start(start_time=pending.start_time, parent_context=pending.parent_context)
            if event is not None:
                otel_internals.add_event(span, event)
            return span
        span = self._clone(pending.name, pending.context, pending.parent, pending.kind, pending.end_metrics,
                           pending.start_time, spare)
        self._on_start(span, parent_context=pending.parent_context)  # Span.start() on a span nobody sees yet
        if event is not None:
            SpanFactory.append_event(span, event)
        return span

    def prepare(self, spares: int = 1) -> None:
        """Make one span object for a coming span now, while nothing waits, unless ``spares`` are ready.

        Called once per ended run span, so as many objects are ready as tasks
        started since the last round of ends, up to ``spares``.
        """
        if self.usable:
            self.factory.prepare(spares)


def known_sampler(tracer: Any) -> tuple[Any, int]:
    """(the CountingSampler, the root's bound) when the tracer samples as TracingManager sets it up, else (None, 0)."""
    counting = tracer.sampler
    if type(counting) is not CountingSampler or type(counting.inner) is not ParentBased:
        return None, 0
    root = counting.root  # set only by ratio_sampler, with the default delegates for parents
    if (type(root) is not TraceIdRatioBased or TraceIdRatioBased.TRACE_ID_LIMIT != _TRACE_ID_LIMIT
            or type(root.bound) is not int):
        return None, 0
    return counting, root.bound
