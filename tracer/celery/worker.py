"""The worker's own life: which pool it runs, what its main process records for a dead pool child,
messages it could not run, and flushing spans before a process exits."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.trace import SpanKind, Status, StatusCode

from .carrier import PUBLISHED_HEADER, extract, request_carrier
from .inflight import MAX_IN_FLIGHT, record_error
from .messages import request_attributes, task_name, text

IN_PROCESS_POOLS = ("solo", "threads", "eventlet", "gevent")
# Set by worker_init in a worker whose pool runs tasks in its own process (see on_worker_init). Kept
# for the process, so that handlers connected after the worker started leave task_received out too.
_pool = {"tasks_run_in_process": False}


def tasks_run_in_process() -> bool:
    """Whether this process is a worker whose pool runs tasks in the worker's own process."""
    return _pool["tasks_run_in_process"]


def runs_tasks_in_process(pool_cls: Any) -> bool:
    """Whether a worker's pool (alias, ``module:Class`` path or class) runs tasks in the worker's process.

    Decided by name, without importing the pool's module: a worker_init
    handler runs before Celery imports it, so that eventlet and gevent can be
    patched in first. An unknown pool counts as one that runs tasks elsewhere.
    """
    from celery.concurrency import ALIASES

    paths = {ALIASES[alias] for alias in IN_PROCESS_POOLS if alias in ALIASES}
    if isinstance(pool_cls, str):
        return pool_cls in IN_PROCESS_POOLS or pool_cls in paths
    if isinstance(pool_cls, type):
        return any(f"{cls.__module__}:{cls.__qualname__}" in paths for cls in pool_cls.__mro__)
    return False


class WorkerHandlers:
    """``worker_init``, ``task_received``, ``task_rejected``, ``task_unknown`` and the process lifecycle
    signals; part of :class:`tracer.celery.tracing.CeleryTracing`."""

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
        try:
            if runs_tasks_in_process(getattr(sender, "pool_cls", None)):
                _pool["tasks_run_in_process"] = True
                self._disconnect("task_received")
        except Exception as exc:  # noqa: BLE001
            self._guard("worker_init", exc)

    def on_task_received(self, sender=None, request=None, **_: Any) -> None:
        """Remember the request in the worker's parent, so a dead child's task can still be recorded."""
        try:
            if request is not None and getattr(request, "id", None):
                self.received[text(request.id)] = request
        except Exception as exc:  # noqa: BLE001
            self._guard("task_received", exc)

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
        if request is None or not request_carrier(request):
            request = getattr(received, "request_dict", None) or request
        name = task_name(task, text(getattr(received, "name", None) or "unknown"))
        carrier = request_carrier(request) if request is not None else {}
        if received is not None and not carrier.get("traceparent"):
            carrier = request_carrier(getattr(received, "request_dict", {}) or {})
        parent = extract(carrier)
        now = time.time_ns()
        time_start = getattr(received, "time_start", None)
        start_ns = int(time_start * 1e9) if time_start else now
        attrs = request_attributes(request, name, task_id) if request is not None else {
            "messaging.system": "celery", "messaging.operation.type": "process",
            "messaging.message.id": task_id, "celery.task_name": name, "celery.task_id": task_id}
        attrs.update({"celery.state": state, "celery.recorded_by": "worker parent",
                      "celery.revoke_reason" if state == "REVOKED" else "celery.failure_reason": reason})
        worker_pid = getattr(received, "worker_pid", None)
        if worker_pid:
            attrs["celery.worker_pid"] = int(worker_pid)
        if received is not None and getattr(received, "hostname", None):
            attrs["celery.hostname"] = text(received.hostname)
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
            record_error(span, exception, einfo)
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
            name = text(name or headers.get("task") or "unknown")
            task_id = text(task_id or headers.get("id") or "")
            parent = extract(request_carrier(headers))
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
