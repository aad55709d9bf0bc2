"""Celery signal tracing against a real prefork worker and Redis broker; spans read back from the stream."""

from __future__ import annotations

import json

import pytest
from celery import Celery, chain, chord, group, signals
from opentelemetry import trace

from tests.celery.helpers import count, hex_span, hex_trace, named, one, wait_for_spans
from tests.support.servers import wait_until

pytestmark = pytest.mark.xdist_group("celery")

ADD = "tests.celery.apps.tasks.add"


def test_publish_and_run_spans_are_parent_and_child(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        assert tasks.add.delay(2, 3).get(timeout=20) == 5
    tasks.tracing.flush(5)
    spans = wait_for_spans(spans_client, hex_trace(root), count(f"run {ADD}", 1))
    publish, run = one(spans, f"publish {ADD}"), one(spans, f"run {ADD}")
    assert publish["parent_span_id"] == hex_span(root)
    assert publish["kind"] == "producer" and run["kind"] == "consumer"
    assert run["parent_span_id"] == publish["span_id"]
    assert publish["service"] == "celery-client" and run["service"] == "celery-worker"
    attrs = run["attributes"]
    assert attrs["messaging.system"] == "celery"
    assert attrs["messaging.operation.type"] == "process"
    assert attrs["messaging.destination.name"] == "main"
    assert attrs["celery.task_id"] == attrs["messaging.message.id"] == publish["attributes"]["celery.task_id"]
    assert attrs["celery.state"] == "SUCCESS" and run["status_code"] == "ok"
    assert attrs["celery.retries"] == 0
    assert attrs["celery.root_id"] == attrs["celery.task_id"]
    assert attrs["celery.hostname"].startswith("main@")
    assert attrs["celery.queue_wait_ms"] >= 0
    assert any(e["name"] == "celery.dequeued" for e in run["events"])
    assert publish["attributes"]["messaging.operation.type"] == "publish"


def test_send_task_by_name_unregistered_in_sender_ends_span_and_detaches(tasks, worker, spans_client):
    bare = Celery("bare-sender", broker=tasks.app.conf.broker_url, backend=tasks.app.conf.result_backend)
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        result = bare.send_task(ADD, args=(1, 1), queue="main")
        assert trace.get_current_span() is root  # nothing left attached by the publish
        assert result.get(timeout=20) == 2
    assert not trace.get_current_span().get_span_context().is_valid
    tracing_state = tasks.tracing.instrument_celery()
    assert result.id not in tracing_state.publishing.spans
    tasks.tracing.flush(5)
    spans = wait_for_spans(spans_client, hex_trace(root), count(f"run {ADD}", 1))
    publish = one(spans, f"publish {ADD}")
    assert one(spans, f"run {ADD}")["parent_span_id"] == publish["span_id"]
    assert publish["end_ns"] >= publish["start_ns"]


def test_unknown_task_recorded_in_senders_trace(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        tasks.app.send_task("tests.celery.apps.tasks.no_such_task", queue="main")
    tasks.tracing.flush(5)
    spans = wait_for_spans(spans_client, hex_trace(root), count("unknown tests.celery.apps.tasks.no_such_task", 1))
    unknown = one(spans, "unknown tests.celery.apps.tasks.no_such_task")
    assert unknown["parent_span_id"] == one(spans, "publish tests.celery.apps.tasks.no_such_task")["span_id"]
    assert unknown["status_code"] == "error" and unknown["attributes"]["celery.state"] == "UNKNOWN"


def test_tasks_published_inside_tasks_stay_in_the_trace(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        ids = tasks.fan_out.delay(2).get(timeout=20)
    tasks.tracing.flush(5)
    spans = wait_for_spans(spans_client, hex_trace(root), count(f"run {ADD}", 2))
    outer = one(spans, "run tests.celery.apps.tasks.fan_out")
    publishes = named(spans, f"publish {ADD}")
    assert len(publishes) == 2 and all(p["parent_span_id"] == outer["span_id"] for p in publishes)
    by_id = {p["attributes"]["celery.task_id"]: p for p in publishes}
    assert set(by_id) == set(ids)
    for run in named(spans, f"run {ADD}"):
        assert run["parent_span_id"] == by_id[run["attributes"]["celery.task_id"]]["span_id"]
        assert run["attributes"]["celery.parent_id"] == outer["attributes"]["celery.task_id"]
        assert run["attributes"]["celery.root_id"] == outer["attributes"]["celery.task_id"]


def test_countdown_is_part_of_queue_wait_and_eta_recorded(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        assert tasks.add.apply_async((1, 2), countdown=1).get(timeout=20) == 3
    tasks.tracing.flush(5)
    spans = wait_for_spans(spans_client, hex_trace(root), count(f"run {ADD}", 1))
    run, publish = one(spans, f"run {ADD}"), one(spans, f"publish {ADD}")
    assert run["parent_span_id"] == publish["span_id"]
    assert publish["attributes"]["celery.eta"] == run["attributes"]["celery.eta"]
    assert run["attributes"]["celery.queue_wait_ms"] >= 900  # the countdown is time spent waiting


def test_chain_group_and_chord_members_share_the_trace_and_chord_links_header(tasks, worker, spans_client):
    add = tasks.add
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        assert chain(add.s(1, 2), add.s(3), add.s(4)).apply_async().get(timeout=20) == 10
        assert group(add.s(i, i) for i in range(3)).apply_async().get(timeout=20) == [0, 2, 4]
        assert chord([add.s(i, 1) for i in range(3)], tasks.total.s()).apply_async().get(timeout=30) == 6
    tasks.tracing.flush(5)
    spans = wait_for_spans(spans_client, hex_trace(root), count("run tests.celery.apps.tasks.total", 1))
    spans = wait_for_spans(spans_client, hex_trace(root), count(f"run {ADD}", 9))
    ids = {s["span_id"]: s for s in spans}
    for run in named(spans, f"run {ADD}") + named(spans, "run tests.celery.apps.tasks.total"):
        parent = ids[run["parent_span_id"]]  # every run's parent is a publish span in this trace
        assert parent["kind"] == "producer"
        assert parent["attributes"]["celery.task_id"] == run["attributes"]["celery.task_id"]
    callback = one(spans, "run tests.celery.apps.tasks.total")
    finisher = ids[ids[callback["parent_span_id"]]["parent_span_id"]]  # the header task that completed the chord
    assert finisher["name"] == f"run {ADD}"
    linked = [ids[link["span_id"]] for link in callback["links"]]
    assert linked and {s["name"] for s in linked} == {f"publish {ADD}"}
    assert {s["attributes"]["celery.group_id"] for s in linked} == {finisher["attributes"]["celery.group_id"]}
    assert finisher["parent_span_id"] in {s["span_id"] for s in linked}
    assert all(link["trace_id"] == hex_trace(root) for link in callback["links"])


def test_retries_stay_in_the_trace_with_attempt_numbers(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        assert tasks.flaky.delay(2).get(timeout=30) == 2
    tasks.tracing.flush(5)
    name = "run tests.celery.apps.tasks.flaky"
    spans = wait_for_spans(spans_client, hex_trace(root), count(name, 3))
    runs = sorted(named(spans, name), key=lambda s: s["attributes"]["celery.retries"])
    assert [r["attributes"]["celery.retries"] for r in runs] == [0, 1, 2]
    assert [r["attributes"]["celery.state"] for r in runs] == ["RETRY", "RETRY", "SUCCESS"]
    assert "attempt 0 failed" in runs[0]["attributes"]["celery.retry_reason"]
    assert any(e["name"] == "celery.retry" for e in runs[1]["events"])
    ids = {s["span_id"]: s for s in spans}
    first_publish = ids[runs[0]["parent_span_id"]]
    assert first_publish["parent_span_id"] == hex_span(root)
    for before, after in zip(runs, runs[1:]):
        republish = ids[after["parent_span_id"]]
        assert republish["kind"] == "producer" and republish["parent_span_id"] == before["span_id"]
    assert len({r["attributes"]["celery.task_id"] for r in runs}) == 1


def test_a_retry_raised_inside_a_span_is_published_by_the_attempt(tasks, worker, spans_client):
    """The retry's publish hangs under the failed attempt's run span, not under the call that failed."""
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        assert tasks.flaky_call.delay().get(timeout=30) == 1
    tasks.tracing.flush(5)
    name = "run tests.celery.apps.tasks.flaky_call"
    spans = wait_for_spans(spans_client, hex_trace(root), count(name, 2))
    first, second = sorted(named(spans, name), key=lambda s: s["attributes"]["celery.retries"])
    ids = {s["span_id"]: s for s in spans}
    republish = ids[second["parent_span_id"]]
    assert republish["kind"] == "producer" and republish["parent_span_id"] == first["span_id"]
    calls = [s for s in named(spans, "call flaky backend") if s["parent_span_id"] == first["span_id"]]
    assert len(calls) == 1  # the call that failed is still the attempt's child, beside the republish


def test_failure_sets_error_status_and_exception_event(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        result = tasks.boom.delay("card declined")
        with pytest.raises(ValueError):
            result.get(timeout=20)
    tasks.tracing.flush(5)
    spans = wait_for_spans(spans_client, hex_trace(root), count("run tests.celery.apps.tasks.boom", 1))
    run = one(spans, "run tests.celery.apps.tasks.boom")
    assert run["status_code"] == "error" and "card declined" in run["status_message"]
    assert run["attributes"]["celery.state"] == "FAILURE"
    event = next(e for e in run["events"] if e["name"] == "exception")
    assert event["attributes"]["exception.type"] == "ValueError"
    assert event["attributes"]["exception.message"] == "card declined"
    assert "raise ValueError(message)" in event["attributes"]["exception.stacktrace"]


def test_hard_time_limit_kill_is_recorded_by_the_worker_parent(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        result = tasks.overrun.delay(30)
    tasks.tracing.flush(5)
    name = "run tests.celery.apps.tasks.overrun"
    spans = wait_for_spans(spans_client, hex_trace(root), count(name, 1), timeout=40)
    run = one(spans, name)
    assert run["parent_span_id"] == one(spans, "publish tests.celery.apps.tasks.overrun")["span_id"]
    assert run["status_code"] == "error" and "time limit" in run["status_message"]
    assert run["attributes"]["celery.recorded_by"] == "worker parent"
    assert run["attributes"]["celery.failure_reason"] == "time limit exceeded"
    assert run["attributes"]["celery.state"] == "FAILURE"
    assert run["end_ns"] - run["start_ns"] >= 0.9e9  # from the start in the child to the kill
    assert any(e["attributes"].get("exception.type") == "TimeLimitExceeded" for e in run["events"])
    assert result.state == "FAILURE"


def test_revoke_with_terminate_while_running_is_recorded(tasks, worker, spans_client):
    with tasks.tracing.tracer.start_as_current_span("client root") as root:
        result = tasks.sleeper.delay(30)
    wait_until(lambda: result.state == "STARTED", timeout=20, message="task started")
    tasks.app.control.revoke(result.id, terminate=True, signal="SIGTERM")
    tasks.tracing.flush(5)
    name = "run tests.celery.apps.tasks.sleeper"
    spans = wait_for_spans(spans_client, hex_trace(root), count(name, 1), timeout=30)
    run = one(spans, name)
    assert run["parent_span_id"] == one(spans, "publish tests.celery.apps.tasks.sleeper")["span_id"]
    assert run["attributes"]["celery.state"] == "REVOKED"
    assert run["attributes"]["celery.terminated"] is True
    assert run["attributes"]["celery.revoke_reason"].startswith("terminated")
    assert run["status_code"] == "error"


def test_malformed_traceparent_starts_a_new_trace(tasks, worker, spans_client):
    def corrupt(headers=None, **_):
        headers["traceparent"] = "00-not-a-trace-id-zz"

    signals.before_task_publish.connect(corrupt, weak=False, dispatch_uid="test-corrupt")
    try:
        result = tasks.add.delay(20, 22)
    finally:
        signals.before_task_publish.disconnect(dispatch_uid="test-corrupt")
    assert result.get(timeout=20) == 42
    run = None

    def find():
        nonlocal run
        from tests.celery.helpers import read_spans

        run = next((s for s in read_spans(spans_client) if s["name"] == f"run {ADD}"
                    and s["attributes"].get("celery.task_id") == result.id), None)
        return run

    wait_until(find, timeout=20, message="run span of the corrupted message")
    assert run["parent_span_id"] is None
    assert "malformed traceparent" in run["attributes"]["contrail.propagation_error"]
    assert run["attributes"]["celery.state"] == "SUCCESS"


def test_task_protocol_1_messages_are_traced(tasks, worker, spans_client):
    tasks.app.conf.task_protocol = 1
    try:
        with tasks.tracing.tracer.start_as_current_span("client root") as root:
            ids = tasks.fan_out.delay(1).get(timeout=20)
    finally:
        tasks.app.conf.task_protocol = 2
    tasks.tracing.flush(5)
    # the two runs may happen in two pool children, whose export threads deliver independently: wait for both
    spans = wait_for_spans(spans_client, hex_trace(root), lambda found: count(f"run {ADD}", 1)(found)
                           and count("run tests.celery.apps.tasks.fan_out", 1)(found))
    outer = one(spans, "run tests.celery.apps.tasks.fan_out")
    assert outer["parent_span_id"] == one(spans, "publish tests.celery.apps.tasks.fan_out")["span_id"]
    assert outer["attributes"]["celery.queue_wait_ms"] >= 0
    assert one(spans, f"run {ADD}")["attributes"]["celery.task_id"] == ids[0]
