"""One TracingManager's Celery handlers: the state they share and their wiring to Celery's signals."""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from typing import Any

from .hot_spans import HotSpans
from .inflight import InFlight, task_runner
from .publish import PublishHandlers
from .run import RunHandlers
from .worker import WorkerHandlers, tasks_run_in_process

logger = logging.getLogger("contrail.celery")

SIGNAL_NAMES = (
    "worker_init", "before_task_publish", "after_task_publish", "task_received", "task_prerun", "task_postrun",
    "task_failure", "task_retry", "task_revoked", "task_rejected", "task_unknown",
    "task_internal_error", "worker_process_init", "worker_process_shutdown", "worker_shutdown",
)

_registry: dict[int, "CeleryTracing"] = {}
_registry_lock = threading.Lock()
# one HotSpans per tracer: instrumenting again, or another manager on the same tracer, reuses its span template
_HOT_BY_TRACER: "weakref.WeakKeyDictionary[Any, HotSpans]" = weakref.WeakKeyDictionary()


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


class CeleryTracing(PublishHandlers, RunHandlers, WorkerHandlers):
    """The signal handlers of one TracingManager (``on_<signal>``), and the spans they hold open.

    The handlers live with their side of a task's life: :mod:`~tracer.celery.publish`
    (sender), :mod:`~tracer.celery.run` (task run), :mod:`~tracer.celery.worker`
    (worker process); this class holds their shared state and connects them.
    """

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self.apps: weakref.WeakSet = weakref.WeakSet()
        self.publishing = InFlight()   # task id -> producer span
        self.running = InFlight()      # (task id, runner) -> (consumer span, context token): one per attempt
        self.runner = task_runner()    # names the thread (or greenlet) running a task; see task_runner
        self.received: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # worker parent: task id -> Request
        self.chord_links: OrderedDict[str, list] = OrderedDict()  # header group id -> [[trace, span], ...]
        self._connected: list[tuple[Any, str]] = []
        self.in_pool_child = False  # set by worker_process_init
        self.recorded_by_parent: OrderedDict[str, bool] = OrderedDict()
        self.discarded = 0  # run spans left to the worker parent because the child was terminated
        self._hot: HotSpans | None = None

    def hot_spans(self) -> HotSpans:
        """Starts the publish and run spans (see tracer.celery.hot_spans); made once per tracer and process."""
        hot, tracer = self._hot, self.manager.tracer
        if hot is None or hot.tracer is not tracer:
            try:
                hot = _HOT_BY_TRACER.get(tracer)
            except TypeError:  # a tracer that cannot be weakly referenced: one per CeleryTracing
                hot = None
            if hot is None:
                hot = HotSpans(tracer)
                try:
                    _HOT_BY_TRACER[tracer] = hot
                except TypeError:
                    pass
            self._hot = hot
        return hot

    @property
    def tracer(self):
        return self.manager.tracer

    # ---- wiring
    def connect(self) -> None:
        from celery import signals

        for name in SIGNAL_NAMES:
            if name == "task_received" and tasks_run_in_process():
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

