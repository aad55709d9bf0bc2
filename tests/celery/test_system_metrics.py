"""A traced Celery worker observed beyond its spans: a real prefork worker with system metrics and the slow-span
profiler on, a real collector, the API answering the worker's CPU, memory, threads and file descriptors and
the code-level profiles of its tasks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.celery.helpers import ROOT, Worker
from tests.support.servers import stop_process, wait_until

SERVICE = "celery-observed"
QUEUE = "observed"
HOT = "crunch_numbers (apps/tasks.py:"


@pytest.fixture(scope="module")
def observed(celery_env, tmp_path_factory):
    """The worker, a collector over its stream and an API client on the collector's database."""
    workdir = tmp_path_factory.mktemp("observed")
    database_url = f"sqlite:///{workdir / 'contrail.db'}"
    env = {**celery_env, "CONTRAIL_SERVICE_NAME": SERVICE, "CONTRAIL_SYSTEM_METRICS": "true",
           "CONTRAIL_METRICS_INTERVAL": "1s", "CONTRAIL_PROFILE_SLOW_THRESHOLD": "100ms",
           "CONTRAIL_PROFILE_SLOW_INTERVAL": "10ms", "CONTRAIL_DATABASE_URL": database_url,
           "CONTRAIL_DATA_DIR": str(workdir / "data"), "CONTRAIL_QUIET_PERIOD": "0.5s"}
    worker = Worker(env, QUEUE, pool="prefork", concurrency=2, log_dir=workdir).start()
    log = open(workdir / "collector.log", "w")
    collector = subprocess.Popen([sys.executable, "-m", "collector_worker"], env=worker.env, cwd=ROOT, stdout=log,
                                 stderr=subprocess.STDOUT)
    try:
        from web.settings import WebSettings
        from web import create_app

        client = create_app(settings=WebSettings.load(env={"CONTRAIL_DATABASE_URL": database_url})).test_client()

        def get(path):
            assert collector.poll() is None, (workdir / "collector.log").read_text()[-3000:]
            return client.get(path).get_json()

        yield get
    finally:
        stop_process(collector)
        worker.stop()
        log.close()


def test_a_traced_celery_workers_system_metrics_are_stored_and_served(observed, tasks):
    assert tasks.add.apply_async((2, 3), queue=QUEUE).get(timeout=30) == 5

    def served(name):
        return lambda: observed(f"/api/v1/metrics/{name}?service={SERVICE}&lookback=10m")["points"] or None

    rss = wait_until(served("process.memory.rss"), timeout=90, message="the worker's RSS")
    assert all(10e6 < p["max"] < 4e9 for p in rss), rss  # bytes of a Python process
    cpu = wait_until(served("process.cpu.utilization"), timeout=30, message="the worker's CPU")
    assert all(0 <= p["min"] <= p["max"] <= 2.0 for p in cpu), cpu  # share of one core, 2 cores at most
    threads = wait_until(served("process.threads"), timeout=30, message="the worker's threads")
    assert all(p["min"] >= 1 for p in threads)
    fds = wait_until(served("process.open_file_descriptors"), timeout=30, message="its file descriptors")
    assert all(p["min"] >= 3 for p in fds)
    listing = {m["name"]: m for m in observed("/api/v1/metrics?lookback=10m")["metrics"]}
    assert SERVICE in listing["process.cpu.time"]["services"]
    assert listing["process.cpu.time"]["attributes"]["state"] == ["system", "user"]


def trace_of(tasks, task, *args):
    with tasks.tracing.span("client request") as span:
        assert task.apply_async(args, queue=QUEUE).get(timeout=30) > 0
    tasks.tracing.flush(10)
    return format(span.get_span_context().trace_id, "032x")


def test_a_profiled_task_and_a_slow_task_show_the_function_that_burned_their_time(observed, tasks):
    profiled = trace_of(tasks, tasks.render_report, 0.3)
    slow = trace_of(tasks, tasks.crunch, 0.4)

    def run_span(trace_id, name):
        trace = observed(f"/api/v1/traces/{trace_id}")
        if "spans" not in trace:
            return None
        runs = [s for s in trace["spans"] if s["kind"] == "consumer" and s["service"] == SERVICE
                and s["name"].endswith(name)]
        return runs[0] if runs else None

    for trace_id, task, mode in ((profiled, "render_report", "explicit"), (slow, "crunch", "slow")):
        profiles = wait_until(lambda: observed(f"/api/v1/traces/{trace_id}/profiles")["profiles"] or None,
                              timeout=60, message=f"the profile of {task}")
        run = wait_until(lambda: run_span(trace_id, task), timeout=60, message=f"the run span of {task}")
        by_mode = {p["mode"]: p for p in profiles}
        profile = by_mode[mode]
        assert profile["span_id"] == run["span_id"], (profile, run)  # the task's run span, in the worker
        assert profile["service"] == SERVICE
        assert profile["functions"][0]["function"].startswith(HOT), profile["functions"][:3]
    assert by_mode["slow"]["samples"] >= 10  # 300 ms past the 100 ms threshold at 10 ms
