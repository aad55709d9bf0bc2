"""Collectors report their counters next to the stream; tail sampling's drops become visible outside."""

from __future__ import annotations

import redis

from collector_worker import consumer, finalizer, sampling
from tests.collector.test_consumer import RunningConsumer, make_trace, publish, settings_for
from tests.support.servers import wait_until
from tests.support.streams import consumed
from tracer.reporting import read_reports, summarize_collectors


def collector_reports(client):
    return {r["instance"]: r for r in read_reports(client, "contrail:spans", kind="collectors")}


def test_a_running_collector_reports_what_it_stored_and_what_tail_sampling_dropped(redis_url, sqlite_url):
    client = redis.Redis.from_url(redis_url)
    ordinary = [make_trace(5) for _ in range(4)]          # fast and fine: dropped at keep ratio 0
    failed = make_trace(5)
    failed[0]["status_code"] = "error"                    # an error: always kept
    publish(client, [[s for t in ordinary for s in t], failed])
    dropped_before = sampling.counters()["dropped"]
    settings = settings_for(redis_url, sqlite_url, consumer_name="reporting-collector", report_interval="0.2s",
                            tail_sampling=True, tail_keep_ratio=0.0, tail_slow_threshold=60.0)
    with RunningConsumer(settings, None):
        wait_until(lambda: sampling.counters()["dropped"] - dropped_before == 4, timeout=60,
                   message="four ordinary traces dropped by tail sampling")
        wait_until(lambda: collector_reports(client).get("reporting-collector", {}).get("traces_tail_dropped", -1)
                   >= sampling.counters()["dropped"], timeout=30, message="a report after the drops")
    final = collector_reports(client)["reporting-collector"]  # written once more at stop: exact counters now
    assert final["spans_stored"] == consumer.consumer_stats()["spans_stored"] >= 25
    assert final["traces_tail_dropped"] == sampling.counters()["dropped"]
    assert final["traces_tail_kept"] == sampling.counters()["kept"] >= 1
    assert final["traces_finalized"] == finalizer.counters()["finalized"]
    assert final["traces_late_dropped"] == finalizer.counters()["late_dropped"]
    assert final["traces_leases_lost"] == finalizer.counters()["leases_lost"]
    summary = summarize_collectors(collector_reports(client).values())
    assert summary["instances"] == 1 and summary["traces_tail_dropped"] == final["traces_tail_dropped"]
    client.close()


def test_reports_off_writes_nothing(redis_url, sqlite_url):
    client = redis.Redis.from_url(redis_url)
    publish(client, [make_trace(3)])
    settings = settings_for(redis_url, sqlite_url, report_interval="0")
    with RunningConsumer(settings, None):
        wait_until(lambda: consumed(client, settings.stream, settings.consumer_group),
                   timeout=60, message="the entry consumed")
    assert collector_reports(client) == {}
    client.close()
