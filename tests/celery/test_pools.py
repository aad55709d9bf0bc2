"""Each worker pool (prefork, threads, solo) and child recycling produce the same parentage, nothing lost."""

from __future__ import annotations

import pytest

from tests.celery.helpers import Worker, count, hex_span, hex_trace, named, one, wait_for_spans

pytestmark = pytest.mark.xdist_group("celery")

ADD = "tests.celery.apps.tasks.add"


@pytest.mark.parametrize("pool", ["threads", "solo"])
def test_nested_publish_and_retry_parentage_in_pool(pool, tasks, celery_env, spans_client, tmp_path):
    queue = f"pool-{pool}"
    worker = Worker(celery_env, queue, pool=pool, concurrency=2 if pool == "threads" else 1, log_dir=tmp_path).start()
    try:
        with tasks.tracing.tracer.start_as_current_span("client root") as root:
            tasks.fan_out.apply_async((2,), queue=queue).get(timeout=20)
            assert tasks.flaky.apply_async((1,), queue=queue).get(timeout=20) == 1
        tasks.tracing.flush(5)
        spans = wait_for_spans(spans_client, hex_trace(root), lambda s: len(named(s, f"run {ADD}")) >= 2
                               and len(named(s, "run tests.celery.apps.tasks.flaky")) >= 2)
    finally:
        worker.stop()
    outer = one(spans, "run tests.celery.apps.tasks.fan_out")
    assert one(spans, "publish tests.celery.apps.tasks.fan_out")["parent_span_id"] == hex_span(root)
    ids = {s["span_id"]: s for s in spans}
    for run in named(spans, f"run {ADD}"):
        assert ids[run["parent_span_id"]]["parent_span_id"] == outer["span_id"]
    attempts = sorted(named(spans, "run tests.celery.apps.tasks.flaky"), key=lambda s: s["attributes"]["celery.retries"])
    assert ids[attempts[1]["parent_span_id"]]["parent_span_id"] == attempts[0]["span_id"]
    assert all(s["attributes"]["messaging.destination.name"] == queue for s in attempts)


def test_a_retry_running_before_its_first_attempt_ended_leaves_both_runs(tasks, celery_env, spans_client, tmp_path):
    """A retry keeps its task id, and in a threads pool it can start before the attempt that published it has
    ended (here that attempt's on_retry waits until it has). Each attempt's run span still ends, with its own
    state and retry event, the second under the first."""
    queue, name = "retry-overlap", "run tests.celery.apps.tasks.retried_while_finishing"
    worker = Worker(celery_env, queue, pool="threads", concurrency=2, log_dir=tmp_path).start()
    try:
        with tasks.tracing.tracer.start_as_current_span("client root") as root:
            assert tasks.retried_while_finishing.apply_async(queue=queue).get(timeout=30) == 1
        tasks.tracing.flush(5)
        spans = wait_for_spans(spans_client, hex_trace(root), count(name, 2))
    finally:
        worker.stop()
    first, second = sorted(named(spans, name), key=lambda s: s["attributes"]["celery.retries"])
    assert (first["attributes"]["celery.retries"], second["attributes"]["celery.retries"]) == (0, 1)
    assert first["attributes"]["celery.state"] == "RETRY" and second["attributes"]["celery.state"] == "SUCCESS"
    assert [e["name"] for e in first["events"]].count("celery.retry") == 1
    assert not any(e["name"] == "celery.retry" for e in second["events"])
    ids = {s["span_id"]: s for s in spans}
    assert ids[second["parent_span_id"]]["name"] == "publish tests.celery.apps.tasks.retried_while_finishing"
    assert ids[second["parent_span_id"]]["parent_span_id"] == first["span_id"]
    assert first["end_ns"] > second["start_ns"]  # they did overlap


def test_recycled_children_lose_no_span(tasks, celery_env, spans_client, tmp_path):
    """worker_max_tasks_per_child=1: every child exits after one task and must flush first."""
    queue = "recycle"
    worker = Worker(celery_env, queue, pool="prefork", concurrency=1, extra=["--max-tasks-per-child=1"],
                    log_dir=tmp_path).start()
    try:
        with tasks.tracing.tracer.start_as_current_span("client root") as root:
            results = [tasks.add.apply_async((i, i), queue=queue) for i in range(6)]
            assert [r.get(timeout=30) for r in results] == [2 * i for i in range(6)]
        tasks.tracing.flush(5)
        spans = wait_for_spans(spans_client, hex_trace(root), count(f"run {ADD}", 6))
    finally:
        worker.stop()
    runs = named(spans, f"run {ADD}")
    assert sorted(r["attributes"]["celery.task_id"] for r in runs) == sorted(r.id for r in results)
    assert len({r["resource"].get("process.pid") for r in runs}) == 6  # six different children, none lost


def test_a_solo_worker_switched_off_and_on_traces_only_while_on(tasks, celery_env, spans_client, tmp_path):
    """The benchmark's switch (remote control): handlers disconnected in a running solo worker trace nothing;
    connected again they trace as before, still without task_received (worker_init's decision is kept)."""
    queue, name = "switch", "switch@contrail-tests"
    worker = Worker(celery_env, queue, pool="solo", concurrency=1, log_dir=tmp_path, name=name).start()

    def switch(on: int) -> list[str]:
        replies = tasks.app.control.broadcast("contrail_tracing", arguments={"on": on}, reply=True, timeout=10,
                                              destination=[name])
        assert len(replies) == 1 and replies[0][name]["on"] is bool(on)
        return replies[0][name]["signals"]

    try:
        assert switch(0) == []
        with tasks.tracing.tracer.start_as_current_span("client root") as root:
            off = tasks.add.apply_async((1, 1), queue=queue)
            assert off.get(timeout=20) == 2
            signals = switch(1)
            on = tasks.add.apply_async((2, 2), queue=queue)
            assert on.get(timeout=20) == 4
        tasks.tracing.flush(5)
        # the worker ends and exports its spans in order: once the second run is there, a first would be too
        spans = wait_for_spans(spans_client, hex_trace(root), count(f"run {ADD}", 1))
    finally:
        worker.stop()
    assert "task_prerun" in signals and "task_postrun" in signals and "task_received" not in signals
    [run] = named(spans, f"run {ADD}")
    assert run["attributes"]["celery.task_id"] == on.id
    assert len(named(spans, f"publish {ADD}")) == 2  # the client traced both
