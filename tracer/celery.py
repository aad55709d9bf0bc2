"""Celery tracing through Celery's own signals.

One call, :func:`instrument_celery`, connects handlers that give every task
message a PRODUCER span (``publish <task>``) in the sending process and a
CONSUMER span (``run <task>``) in the worker, parented through W3C
``traceparent``/``tracestate``/``baggage`` carried in the message headers.

Why not ``opentelemetry-instrumentation-celery``: it keys in-flight spans by
the task object (so ``send_task`` by name leaks the producer span and its
context), records nothing when a pool child dies (hard time limit, revoke with
terminate), loses spans when ``worker_max_tasks_per_child`` recycles a child,
does not read protocol 1 messages, and has no queue-wait figure. Here spans
are keyed by task id, the worker's parent process records what a dead child
could not, children flush before they exit, and the publish time travels in
the ``contrail_published_ns`` header so the run span knows its queue wait.

This module imports Celery lazily: ``tracer`` must import without it.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
import weakref
from collections import OrderedDict, deque
from collections.abc import Mapping  # isinstance against typing.Mapping costs three times as much
from typing import Any

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY

from . import propagation
from .celery_spans import DEFAULT_TRACE_STATE, DIRECT_SPAN_CONTEXT, Decided, HotSpans, Pending, _new_tuple

try:
    from opentelemetry.sdk.trace import Event as _SdkEvent
except ImportError:  # pragma: no cover - the SDK is a dependency of tracer; keep the API-only path working
    _SdkEvent = None

logger = logging.getLogger("contrail.celery")

PUBLISHED_HEADER = "contrail_published_ns"
LINKS_HEADER = "contrail_links"
PROPAGATION_KEYS = ("traceparent", "tracestate", "baggage")
CARRIER_KEYS = PROPAGATION_KEYS + (PUBLISHED_HEADER, LINKS_HEADER)
_STATUS_OK = Status(StatusCode.OK)
MAX_IN_FLIGHT = 10000  # bound on spans waiting for their closing signal
SPARE_SPANS = 1024  # bound on span objects made ahead for the run spans of coming tasks (see HotSpans.prepare)

SIGNAL_NAMES = (
    "worker_init", "before_task_publish", "after_task_publish", "task_received", "task_prerun", "task_postrun",
    "task_failure", "task_retry", "task_revoked", "task_rejected", "task_unknown",
    "task_internal_error", "worker_process_init", "worker_process_shutdown", "worker_shutdown",
)

_registry: dict[int, "CeleryTracing"] = {}
_registry_lock = threading.Lock()
# Set by worker_init in a worker whose pool runs tasks in its own process (see on_worker_init). Kept
# for the process, so that handlers connected after the worker started leave task_received out too.
_tasks_run_in_process = False


def instrument_celery(manager: Any, app: Any = None) -> "CeleryTracing":
    """Connect Contrail's handlers to Celery's signals; calling it twice changes nothing.

    ``app`` is optional: Celery signals are process-wide, so the handlers trace
    every app in the process. It is accepted so that the call reads naturally
    next to ``instrument_flask(app)``.
    """
    with _registry_lock:
        tracing = _registry.get(id(manager))
        if tracing is None:
            tracing = CeleryTracing(manager)
            tracing.connect()
            _registry[id(manager)] = tracing
        if app is not None:
            tracing.apps.add(app)
        return tracing


def uninstrument_celery(manager: Any) -> None:
    """Disconnect the handlers :func:`instrument_celery` connected for ``manager``."""
    with _registry_lock:
        tracing = _registry.pop(id(manager), None)
    if tracing is not None:
        tracing.disconnect()


# --------------------------------------------------------------------------- propagation


# The plain version-00 traceparent every Contrail publisher writes; anything else takes the general path.
_FLAGS = {f"{flags:02x}": TraceFlags(flags) for flags in range(4)}  # sampled, and W3C level 2's random-id bit
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def _inject(carrier: dict, span: Any, current: Any = None) -> None:
    """W3C headers for ``span`` (a span or a :class:`Pending` one; baggage from ``current``, the current context).

    Every publish pays for this, so traceparent/tracestate are formatted here
    exactly as OpenTelemetry's TraceContext propagator does; only a message
    that carries baggage goes through the full propagator.
    """
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return
    if _has_baggage(current):
        propagation.inject(carrier, trace.set_span_in_context(NonRecordingSpan(span_context)))
        return
    carrier["traceparent"] = f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{span_context.trace_flags:02x}"
    if span_context.trace_state:
        carrier["tracestate"] = span_context.trace_state.to_header()


try:
    from opentelemetry.baggage import _BAGGAGE_KEY
except ImportError:  # pragma: no cover - another API version: ask the public function
    _BAGGAGE_KEY = None


def _has_baggage(context: Any) -> bool:
    """Whether ``context`` carries baggage (``bool(baggage.get_all(context))``, without the copy)."""
    if _BAGGAGE_KEY is not None and type(context) is otel_context.Context:
        return bool(context.get(_BAGGAGE_KEY))
    return bool(otel_baggage.get_all(context))


def _extract(carrier: Mapping[str, Any]) -> Any:
    """The remote context in ``carrier``, or None (no header or garbage)."""
    return _extract_parent(carrier)[0]


def _parse_traceparent(value: str) -> SpanContext | None:
    """The remote span context of a plain version-00 ``traceparent``; None when it is not one.

    All-zero ids parse, into a span context that is not valid (the caller
    treats it as garbage).
    """
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    trace_hex, span_hex, flags_hex = match.groups()
    trace_id, span_id = int(trace_hex, 16), int(span_hex, 16)
    flags = _FLAGS.get(flags_hex) or TraceFlags(int(flags_hex, 16))
    if DIRECT_SPAN_CONTEXT:  # the tuple SpanContext() builds, without its Python __new__ (see celery_spans)
        return _new_tuple(SpanContext, (trace_id, span_id, True, flags, DEFAULT_TRACE_STATE,
                                        trace_id != 0 and span_id != 0))
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)


def _extract_parent(carrier: Mapping[str, Any]) -> tuple[Any, Any]:
    """``(context, its span's SpanContext)`` from ``carrier``, or ``(None, None)`` (no header or garbage).

    A plain version-00 traceparent without tracestate or baggage (what
    :func:`_inject` writes) is parsed here; everything else goes through the
    tolerant propagator, which gives the same answer more slowly.
    """
    value = carrier.get("traceparent")
    if not value:
        return None, None
    if isinstance(value, str) and not carrier.get("tracestate") and not carrier.get("baggage"):
        remote = _parse_traceparent(value)
        if remote is not None:
            if not remote.is_valid:
                return None, None
            return trace.set_span_in_context(NonRecordingSpan(remote), otel_context.Context()), remote
    context = propagation.extract(carrier)
    if context is None:
        return None, None
    return context, trace.get_current_span(context).get_span_context()


def _carrier(request: Any) -> dict[str, Any]:
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


def _decode_links(value: Any) -> list[Link]:
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


# --------------------------------------------------------------------------- message fields


def _message_fields(headers: Mapping[str, Any] | None, body: Any) -> dict[str, Any]:
    """Task id, name and ids from a message being published (protocol 2 headers or protocol 1 body)."""
    fields = dict(headers or {})
    if isinstance(body, Mapping) and "id" in body and "task" in body:  # protocol 1
        for key in ("id", "task", "root_id", "parent_id", "group", "retries", "eta", "expires",
                    "chord", "taskset"):
            fields.setdefault(key, body.get(key))
        if fields.get("group") is None:
            fields["group"] = body.get("taskset")
    return fields


def _message_field(headers: Mapping[str, Any], body: Any, key: str) -> Any:
    """``_message_fields(headers, body).get(key)`` for ``id`` or ``task``, without copying the headers."""
    if key in headers:
        return headers[key]
    if isinstance(body, Mapping) and "id" in body and "task" in body:  # protocol 1
        return body.get(key)
    return None


def _embedded_chord(body: Any) -> Any:
    """The chord callback signature a header task message carries, if any."""
    if type(body) in (tuple, list) or isinstance(body, (tuple, list)):  # protocol 2: (args, kwargs, embed)
        if len(body) == 3 and isinstance(body[2], Mapping):
            return body[2].get("chord")
        return None
    if isinstance(body, Mapping):  # protocol 1
        return body.get("chord")
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


_ID_ATTRIBUTES = (("celery.root_id", "root_id"), ("celery.parent_id", "parent_id"),
                  ("celery.group_id", "group"), ("celery.eta", "eta"), ("celery.expires", "expires"))


def _ids(source: Any, get) -> dict[str, Any]:
    """celery.* id attributes, from a headers mapping or a request object."""
    attrs: dict[str, Any] = {}
    request = None
    if get is _get_attr and type(getattr(source, "__dict__", None)) is dict and not isinstance(source, Mapping):
        # a task request: read its own attributes from its __dict__ (class defaults are None, except retries)
        request, source, get = source, source.__dict__, _get_mapping
    if get is _get_mapping and type(source) is dict:
        lookup = source.get
        for attr, key in _ID_ATTRIBUTES:
            value = lookup(key)
            if value:
                attrs[attr] = value if type(value) is str else str(value)
        retries = lookup("retries")
        if retries is None and request is not None:
            retries = getattr(request, "retries", None)
    else:
        for attr, key in _ID_ATTRIBUTES:
            value = get(source, key)
            if value:
                attrs[attr] = _text(value)
        retries = get(source, "retries")
    if retries is not None:
        try:
            attrs["celery.retries"] = int(retries)
        except (TypeError, ValueError):
            pass
    return attrs


def _get_mapping(source: Mapping[str, Any], key: str) -> Any:
    return source.get(key)


def _get_attr(source: Any, key: str) -> Any:
    return getattr(source, key, None)


def _request_attributes(request: Any, task_name: str, task_id: str) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        "messaging.system": "celery",
        "messaging.operation.type": "process",
        "messaging.operation.name": "run",
        "messaging.message.id": task_id,
        "celery.task_name": task_name,
        "celery.task_id": task_id,
    }
    attrs.update(_ids(request, _get_attr))
    info = getattr(request, "delivery_info", None) or {}
    destination = info.get("routing_key") or info.get("exchange")
    if destination:
        attrs["messaging.destination.name"] = _text(destination)
    hostname = getattr(request, "hostname", None)
    if hostname:
        attrs["celery.hostname"] = _text(hostname)
    chord = getattr(request, "chord", None)
    if chord:
        attrs["celery.chord_id"] = _text(getattr(request, "group", None) or "")
    return attrs


def _name(task: Any, fallback: str = "unknown") -> str:
    return _text(getattr(task, "name", None) or fallback)


# --------------------------------------------------------------------------- the handlers


def _publish_attributes(headers: Mapping[str, Any] | None, body: Any, exchange: Any, routing_key: Any,
                        countdown: Any, task_name: str, task_id: str) -> dict[str, Any]:
    """The producer span's attributes, built from the message once it has been sent."""
    attrs: dict[str, Any] = {
        "messaging.system": "celery",
        "messaging.operation.type": "publish",
        "messaging.operation.name": "publish",
        "messaging.message.id": task_id,
        "celery.task_name": task_name,
        "celery.task_id": task_id,
    }
    destination = routing_key or exchange
    if destination:
        attrs["messaging.destination.name"] = _text(destination)
    if exchange:
        attrs["celery.exchange"] = _text(exchange)
    fields = headers if headers is not None and "id" in headers else _message_fields(headers, body)
    attrs.update(_ids(fields, _get_mapping))
    if countdown is not None:
        attrs["celery.countdown"] = countdown
    return attrs


_ATTRIBUTE_TYPES = (str, bool, int, float)


def _set_own_attributes(span: Any, attrs: Mapping[str, Any]) -> None:
    """``span.set_attributes(attrs)`` for attributes this module built itself.

    Every key is a non-empty str and every value a str, bool, int or float, so
    the SDK's per-value validation (a large part of a span's cost) can be
    skipped: on a live SDK span the values go straight into its attribute
    dict, truncated to the provider's ``max_attribute_length`` and under the
    span's lock, exactly what ``set_attributes`` would store. Anything else
    (another SDK version, a full attribute dict, a value of another type, an
    ended or non-recording span) goes through ``set_attributes``.
    """
    bounded = getattr(span, "_attributes", None)
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


def _add_own_event(span: Any, name: str, attrs: dict[str, Any], timestamp: int) -> None:
    """``span.add_event(...)`` for an event whose attributes this module built (numbers only).

    The SDK's ``add_event`` validates the attributes into a new bounded
    mapping; these need none, so on an SDK span the event is appended as is
    (same lock, same ended-span check, same bound on the number of events).
    """
    add = getattr(span, "_add_event", None)
    if add is None or _SdkEvent is None:
        span.add_event(name, attrs, timestamp=timestamp)
    else:
        add(_SdkEvent(name, attrs, timestamp))


def _record_late_attributes(held: tuple, extra: Mapping[str, Any] | None = None) -> Any:
    """Set the attributes an in-flight span kept back (plus ``extra``); return the span.

    ``held`` is ``(span, context token, late)``; ``late`` is an attribute
    dict, or a tuple ``(builder, *arguments)`` whose builder returns it
    (:func:`_publish_attributes`, :func:`_run_attributes`). Building and
    setting attributes waits until the message is out (publish) or the result
    is stored (run), and then runs on the export thread (:func:`_finish_publish`,
    :meth:`CeleryTracing._finish_run`): the round trip the caller waits for
    does not pay for it.
    A publish span is held as a :class:`~tracer.celery_spans.Pending` one
    (sampled, ids made, start time taken) and built here, for the same reason.
    Every path that ends one of these spans comes through here, so the
    exported span is the same.
    """
    span, _, late = held
    if type(span) is Pending or type(span) is Decided:
        span = span.start()
    if type(late) is tuple and late[0] is _run_attributes_later:
        _add_dequeued_event(span, late)
    attrs = late[0](*late[1:]) if isinstance(late, tuple) else dict(late or {})
    if extra:
        attrs.update(extra)
    if attrs:
        _set_own_attributes(span, attrs)
    return span


_IN_PROCESS_POOLS = ("solo", "threads", "eventlet", "gevent")


def _runs_tasks_in_process(pool_cls: Any) -> bool:
    """Whether a worker's pool (alias, ``module:Class`` path or class) runs tasks in the worker's process.

    Decided by name, without importing the pool's module: a worker_init
    handler runs before Celery imports it, so that eventlet and gevent can be
    patched in first. An unknown pool counts as one that runs tasks elsewhere.
    """
    from celery.concurrency import ALIASES

    paths = {ALIASES[alias] for alias in _IN_PROCESS_POOLS if alias in ALIASES}
    if isinstance(pool_cls, str):
        return pool_cls in _IN_PROCESS_POOLS or pool_cls in paths
    if isinstance(pool_cls, type):
        return any(f"{cls.__module__}:{cls.__qualname__}" in paths for cls in pool_cls.__mro__)
    return False


def _finish_publish(item: tuple) -> None:
    """A publish span's end, deferred by ``after_task_publish``: built, attributes set, ended."""
    held, end_ns = item
    _record_late_attributes(held).end(end_time=end_ns)


def _queue_wait(published: Any, start_ns: int) -> tuple[float, int] | None:
    """``(queue wait in ms, published ns)`` from the ``contrail_published_ns`` header, or None."""
    try:
        published_ns = int(published) if published is not None else None
    except (TypeError, ValueError):
        return None
    if not published_ns:
        return None
    return max(0.0, (start_ns - published_ns) / 1e6), published_ns


def _run_attributes_later(request: Any, name: str, task_id: str, start_ns: int, published: Any) -> dict[str, Any]:
    """:func:`_run_attributes` of a span :meth:`CeleryTracing._start_run` started (queue wait computed now)."""
    attrs = _request_attributes(request, name, task_id)
    wait = _queue_wait(published, start_ns)
    if wait is not None:
        attrs["celery.queue_wait_ms"], attrs["celery.published_ns"] = wait
    return attrs


def _add_dequeued_event(span: Any, late: tuple) -> None:
    """The ``celery.dequeued`` event of a span :meth:`CeleryTracing._start_run` started, first among its events.

    It happened when the task started, before anything the task itself
    recorded; on an SDK span it goes in front of those (same lock, same
    ended-span check), else it is added as any event.
    """
    start_ns, published = late[4], late[5]
    wait = _queue_wait(published, start_ns)
    if wait is None:
        return
    attrs = {"celery.queue_wait_ms": wait[0], "celery.published_ns": wait[1]}
    events = getattr(getattr(span, "_events", None), "_dq", None)
    lock = getattr(span, "_lock", None)
    if _SdkEvent is not None and type(events) is deque and lock is not None and events.maxlen is not None:
        with lock:
            if span._end_time is None and len(events) < events.maxlen:
                events.appendleft(_SdkEvent("celery.dequeued", attrs, start_ns))
                return
    _add_own_event(span, "celery.dequeued", attrs, start_ns)


def _run_attributes(request: Any, name: str, task_id: str, extra: Mapping[str, Any]) -> dict[str, Any]:
    attrs = _request_attributes(request, name, task_id)
    attrs.update(extra)
    return attrs


class _InFlight:
    """Spans waiting for their closing signal, by task id; bounded so a lost signal cannot leak.

    Values are ``(span, context token or None, late attributes)``. A plain dict
    (insertion-ordered, each operation atomic under the interpreter lock): the
    handlers on a task's path pay one dict operation, no lock.
    """

    def __init__(self) -> None:
        self._items: dict[str, tuple] = {}
        self.overflowed = 0

    def put(self, key: str, value: Any) -> None:
        items = self._items
        items[key] = value
        if len(items) > MAX_IN_FLIGHT:
            self._evict()

    def _evict(self) -> None:
        """End the oldest spans beyond the bound (their closing signal never came)."""
        items = self._items
        while len(items) > MAX_IN_FLIGHT:
            try:
                evicted = items.pop(next(iter(items)))
            except (StopIteration, KeyError, RuntimeError):  # another thread changed the dict: look again
                continue
            self.overflowed += 1
            span = _record_late_attributes(evicted)
            span.set_status(Status(StatusCode.ERROR, "closing signal never arrived"))
            span.end()

    def get(self, key: str) -> Any:
        return self._items.get(key)

    def pop(self, key: str) -> Any:
        return self._items.pop(key, None)

    def clear(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class CeleryTracing:
    """The signal handlers of one TracingManager, and the spans they hold open."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.apps: weakref.WeakSet = weakref.WeakSet()
        self.publishing = _InFlight()   # task id -> producer span
        self.running = _InFlight()      # task id -> (consumer span, context token)
        self.received: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # worker parent: task id -> Request
        self.chord_links: OrderedDict[str, list] = OrderedDict()  # header group id -> [[trace, span], ...]
        self._connected: list[tuple[Any, str]] = []
        self.in_pool_child = False  # set by worker_process_init
        self.recorded_by_parent: OrderedDict[str, bool] = OrderedDict()
        self.discarded = 0  # run spans left to the worker parent because the child was terminated
        self._hot: HotSpans | None = None

    def hot_spans(self) -> HotSpans:
        """Starts the publish and run spans (see tracer.celery_spans); made once per tracer and process."""
        hot, tracer = self._hot, self.manager.tracer
        if hot is None or hot.tracer is not tracer:
            # kept on the tracer: instrumenting again (or another manager on it) reuses the template
            hot = getattr(tracer, "_contrail_hot_spans", None)
            if type(hot) is not HotSpans or hot.tracer is not tracer:
                hot = HotSpans(tracer)
                try:
                    tracer._contrail_hot_spans = hot
                except AttributeError:  # a tracer that takes no attributes: one per CeleryTracing
                    pass
            self._hot = hot
        return hot

    @property
    def tracer(self):
        return self.manager.tracer

    def _finish_run(self, item: tuple) -> None:
        """A run span's end, deferred by ``task_postrun``: attributes, final state, status, ``end()``."""
        held, state, end_ns = item
        span = _record_late_attributes(held, {"celery.state": state})
        if state == "SUCCESS":  # task_success fires just before task_postrun; one handler does both
            span.set_status(_STATUS_OK)
        span.end(end_time=end_ns)
        self.hot_spans().prepare(SPARE_SPANS)  # the object of a coming task's span, made while nothing waits

    # ---- wiring
    def connect(self) -> None:
        from celery import signals

        for name in SIGNAL_NAMES:
            if name == "task_received" and _tasks_run_in_process:
                continue
            signal = getattr(signals, name)
            uid = f"contrail-{id(self.manager)}-{name}"
            signal.connect(getattr(self, "on_" + name), weak=False, dispatch_uid=uid)
            self._connected.append((signal, uid))

    def _disconnect(self, name: str) -> None:
        """Disconnect one handler (see on_worker_init)."""
        for signal, uid in list(self._connected):
            if uid == f"contrail-{id(self.manager)}-{name}":
                signal.disconnect(dispatch_uid=uid)
                self._connected.remove((signal, uid))

    def disconnect(self) -> None:
        for signal, uid in self._connected:
            signal.disconnect(dispatch_uid=uid)
        self._connected.clear()

    def _guard(self, what: str, exc: BaseException) -> None:
        """Tracing must never break a task or a publish: log and carry on."""
        logger.warning("contrail: %s handler failed: %s: %s", what, type(exc).__name__, exc)

    # ---- publish side
    def on_before_task_publish(self, sender=None, body=None, exchange=None, routing_key=None,
                               headers=None, properties=None, **_: Any) -> None:
        if headers is None or not self.manager.enabled:
            return
        try:
            if "id" in headers:  # protocol 2: id and task name are message headers
                task_id, task_name = headers["id"], headers.get("task")
            else:
                task_id, task_name = _message_field(headers, body, "id"), _message_field(headers, body, "task")
            if not task_id:
                return
            if type(task_id) is not str:
                task_id = _text(task_id)
            if type(task_name) is not str or not task_name:
                task_name = _text(task_name or sender or "unknown")
            # the span object is built once the message has left (see _record_late_attributes); what the
            # message needs now is the sampling decision and the ids
            # In a round trip this runs on cold caches, where each call costs microseconds: the common
            # case below reads dicts directly rather than through the helpers (same answers).
            name = "publish " + task_name
            hot = self._hot
            if hot is None or hot.tracer is not self.manager.tracer:
                hot = self.hot_spans()
            current = otel_context.get_current()  # the parent span and the baggage both come from it
            retrying = self.running._items.get(task_id)
            if retrying is not None:
                # The running task republishes itself (a retry), maybe from inside a span of its own (the
                # call that failed): the next attempt belongs to the attempt, not to that call.
                current = trace.set_span_in_context(retrying[0], current)
            plain = type(current) is otel_context.Context
            current_span = current.get(_SPAN_KEY) if plain else trace.get_current_span(current)
            parent = (current_span.get_span_context() if current_span is not None and isinstance(current_span, Span)
                      else None)
            # A retry or chain republishes the headers it arrived with: replace, never append.
            for key in PROPAGATION_KEYS:
                if key in headers:
                    del headers[key]
            now = time.time_ns()
            embed = body[2] if type(body) is tuple and len(body) == 3 else None  # protocol 2: (args, kwargs, embed)
            chord = (embed.get("chord") if type(embed) is dict
                     else body is not None and _embedded_chord(body))
            baggage = (current.get(_BAGGAGE_KEY) if plain and _BAGGAGE_KEY is not None else _has_baggage(current))
            ids = hot.fast_ids(parent) if hot.usable and not chord and not baggage else None
            if ids is not None:
                # the common case: only the ids go out now, formatted as the W3C propagator does
                trace_id, span_id, flags, trace_state = ids[0], ids[1], ids[2], ids[3]
                headers["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
                if trace_state:
                    headers["tracestate"] = trace_state.to_header()
                span = Decided(hot, name, current, SpanKind.PRODUCER, ids, now)
            else:
                span = hot.decide(name, current, SpanKind.PRODUCER, (), now, parent) if hot.usable else None
                if span is None:
                    span = self.tracer.start_span(name, current, kind=SpanKind.PRODUCER, start_time=now)
                _inject(headers, span, current)
                if chord:
                    self._note_chord_header(headers, body, span)
            headers[PUBLISHED_HEADER] = now
            countdown = (properties.get("countdown") if type(properties) is dict or isinstance(properties, Mapping)
                         else None)
            # attributes are built and set once the message is out (see _record_late_attributes)
            publishing = self.publishing._items
            publishing[task_id] = (span, None, (_publish_attributes, headers, body, exchange, routing_key, countdown,
                                                task_name, task_id))
            if len(publishing) > MAX_IN_FLIGHT:
                self.publishing._evict()
        except Exception as exc:  # noqa: BLE001 - see _guard
            self._guard("before_task_publish", exc)

    def _note_chord_header(self, headers: Mapping[str, Any], body: Any, span: Any) -> None:
        """A chord header member: carry its span context to the callback, so the callback can link it."""
        callback = _embedded_chord(body)
        if not callback or not isinstance(callback, dict):
            return
        group_id = _message_fields(headers, body).get("group")
        if not group_id:
            return
        ctx = span.get_span_context()
        links = self.chord_links.setdefault(_text(group_id), [])
        links.append([format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")])
        while len(self.chord_links) > 1000:
            self.chord_links.popitem(last=False)
        options = callback.setdefault("options", {})
        cb_headers = options.setdefault("headers", {}) if isinstance(options, dict) else None
        if isinstance(cb_headers, dict):
            cb_headers[LINKS_HEADER] = json.dumps(links)

    def on_after_task_publish(self, sender=None, body=None, headers=None, **_: Any) -> None:
        try:
            end_ns = time.time_ns()
            task_id = _message_field(headers, body, "id") if headers is not None else None
            held = self.publishing._items.pop(task_id if type(task_id) is str else _text(task_id), None) \
                if task_id else None
            if held is not None:  # built and ended by the export thread (see _finish_publish)
                processor = getattr(self.manager, "_processor", None)
                if processor is None:
                    _finish_publish((held, end_ns))
                else:
                    processor.defer(_finish_publish, (held, end_ns))
        except Exception as exc:  # noqa: BLE001
            self._guard("after_task_publish", exc)

    # ---- worker parent process
    def on_worker_init(self, sender=None, **_: Any) -> None:
        """A worker whose pool runs tasks in its own process needs no copy of each request.

        ``task_received`` keeps the request in the worker's parent so that a
        pool child dying under a task (hard time limit, revoke with terminate)
        can still be recorded. Solo, threads, eventlet and gevent pools run
        tasks in the worker's process: nothing can die apart from it, so the
        handler is disconnected and each task is received without it; handlers
        connected again later in this process (``instrument_celery`` after
        ``uninstrument_celery``) leave it out too.
        """
        global _tasks_run_in_process
        try:
            if _runs_tasks_in_process(getattr(sender, "pool_cls", None)):
                _tasks_run_in_process = True
                self._disconnect("task_received")
        except Exception as exc:  # noqa: BLE001
            self._guard("worker_init", exc)

    def on_task_received(self, sender=None, request=None, **_: Any) -> None:
        """Remember the request in the worker's parent, so a dead child's task can still be recorded."""
        try:
            if request is not None and getattr(request, "id", None):
                self.received[_text(request.id)] = request
        except Exception as exc:  # noqa: BLE001
            self._guard("task_received", exc)

    # ---- run side
    def on_task_prerun(self, sender=None, task_id=None, task=None, **_: Any) -> None:
        if not self.manager.enabled or task is None or not task_id:
            return
        try:
            start_ns = time.time_ns()
            request = task.request
            name = getattr(task, "name", None)
            name = name if type(name) is str and name else _name(task, _name(sender))
            carrier = _carrier(request)
            if self._start_run(task_id, request, name, carrier, start_ns):
                return
            parent, parent_span = _extract_parent(carrier)
            attrs: dict[str, Any] = {}  # on top of _request_attributes, set when the span ends
            if carrier.get("traceparent") and parent is None:
                attrs["contrail.propagation_error"] = "malformed traceparent: started a new trace"
            event = None
            wait = _queue_wait(carrier.get(PUBLISHED_HEADER), start_ns)
            published_ns = wait[1] if wait is not None else None
            if wait is not None:
                wait_ms = wait[0]
                attrs["celery.queue_wait_ms"] = wait_ms
                attrs["celery.published_ns"] = published_ns
                event_attrs = {"celery.queue_wait_ms": wait_ms, "celery.published_ns": published_ns}
            links = _decode_links(carrier.get(LINKS_HEADER)) if carrier.get(LINKS_HEADER) else None
            context = parent or otel_context.Context()
            hot = self.hot_spans()
            if published_ns and _SdkEvent is not None:
                # numbers this module computed: stored as they are (see _add_own_event), once the span started
                event = _SdkEvent("celery.dequeued", event_attrs, start_ns)
            span = hot.start_span("run " + name, context, SpanKind.CONSUMER, links, start_ns,
                                  parent_span if parent is not None else None, event)
            if published_ns and event is None:
                _add_own_event(span, "celery.dequeued", event_attrs, start_ns)
            token = otel_context.attach(trace.set_span_in_context(span, context))
            task_id = _text(task_id)
            # attributes are built and set once the result is stored (see _record_late_attributes)
            self.running.put(task_id, (span, token, (_run_attributes, request, name, task_id, attrs)))
        except Exception as exc:  # noqa: BLE001
            self._guard("task_prerun", exc)

    def _start_run(self, task_id: Any, request: Any, name: str, carrier: Mapping[str, Any], start_ns: int) -> bool:
        """The run span of the common message, started with the least work before the task runs.

        A plain ``traceparent`` (what this module's publish handler writes)
        with no tracestate, baggage or links, and a tracer sampling as
        TracingManager sets it up: the span is started from the parsed ids
        and attached; its attributes and the ``celery.dequeued`` event are
        added when it ends (:meth:`_finish_run`). False for anything else,
        which takes the general path.
        """
        value = carrier.get("traceparent")
        if (type(value) is not str or "tracestate" in carrier or "baggage" in carrier
                or LINKS_HEADER in carrier):
            return False
        remote = _parse_traceparent(value)
        if remote is None or not remote.is_valid:
            return False
        hot = self._hot
        if hot is None or hot.tracer is not self.manager.tracer:
            hot = self.hot_spans()
        if not hot.usable:
            return False
        ids = hot.fast_ids(remote)
        if ids is None:
            return False
        # the contexts extract() and set_span_in_context() would make: only the span key is set
        parent = otel_context.Context({_SPAN_KEY: NonRecordingSpan(remote)})
        span = hot.start("run " + name, parent, SpanKind.CONSUMER, ids, start_ns)
        token = otel_context.attach(otel_context.Context({_SPAN_KEY: span}))
        task_id = task_id if type(task_id) is str else _text(task_id)
        self.running.put(task_id, (span, token, (_run_attributes_later, request, name, task_id, start_ns,
                                                 carrier.get(PUBLISHED_HEADER))))
        return True

    def on_task_postrun(self, sender=None, task_id=None, task=None, state=None, **_: Any) -> None:
        try:
            end_ns = time.time_ns()
            held = self.running._items.pop(task_id if type(task_id) is str else _text(task_id), None) \
                if task_id else None
            if held is None:
                return
            span, token = held[0], held[1]
            try:
                otel_context.detach(token)
            except Exception:  # detached on another thread or out of order: harmless
                pass
            if state:
                # attributes, status and end() on the export thread (see _finish_run): the worker goes
                # back to its next message now
                processor = getattr(self.manager, "_processor", None)
                item = (held, state if type(state) is str else _text(state), end_ns)
                if processor is None:
                    self._finish_run(item)
                else:
                    processor.defer(self._finish_run, item)
            elif self.in_pool_child:
                # No state: the child is being terminated (revoke, hard time limit) and SystemExit is
                # unwinding the task. The worker's parent records this run with the reason; ending
                # this span too would show the attempt twice.
                self.discarded += 1
            else:
                interrupted = sys.exc_info()[1]
                _record_late_attributes(held, {"celery.state": "INTERRUPTED"})
                span.set_status(Status(StatusCode.ERROR, f"interrupted: {type(interrupted).__name__}"
                                       if interrupted else "interrupted"))
                span.end()
        except Exception as exc:  # noqa: BLE001
            self._guard("task_postrun", exc)

    def on_task_failure(self, sender=None, task_id=None, exception=None, traceback=None, einfo=None,
                        **_: Any) -> None:
        try:
            held = self.running.get(_text(task_id)) if task_id else None
            if held is not None:
                _record_error(held[0], exception, einfo)
                return
            # No run span here: this is the worker's parent and the child died (hard time limit,
            # lost worker). Record the run from what the parent knows.
            reason = "time limit exceeded" if type(exception).__name__ == "TimeLimitExceeded" else "worker lost"
            self._record_from_parent(sender, _text(task_id), "FAILURE", reason, exception=exception, einfo=einfo)
        except Exception as exc:  # noqa: BLE001
            self._guard("task_failure", exc)

    def on_task_retry(self, sender=None, request=None, reason=None, einfo=None, **_: Any) -> None:
        try:
            task_id = getattr(request, "id", None)
            held = self.running.get(_text(task_id)) if task_id else None
            if held is None:
                return
            span = held[0]
            text = _text(reason) if reason is not None else ""
            span.set_attribute("celery.retry_reason", text[:1024])
            span.add_event("celery.retry", {"celery.retry_reason": text[:1024],
                                            "celery.retries": int(getattr(request, "retries", 0) or 0)})
        except Exception as exc:  # noqa: BLE001
            self._guard("task_retry", exc)

    def on_task_revoked(self, sender=None, request=None, terminated=None, signum=None, expired=None,
                        **_: Any) -> None:
        try:
            task_id = _text(getattr(request, "id", None) or "")
            if not task_id:
                return
            if expired:
                reason = "expired"
            elif terminated:
                reason = f"terminated (signal {signum})" if signum is not None else "terminated"
            else:
                reason = "revoked"
            held = self.running.get(task_id)
            if held is not None:  # threads/solo pool: the span is ours to close
                span = held[0]
                span.set_attribute("celery.revoke_reason", reason)
                span.set_status(Status(StatusCode.ERROR, f"revoked: {reason}"))
                return
            self._record_from_parent(sender, task_id, "REVOKED", reason, request=request,
                                     extra={"celery.terminated": bool(terminated), "celery.expired": bool(expired),
                                            **({"celery.signum": _text(signum)} if signum is not None else {})})
        except Exception as exc:  # noqa: BLE001
            self._guard("task_revoked", exc)

    def _record_from_parent(self, task: Any, task_id: str, state: str, reason: str, request: Any = None,
                            exception: BaseException | None = None, einfo: Any = None,
                            extra: Mapping[str, Any] | None = None) -> None:
        """A run span recorded after the fact by the worker's main process (the child never closed one)."""
        if not self.manager.enabled or task_id in self.recorded_by_parent:
            return  # a hard time limit is announced twice: on timeout, then as a lost worker
        self.recorded_by_parent[task_id] = True
        while len(self.recorded_by_parent) > MAX_IN_FLIGHT:
            self.recorded_by_parent.popitem(last=False)
        received = self.received.get(task_id)
        if request is None or not _carrier(request):
            request = getattr(received, "_context", None) or getattr(received, "request_dict", None) or request
        name = _name(task, _text(getattr(received, "name", None) or "unknown"))
        carrier = _carrier(request) if request is not None else {}
        if received is not None and not carrier.get("traceparent"):
            carrier = _carrier(getattr(received, "request_dict", {}) or {})
        parent = _extract(carrier)
        now = time.time_ns()
        time_start = getattr(received, "time_start", None)
        start_ns = int(time_start * 1e9) if time_start else now
        attrs = _request_attributes(request, name, task_id) if request is not None else {
            "messaging.system": "celery", "messaging.operation.type": "process",
            "messaging.message.id": task_id, "celery.task_name": name, "celery.task_id": task_id}
        attrs.update({"celery.state": state, "celery.recorded_by": "worker parent",
                      "celery.revoke_reason" if state == "REVOKED" else "celery.failure_reason": reason})
        worker_pid = getattr(received, "worker_pid", None)
        if worker_pid:
            attrs["celery.worker_pid"] = int(worker_pid)
        if received is not None and getattr(received, "hostname", None):
            attrs["celery.hostname"] = _text(received.hostname)
        published = carrier.get(PUBLISHED_HEADER)
        try:
            if published and time_start:
                attrs["celery.queue_wait_ms"] = max(0.0, (start_ns - int(published)) / 1e6)
        except (TypeError, ValueError):
            pass
        attrs.update(extra or {})
        span = self.tracer.start_span(f"run {name}", context=parent or otel_context.Context(),
                                      kind=SpanKind.CONSUMER, attributes=attrs, start_time=start_ns)
        if exception is not None:
            _record_error(span, exception, einfo)
        span.set_status(Status(StatusCode.ERROR, f"{state.lower()}: {reason}"))
        span.end(end_time=max(now, start_ns))

    def on_task_rejected(self, sender=None, message=None, exc=None, **_: Any) -> None:
        self._record_message_problem("reject", message, exc, "REJECTED")

    def on_task_unknown(self, sender=None, name=None, id=None, message=None, exc=None, **_: Any) -> None:
        self._record_message_problem("unknown", message, exc, "UNKNOWN", name=name, task_id=id)

    def _record_message_problem(self, verb: str, message: Any, exc: Any, state: str, name: Any = None,
                                task_id: Any = None) -> None:
        """A message the worker could not run: a short span in the sender's trace says why."""
        try:
            if not self.manager.enabled:
                return
            headers = getattr(message, "headers", None) or {}
            name = _text(name or headers.get("task") or "unknown")
            task_id = _text(task_id or headers.get("id") or "")
            parent = _extract(_carrier(headers))
            attrs = {"messaging.system": "celery", "messaging.operation.type": "process",
                     "celery.task_name": name, "celery.state": state}
            if task_id:
                attrs.update({"celery.task_id": task_id, "messaging.message.id": task_id})
            span = self.tracer.start_span(f"{verb} {name}", context=parent or otel_context.Context(),
                                          kind=SpanKind.CONSUMER, attributes=attrs)
            if isinstance(exc, BaseException):
                span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{state.lower()}: {exc}" if exc else state.lower()))
            span.end()
        except Exception as error:  # noqa: BLE001
            self._guard(f"task_{verb}", error)

    def on_task_internal_error(self, sender=None, task_id=None, exception=None, einfo=None, **_: Any) -> None:
        try:
            held = self.running.get(_text(task_id)) if task_id else None
            if held is not None:
                held[0].set_attribute("celery.internal_error", True)
                _record_error(held[0], exception, einfo)
            else:
                self._record_from_parent(sender, _text(task_id or ""), "FAILURE", "internal error",
                                         exception=exception, einfo=einfo)
        except Exception as exc:  # noqa: BLE001
            self._guard("task_internal_error", exc)

    # ---- process lifecycle
    def on_worker_process_init(self, **_: Any) -> None:
        """A fresh pool child: forget the parent's in-flight state; the manager re-arms its exporter."""
        self.publishing.clear()
        self.running.clear()
        self.received.clear()
        self.in_pool_child = True
        hook = getattr(self.manager, "after_fork", None)
        if callable(hook):
            try:
                hook()
            except Exception as exc:  # noqa: BLE001
                self._guard("worker_process_init", exc)

    def on_worker_process_shutdown(self, **_: Any) -> None:
        """A pool child about to exit (recycled or shut down): ship its spans first."""
        self._flush("worker_process_shutdown")

    def on_worker_shutdown(self, **_: Any) -> None:
        self._flush("worker_shutdown")

    def _flush(self, what: str) -> None:
        try:
            self.manager.flush(5.0)
        except Exception as exc:  # noqa: BLE001
            self._guard(what, exc)


def _record_error(span: Any, exception: BaseException | None, einfo: Any = None) -> None:
    """ERROR status and an OTel exception event with type, message and stack."""
    if exception is None:
        span.set_status(Status(StatusCode.ERROR, "task failed"))
        return
    stack = getattr(einfo, "traceback", None)
    if not stack:
        stack = "".join(traceback.format_exception(type(exception), exception, exception.__traceback__))
    span.add_event("exception", {
        "exception.type": type(exception).__qualname__,
        "exception.message": str(exception)[:4096],
        "exception.stacktrace": _text(stack)[:16384],
    })
    span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"[:1024]))
