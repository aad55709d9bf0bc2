"""Celery app used by the Celery tests: both the test process and the worker subprocesses import it.

Everything comes from the environment so one module serves every broker,
queue and protocol: CONTRAIL_TEST_BROKER_URL, CONTRAIL_TEST_BACKEND_URL,
CONTRAIL_TEST_QUEUE, CONTRAIL_TEST_TASK_PROTOCOL, plus the usual CONTRAIL_*
settings of the TracingManager. CONTRAIL_TEST_SIGNAL_TIMING=1 times the
signals and handlers in the worker (bench/bench_celery_signals.py).
"""

from __future__ import annotations

import os
import threading
import time

from celery import Celery
from celery.worker.control import control_command

from tracer import celery as tracer_celery
from tracer.manager import TracingManager

if os.environ.get("CONTRAIL_TEST_SIGNAL_TIMING") == "1":  # before any handler is connected
    from bench import signal_timing

    signal_timing.install()
    signal_timing.register_control_command()

app = Celery("contrail_tests", broker=os.environ["CONTRAIL_TEST_BROKER_URL"],
             backend=os.environ["CONTRAIL_TEST_BACKEND_URL"])
app.conf.update(
    task_protocol=int(os.environ.get("CONTRAIL_TEST_TASK_PROTOCOL", "2")),
    task_default_queue=os.environ.get("CONTRAIL_TEST_QUEUE", "celery"),
    task_track_started=True,
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_prefetch_multiplier=1,
)

tracing = TracingManager(service_name=os.environ.get("CONTRAIL_SERVICE_NAME", "celery-tests"),
                         celery_app=app if os.environ.get("CONTRAIL_TEST_INSTRUMENT", "1") == "1" else None)


@app.task
def add(x, y):
    return x + y


@app.task
def total(values):
    return sum(values)


@app.task
def fan_out(count):
    """Publishes from inside a task: the children must stay in this trace."""
    return [add.delay(i, i).id for i in range(count)]


@app.task(bind=True, max_retries=3)
def flaky(self, failures):
    """Fails ``failures`` times, retrying each time, then succeeds."""
    if self.request.retries < failures:
        raise self.retry(exc=RuntimeError(f"attempt {self.request.retries} failed"), countdown=0.05)
    return self.request.retries


_attempt_started: dict[str, threading.Event] = {}


def attempt_started(task_id: str) -> threading.Event:
    return _attempt_started.setdefault(task_id, threading.Event())


class WaitsForItsRetry(app.Task):
    """A task whose attempt, once it asked for a retry, finishes only after the retry has started."""

    def on_retry(self, exc, task_id, args, kwargs, einfo):
        attempt_started(task_id).wait(20)  # a solo pool cannot start the retry: the attempt goes on after 20 s


@app.task(bind=True, base=WaitsForItsRetry, max_retries=1)
def retried_while_finishing(self):
    """Retries at once; in a threads pool the second attempt (same task id) runs while the first is ending."""
    if self.request.retries == 0:
        raise self.retry(countdown=0)
    attempt_started(self.request.id).set()
    return self.request.retries


@app.task(bind=True, max_retries=2)
def flaky_call(self):
    """Retries from inside a span of its own (the call that failed), as real tasks do."""
    with tracing.span("call flaky backend", kind="client"):
        if self.request.retries < 1:
            raise self.retry(exc=TimeoutError("backend timed out"), countdown=0.05)
    return self.request.retries


@app.task
def boom(message="boom"):
    raise ValueError(message)


@app.task(time_limit=1)
def overrun(seconds):
    """Runs past its hard time limit: the pool child is killed mid-task."""
    time.sleep(seconds)


@app.task
def sleeper(seconds):
    time.sleep(seconds)


def crunch_numbers(seconds):
    """Burns CPU for ``seconds``: the function a profile of the tasks below must name."""
    total, deadline = 0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        total += sum(range(100))
    return total


@app.task
@tracing.profile("render")
def render_report(seconds):
    """A profiled task: the profile belongs to the task's run span."""
    return crunch_numbers(seconds)


@app.task
def crunch(seconds):
    """An unprofiled CPU-bound task (the slow-span mode samples it when its worker has it on)."""
    return crunch_numbers(seconds)


@app.task
def pipeline():
    """The end-to-end flow: one subtask retries once, one fails."""
    return [flaky.delay(1).id, boom.delay("payment declined").id]


@control_command(args=[("on", int)], signature="<on>")
def contrail_tracing(state, on):
    """Switch Contrail's handlers on (1) or off (0) in this worker, between two tasks.

    The Celery benchmark uses it to time traced and untraced round trips on
    the same worker in alternating blocks. Replies with the signals connected.
    """
    if on:
        connected = tracer_celery.instrument_celery(tracing, app)._connected
    else:
        tracer_celery.uninstrument_celery(tracing)
        connected = []
    return {"on": bool(on), "signals": sorted(uid.rsplit("-", 1)[1] for _, uid in connected)}
