"""tracing.metrics: instruments, cardinality limit, exemplars, transport through the stream and the spool."""

from __future__ import annotations

import os
import sys

import pytest
import redis

from tests.support.servers import wait_until
from tracer import TracingManager
from tracer.metrics_codec import decode_metrics, is_metrics_entry


def metric_points(redis_url, stream="contrail:spans"):
    client = redis.Redis.from_url(redis_url)
    try:
        return [p for _, fields in client.xrange(stream) if is_metrics_entry(fields)
                for p in decode_metrics(fields).points]
    finally:
        client.close()


def test_instruments_are_made_once_per_name_and_kind(make_manager):
    tracing = make_manager(metrics_interval=3600)
    assert tracing.get_metrics_collector() is tracing.metrics
    counter = tracing.metrics.counter("llm_requests_total")
    assert tracing.metrics.counter("llm_requests_total") is counter
    with pytest.raises(ValueError, match="already a counter, not a gauge"):
        tracing.metrics.gauge("llm_requests_total")
    with pytest.raises(ValueError, match="invalid metric name"):
        tracing.metrics.histogram("9 lives")


def test_disabled_tracer_hands_out_instruments_that_do_nothing(tmp_path):
    tracing = TracingManager(service_name="off", enabled=False, spool_dir=str(tmp_path))
    tracing.metrics.counter("c").increment(model="x")
    tracing.metrics.histogram("h").record(1.0)
    tracing.metrics.gauge("g").set(3)
    assert tracing.flush(1) and "metric_points_exported" not in tracing.get_tracer_info()


def test_points_reach_the_stream_with_attributes_units_and_exemplars(make_manager, redis_url):
    tracing = make_manager(metrics_interval=3600)
    requests = tracing.metrics.counter("llm_requests_total", unit="{request}", description="LLM requests")
    with tracing.span("answer") as span:
        requests.increment(model="gpt")
        requests.increment(2, {"model": "gpt"})
        ids = (format(span.get_span_context().trace_id, "032x"), format(span.get_span_context().span_id, "016x"))
    requests.increment(model="claude")
    tracing.metrics.gauge("active_sessions").set(5)
    assert tracing.flush(5)
    points = {(p["name"], tuple(sorted(p["attributes"].items()))): p for p in metric_points(redis_url)}
    gpt = points[("llm_requests_total", (("model", "gpt"),))]
    assert gpt["value"] == 3 and gpt["unit"] == "{request}" and gpt["description"] == "LLM requests"
    assert gpt["service"] == "svc" and gpt["kind"] == "counter"
    assert [tuple(e[:2]) for e in gpt["exemplars"]] and set(tuple(e[:2]) for e in gpt["exemplars"]) == {ids}
    assert points[("llm_requests_total", (("model", "claude"),))]["exemplars"] == []
    assert points[("active_sessions", ())]["value"] == 5


def test_attribute_sets_past_the_cardinality_limit_are_dropped_and_counted(make_manager, redis_url):
    tracing = make_manager(metrics_interval=3600, metrics_cardinality_limit=3)
    counter = tracing.metrics.counter("requests")
    for user in range(5):
        counter.increment(user=str(user))
        counter.increment(user=str(user))
    assert tracing.flush(5)
    info = tracing.get_tracer_info()
    assert info["metric_series"] == 3 and info["metric_series_dropped"] == 4
    assert sorted(p["attributes"]["user"] for p in metric_points(redis_url)) == ["0", "1", "2"]


def test_redis_outage_spools_points_and_replays_them_once(make_manager, redis_server, redis_url):
    tracing = make_manager(metrics_interval=3600, export_timeout=0.5)
    counter = tracing.metrics.counter("orders")
    counter.increment(1)
    assert tracing.metrics.flush(5)

    redis_server.stop()
    counter.increment(2)  # returns at once: export runs on the reader's thread
    assert tracing.metrics.flush(5) is False
    counter.increment(4)
    assert tracing.metrics.flush(5) is False
    info = tracing.get_tracer_info()
    assert info["metric_points_spooled"] == 2 and info["metric_export_errors"] >= 2
    assert info["last_metric_export_error"]

    redis_server.start()
    wait_until(lambda: tracing.metrics.flush(2), timeout=30, message="spooled points replayed")
    assert [p["value"] for p in metric_points(redis_url)] == [1, 2, 4]  # in order, each once
    assert tracing.get_tracer_info()["metric_points_dropped"] == 0


def test_system_metrics_are_one_setting_away(make_manager, redis_url):
    tracing = make_manager(metrics_interval=3600, system_metrics=True)
    assert tracing.flush(5)
    names = {p["name"] for p in metric_points(redis_url)}
    assert {"process.cpu.time", "process.cpu.utilization", "process.memory.rss", "process.threads",
            "process.open_file_descriptors", "process.gc.collections", "process.disk.io",
            "system.network.io"} <= names
    rss = next(p for p in metric_points(redis_url) if p["name"] == "process.memory.rss")
    assert rss["kind"] == "gauge" and rss["value"] > 1_000_000 and rss["unit"] == "By"


def test_system_metrics_without_psutil_fail_with_what_to_install(make_manager, monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # as if the 'system' extra were not installed
    with pytest.raises(RuntimeError, match=r"pip install 'contrail-tracing\[system\]'"):
        make_manager(system_metrics=True)


def test_a_forked_child_exports_its_own_points_and_system_metrics(make_manager, redis_url):
    tracing = make_manager(metrics_interval=3600, system_metrics=True)
    orders = tracing.metrics.counter("orders")
    orders.increment(1)
    assert tracing.flush(5)

    def in_child():
        orders.increment(5)
    from tests.tracer.tracer_helpers import in_forked_child

    pid = in_forked_child(tracing, in_child)
    points = metric_points(redis_url)
    assert sorted((p["value"], p["resource"]["process.pid"]) for p in points if p["name"] == "orders") == \
        sorted([(1.0, os.getpid()), (5.0, pid)])
    child_threads = [p for p in points if p["name"] == "process.threads" and p["resource"]["process.pid"] == pid]
    assert child_threads and child_threads[0]["value"] >= 1
    # the child's first collection has measured no CPU interval of its own: no utilization figure rather than
    # a tick over a few microseconds read as thousands of per cent
    utilization = {p["resource"]["process.pid"]: p["value"] for p in points if p["name"] == "process.cpu.utilization"}
    assert pid not in utilization
    assert 0.0 <= utilization[os.getpid()] <= (os.cpu_count() or 1)
