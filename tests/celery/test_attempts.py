"""Two attempts of one task id in flight at once, run by Celery's own task tracer on two threads in this process.

A retry keeps its task id; in a threads (eventlet, gevent) pool it can start before the attempt that
published it has ended. Each attempt's run span must end with its own state, and a signal sent from another
thread (a revoke) still finds the task's span.
"""

from __future__ import annotations

import threading
import uuid

import pytest
from celery import Celery, signals
from celery.app.trace import build_tracer
from celery.exceptions import Retry

from tests.tracer.tracer_helpers import stream_spans
from tracer import celery as celery_tracing
from tracer.manager import TracingManager


@pytest.fixture
def manager(redis_url, tmp_path):
    manager = TracingManager(service_name="attempts", redis_url=redis_url, data_dir=str(tmp_path))
    yield manager
    celery_tracing.uninstrument_celery(manager)
    manager.shutdown()


def test_an_attempt_ending_after_the_next_one_started_ends_its_own_span(manager, redis_url):
    app = Celery(f"attempts-{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    second_started, first_ended = threading.Event(), threading.Event()

    @app.task(bind=True, name="tests.attempts.work")
    def work(self):
        if self.request.retries == 0:
            assert second_started.wait(10)
            raise Retry("again")  # ends after the second attempt started: task_retry, task_postrun now
        second_started.set()
        assert first_ended.wait(10)
        return "done"

    tracing = celery_tracing.instrument_celery(manager, app)
    run = build_tracer(work.name, work, app=app)
    task_id = str(uuid.uuid4())

    def attempt(retries):
        run(task_id, (), {}, {"id": task_id, "retries": retries, "hostname": "w@h",
                              "delivery_info": {"routing_key": "q"}})

    first = threading.Thread(target=attempt, args=(0,))
    second = threading.Thread(target=attempt, args=(1,))
    first.start()
    second.start()
    first.join(20)
    first_ended.set()
    second.join(20)
    assert len(tracing.running) == 0  # both ended, nothing held
    assert manager.flush(10)
    runs = sorted((s for s in stream_spans(redis_url) if s["name"] == "run tests.attempts.work"),
                  key=lambda s: s["attributes"]["celery.retries"])
    assert [(s["attributes"]["celery.retries"], s["attributes"]["celery.state"]) for s in runs] == \
        [(0, "RETRY"), (1, "SUCCESS")]
    assert [e["name"] for e in runs[0]["events"]].count("celery.retry") == 1
    assert not any(e["name"] == "celery.retry" for e in runs[1]["events"])
    assert runs[0]["span_id"] != runs[1]["span_id"]


def test_a_revoke_sent_from_another_thread_finds_the_running_attempt(manager, redis_url):
    app = Celery(f"attempts-{uuid.uuid4().hex[:6]}", broker="memory://", backend="cache+memory://")
    running, revoked = threading.Event(), threading.Event()
    task_id = str(uuid.uuid4())

    @app.task(name="tests.attempts.long")
    def long():
        running.set()
        assert revoked.wait(10)

    celery_tracing.instrument_celery(manager, app)
    run = build_tracer(long.name, long, app=app)
    worker = threading.Thread(target=run, args=(task_id, (), {}, {"id": task_id, "delivery_info": {"routing_key": "q"}}))
    worker.start()
    assert running.wait(10)
    request = type("Request", (), {"id": task_id})()
    signals.task_revoked.send(sender=long, request=request, terminated=False, signum=None, expired=False)
    revoked.set()
    worker.join(20)
    assert manager.flush(10)
    [span] = [s for s in stream_spans(redis_url) if s["name"] == "run tests.attempts.long"]
    assert span["attributes"]["celery.revoke_reason"] == "revoked"
