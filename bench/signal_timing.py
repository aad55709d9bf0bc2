"""Time Celery's signal dispatch and Contrail's handlers where they run: inside real round trips.

Imported by ``bench_celery_signals.py`` in the client and, through
``CONTRAIL_TEST_SIGNAL_TIMING=1``, by the test app in the worker, before any
handler is connected. It wraps ``Signal.send`` (and the copies Celery's task
tracer keeps of the prerun/postrun senders) and Contrail's four hot handlers
with a clock, and keeps every duration; the worker's are fetched with the
``contrail_signal_timing`` remote-control command.

In a loop these calls take a few microseconds; in a round trip they run on
cold caches (the process slept while the broker and the other side worked),
which is what this measures. The clock itself adds about a microsecond to
each figure.
"""

from __future__ import annotations

import time
from typing import Any

from celery.utils.dispatch import signal as _signal

HANDLERS = ("on_before_task_publish", "on_after_task_publish", "on_task_prerun", "on_task_postrun")
durations: dict[str, list[int]] = {}
_clock = time.perf_counter_ns
_installed = False


def _timed(name: str, call: Any) -> Any:
    record = durations.setdefault(name, []).append

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = _clock()
        try:
            return call(*args, **kwargs)
        finally:
            record(_clock() - start)

    return timed


def install() -> None:
    """Wrap the dispatch and the handlers (once per process, before the handlers are connected)."""
    global _installed
    if _installed:
        return
    _installed = True
    from celery.app import trace as celery_trace

    from tracer.celery import CeleryTracing

    send = _signal.Signal.send

    def timed_send(self: Any, sender: Any, **named: Any) -> Any:
        start = _clock()
        try:
            return send(self, sender, **named)
        finally:
            durations.setdefault("send " + str(self.name), []).append(_clock() - start)

    _signal.Signal.send = timed_send
    # the task tracer keeps its own references to these two senders
    celery_trace.send_prerun = celery_trace.signals.task_prerun.send
    celery_trace.send_postrun = celery_trace.signals.task_postrun.send
    for name in HANDLERS:
        method = getattr(CeleryTracing, name)
        setattr(CeleryTracing, name, _timed(name, method))


def summary(reset: bool = True) -> dict[str, dict[str, float]]:
    """Per signal and handler: calls and the median, p90 and mean duration in microseconds."""
    out = {}
    for name, values in sorted(durations.items()):
        if not values:
            continue
        ordered = sorted(values)
        n = len(ordered)
        out[name] = {"n": n, "p50_us": ordered[n // 2] / 1e3, "p90_us": ordered[int(n * 0.9)] / 1e3,
                     "mean_us": sum(ordered) / n / 1e3}
    if reset:
        for values in durations.values():
            values.clear()
    return out


def register_control_command() -> None:
    """``contrail_signal_timing``: the worker's figures since the last call (then reset)."""
    from celery.worker.control import control_command

    @control_command()
    def contrail_signal_timing(state: Any) -> dict:
        return summary()
