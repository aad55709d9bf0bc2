"""Spans waiting for their closing signal, and how such a span is completed.

A publish or run span is opened by one signal and closed by another; between
the two it is held here, with the attributes it will get
(:func:`record_late_attributes`): building them waits until the message is out
or the result is stored, and then runs on the export thread. Publish spans are
held by task id; run spans by attempt (:func:`task_runner`).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.trace import Status, StatusCode

from .. import otel_internals
from .carrier import queue_wait
from .hot_spans import Decided, Pending
from .messages import run_attributes_later, text

MAX_IN_FLIGHT = 10000  # bound on spans waiting for their closing signal
SPARE_SPANS = 1024  # bound on span objects made ahead for the run spans of coming tasks (see HotSpans.prepare)


def task_runner() -> Callable[[], Any]:
    """The function naming the thread or greenlet that runs the current task: Celery's own.

    A retry keeps its task id, and in a threads, eventlet or gevent pool it
    can start before the attempt that published it has ended. Each attempt
    runs from ``task_prerun`` to ``task_postrun`` on one thread (or
    greenlet), where Celery keeps its request (``Task.request``, a stack per
    :func:`celery.utils.threads.get_ident`); ``(task id, that identity)`` is
    what names one attempt's run span.
    """
    try:
        from celery.utils.threads import get_ident
    except ImportError:  # no Celery: no tasks either; threads are what tells callers apart
        from threading import get_ident
    return get_ident


class InFlight:
    """Spans waiting for their closing signal, by key; bounded so a lost signal cannot leak.

    ``spans`` maps a key (a task id for a publish span, ``(task id, runner)``
    for a run span) to ``(span, context token or None, late
    attributes)``. It is a plain dict (insertion-ordered, each operation
    atomic under the interpreter lock) that the handlers on a task's path use
    directly: one dict operation, no lock, no method call. Whoever adds to it
    directly calls :meth:`evict` when it grows past ``MAX_IN_FLIGHT``.
    """

    def __init__(self) -> None:
        self.spans: dict[Any, tuple] = {}
        self.overflowed = 0

    def put(self, key: Any, value: Any) -> None:
        spans = self.spans
        spans[key] = value
        if len(spans) > MAX_IN_FLIGHT:
            self.evict()

    def evict(self) -> None:
        """End the oldest spans beyond the bound (their closing signal never came)."""
        spans = self.spans
        while len(spans) > MAX_IN_FLIGHT:
            try:
                evicted = spans.pop(next(iter(spans)))
            except (StopIteration, KeyError, RuntimeError):  # another thread changed the dict: look again
                continue
            self.overflowed += 1
            span = record_late_attributes(evicted)
            span.set_status(Status(StatusCode.ERROR, "closing signal never arrived"))
            span.end()

    def get(self, key: Any) -> Any:
        return self.spans.get(key)

    def pop(self, key: Any) -> Any:
        return self.spans.pop(key, None)

    def of_task(self, key: tuple) -> Any:
        """The run span of attempt ``key``, else the oldest one of its task id held by any runner.

        A signal about a task sent from another thread than the one running it
        (a revoke, a cancel sent by the worker's consumer) names the task, not the attempt.
        """
        spans = self.spans
        held = spans.get(key)
        if held is not None or not spans:
            return held
        task_id = key[0]
        for other, held in list(spans.items()):
            if other[0] == task_id:
                return held
        return None

    def clear(self) -> None:
        self.spans.clear()

    def __len__(self) -> int:
        return len(self.spans)


def record_late_attributes(held: tuple, extra: Mapping[str, Any] | None = None) -> Any:
    """Set the attributes an in-flight span kept back (plus ``extra``); return the span.

    ``held`` is ``(span, context token, late)``; ``late`` is an attribute
    dict, or a tuple ``(builder, *arguments)`` whose builder returns it
    (:mod:`tracer.celery.messages`). Building and setting attributes waits
    until the message is out (publish) or the result is stored (run), and
    then runs on the export thread (:func:`finish_publish`,
    ``CeleryTracing.finish_run``): the round trip the caller waits for does
    not pay for it. A publish span is held as a
    :class:`~tracer.celery.hot_spans.Pending` or ``Decided`` one (sampled, ids
    made, start time taken) and built here, for the same reason. Every path
    that ends one of these spans comes through here, so the exported span is
    the same.
    """
    span, _, late = held
    if type(span) is Pending or type(span) is Decided:
        span = span.start()
    if type(late) is tuple and late[0] is run_attributes_later:
        add_dequeued_event(span, late)
    attrs = late[0](*late[1:]) if isinstance(late, tuple) else dict(late or {})
    if extra:
        attrs.update(extra)
    if attrs:
        otel_internals.set_own_attributes(span, attrs)
    return span


def add_dequeued_event(span: Any, late: tuple) -> None:
    """The ``celery.dequeued`` event of a run span started on the fast path, first among its events.

    It happened when the task started, before anything the task itself recorded.
    """
    start_ns, published = late[4], late[5]
    wait = queue_wait(published, start_ns)
    if wait is None:
        return
    otel_internals.add_first_event(span, "celery.dequeued",
                                   {"celery.queue_wait_ms": wait[0], "celery.published_ns": wait[1]}, start_ns)


def finish_publish(item: tuple) -> None:
    """A publish span's end, deferred by ``after_task_publish``: built, attributes set, ended."""
    held, end_ns = item
    record_late_attributes(held).end(end_time=end_ns)


def record_error(span: Any, exception: BaseException | None, einfo: Any = None) -> None:
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
        "exception.stacktrace": text(stack)[:16384],
    })
    span.set_status(Status(StatusCode.ERROR, f"{type(exception).__name__}: {exception}"[:1024]))
