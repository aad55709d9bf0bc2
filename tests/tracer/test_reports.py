"""Tracer self-reports: counters of every tracing process land next to the stream, forked children apart."""

from __future__ import annotations

import json
import os
import time

import redis

from tests.support.servers import wait_until
from tracer import reporting


def reports(redis_url, stream="contrail:spans"):
    client = redis.Redis.from_url(redis_url)
    try:
        return reporting.read_reports(client, stream)
    finally:
        client.close()


def test_a_process_reports_exported_dropped_and_sampled_out_spans(make_manager, redis_url):
    tracing = make_manager(service_name="checkout", max_queue_size=5, schedule_delay=30, report_interval="0.1s")
    for index in range(8):  # the queue holds 5: three are dropped before the export thread wakes
        tracing.finish_span(tracing.start_span(f"op-{index}"))
    assert tracing.flush(10)
    sampled_out = make_manager(service_name="quiet", sample_rate=0.0, report_interval="0.1s")
    for _ in range(4):
        sampled_out.finish_span(sampled_out.start_span("never-exported"))

    def reported():
        by_service = {r["service"]: r for r in reports(redis_url)}
        return (by_service.get("checkout", {}).get("spans_exported") == 5
                and by_service.get("quiet", {}).get("spans_sampled_out") == 4) and by_service

    found = wait_until(reported, timeout=30, message="both processes' reports")
    checkout = found["checkout"]
    assert checkout["spans_dropped"] == checkout["spans_dropped_queue_full"] == 3
    assert checkout["pid"] == os.getpid() and checkout["instance"] == f"checkout@{checkout['host']}:{os.getpid()}"
    summary = reporting.summarize(found.values())
    assert summary["instances"] == 2 and summary["spans_dropped"] == 3 and summary["spans_sampled_out"] == 4
    assert summary["services"]["checkout"]["spans_exported"] == 5


def test_reports_can_be_turned_off(make_manager, redis_url):
    tracing = make_manager(report_interval="0")
    tracing.finish_span(tracing.start_span("op"))
    assert tracing.flush(10)
    tracing.shutdown()
    assert reports(redis_url) == []


def test_a_forked_child_reports_only_its_own_counts(make_manager, redis_url):
    tracing = make_manager(service_name="pool", sample_rate=0.0, report_interval="0.1s")
    for _ in range(3):
        tracing.finish_span(tracing.start_span("parent-sampled-out"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child process
        code = 1
        try:
            tracing.finish_span(tracing.start_span("child-sampled-out"))
            tracing.shutdown(timeout=5)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0

    def both():  # the parent reports every 0.1 s: an early report may predate its third span
        by_pid = {r["pid"]: r for r in reports(redis_url)}
        parent = by_pid.get(os.getpid(), {})
        return pid in by_pid and parent.get("spans_sampled_out") == 3 and by_pid

    by_pid = wait_until(both, timeout=30, message="parent and child reports")
    assert by_pid[pid]["spans_sampled_out"] == 1
    assert by_pid[os.getpid()]["spans_sampled_out"] == 3


def test_stale_and_garbage_reports_are_pruned(redis_url):
    client = redis.Redis.from_url(redis_url)
    key = reporting.reports_key("contrail:spans")
    old = json.loads(reporting.build_report({"service_name": "old"}, now_ns=time.time_ns() - 2 * 86400 * 10**9))
    client.hset(key, mapping={"old@h:1": json.dumps(old), "junk@h:2": "not json",
                              "new@h:3": reporting.build_report({"service_name": "new", "spans_exported": 7})})
    found = reporting.read_reports(client, "contrail:spans")
    assert [(r["service"], r["spans_exported"]) for r in found] == [("new", 7)]
    assert client.hkeys(key) == [b"new@h:3"]
    client.close()
