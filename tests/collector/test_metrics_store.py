"""Metric entries through a real consumer into SQLite and PostgreSQL: routing, merging, redelivery, bad data."""

from __future__ import annotations

import time

import pytest

from collector_worker import consumer as consumer_module
from collector_worker import metrics_store
from collector_worker.retention import count_expired, run_retention
from tests.collector.test_consumer import RunningConsumer, make_trace, publish, settings_for, span_count
from tests.support.servers import wait_until
from tracer import codec
from tracer.metrics_codec import encode_metrics

NOW_NS = (int(time.time()) // 3600 * 3600 - 7200) * 1_000_000_000  # a whole hour, two hours back
RESOURCES = [("checkout", {"service.name": "checkout", "process.pid": 1})]
TRACE_ID, SPAN_ID = "ab" * 16, "cd" * 8


def counter_row(value, seconds=0, **attrs):
    return ["orders_total", "counter", "1", "Orders placed", 0, attrs, NOW_NS + seconds * 10**9, value, []]


def gauge_row(value, seconds=0, **attrs):
    return ["queue_depth", "gauge", "", "", 0, attrs, NOW_NS + seconds * 10**9, value, []]


def histogram_row(values, seconds=0, scale=6):
    """An exponential histogram point of ``values`` (all > 0) at ``scale``, built the way the SDK buckets."""
    import math

    indexes = [math.ceil(math.log2(v) * 2 ** scale) - 1 for v in values]
    offset = min(indexes)
    counts = [0] * (max(indexes) - offset + 1)
    for i in indexes:
        counts[i - offset] += 1
    value = {"count": len(values), "sum": sum(values), "min": min(values), "max": max(values), "scale": scale,
             "zero": 0, "pos": [offset, counts], "neg": [0, []]}
    return ["latency", "histogram", "s", "", 0, {}, NOW_NS + seconds * 10**9, value,
            [[TRACE_ID, SPAN_ID, values[0], NOW_NS]]]


def stored_points(client, settings, engine, entries):
    before = consumer_module.consumer_stats()["acked"]
    for fields in entries:
        client.xadd(settings.stream, fields)
    with RunningConsumer(settings, engine):
        wait_until(lambda: consumer_module.consumer_stats()["acked"] - before >= len(entries),
                   message="entries acknowledged")


def query(engine, name, step_s=3600, **kwargs):
    with engine.connect() as conn:
        return metrics_store.query_metric(conn, name, NOW_NS, NOW_NS + 3600 * 10**9, step_s, **kwargs)


def test_counters_gauges_and_histograms_are_stored_as_series(client, redis_url, database_url, engine):
    settings = settings_for(redis_url, database_url)
    values = [0.001 * (i + 1) for i in range(1000)]  # 1 ms .. 1 s
    entries = [encode_metrics([counter_row(3, 0, model="a"), counter_row(4, 10, model="b"), gauge_row(7, 0),
                               gauge_row(2, 20), gauge_row(5, 30)], RESOURCES),
               encode_metrics([counter_row(5, 70, model="a"), histogram_row(values[:500], 5),
                               histogram_row(values[500:], 65)], RESOURCES)]
    stored_points(client, settings, engine, entries)

    hourly = query(engine, "orders_total")
    assert hourly["kind"] == "counter" and hourly["series"] == 2
    assert [p["sum"] for p in hourly["points"]] == [12.0]
    assert hourly["points"][0]["rate"] == pytest.approx(12 / 3600)
    by_minute = query(engine, "orders_total", step_s=60, filters={"model": "a"})
    assert [(p["time_ns"] - NOW_NS, p["sum"]) for p in by_minute["points"]] == [(0, 3.0), (60 * 10**9, 5.0)]
    assert by_minute["points"][0]["rate"] == pytest.approx(3 / 60)

    gauge = query(engine, "queue_depth")["points"][0]
    assert (gauge["last"], gauge["min"], gauge["max"], gauge["mean"]) == (5.0, 2.0, 7.0, pytest.approx(14 / 3))

    latency = query(engine, "latency")["points"][0]
    assert latency["count"] == 1000 and latency["sum"] == pytest.approx(sum(values))
    for label, q in metrics_store.PERCENTILES:
        exact = values[int(q * (len(values) - 1))]
        assert latency[label] == pytest.approx(exact, rel=0.02), label  # bins 1 % + scale-6 buckets 0.5 %
    assert latency["exemplars"][0]["trace_id"] == TRACE_ID

    with engine.connect() as conn:
        listed = {m["name"]: m for m in metrics_store.list_metrics(conn, NOW_NS)}
    assert listed["orders_total"]["services"] == ["checkout"]
    assert listed["orders_total"]["attributes"] == {"model": ["a", "b"]}
    assert listed["orders_total"]["unit"] == "1" and listed["orders_total"]["description"] == "Orders placed"
    assert set(listed) == {"orders_total", "queue_depth", "latency"}


def test_a_redelivered_metrics_entry_is_counted_once(client, redis_url, database_url, engine):
    settings = settings_for(redis_url, database_url)
    fields = encode_metrics([counter_row(5)], RESOURCES)
    entry_id = client.xadd(settings.stream, fields)
    assert metrics_store.store_entry(engine, entry_id.decode(), [{
        "name": "orders_total", "kind": "counter", "unit": "1", "description": "Orders placed",
        "service": "checkout", "resource": {}, "attributes": {}, "time_ns": NOW_NS, "value": 5.0, "exemplars": []}])
    before = consumer_module.consumer_stats()
    with RunningConsumer(settings, engine):  # as if a collector stored it and stopped before acknowledging
        wait_until(lambda: consumer_module.consumer_stats()["acked"] > before["acked"], message="acknowledged")
    assert [p["sum"] for p in query(engine, "orders_total")["points"]] == [5.0]
    assert consumer_module.consumer_stats()["metric_points_stored"] == before["metric_points_stored"]


def test_bad_metrics_entry_is_dead_lettered_with_its_reason_and_neighbours_stored(client, redis_url, sqlite_url,
                                                                                  sqlite_engine):
    settings = settings_for(redis_url, sqlite_url)
    bad_row = encode_metrics([counter_row(1), ["orders_total", "counter", "1", "", 0, {}, NOW_NS, -3, []]],
                             RESOURCES)
    unknown_kind = dict(encode_metrics([counter_row(1)], RESOURCES))
    unknown_kind[b"kind"] = b"logs"
    entries = [bad_row, unknown_kind, encode_metrics([counter_row(2)], RESOURCES), codec.encode_span_dicts(make_trace(3))]
    stored_points(client, settings, sqlite_engine, entries)
    letters = {fields[b"reason"].decode() for _, fields in client.xrange(settings.dead_stream)}
    assert letters == {"metric row 1: counter increase must not be negative, not -3.0",
                       "unknown entry kind 'logs' (this collector reads spans, metrics, profiles)"}
    assert [p["sum"] for p in query(sqlite_engine, "orders_total")["points"]] == [2.0]
    assert span_count(sqlite_engine) == 3


def test_a_collector_that_predates_metrics_dead_letters_them_instead_of_storing_spans():
    """Older collectors ignore ``kind``: the payload has no 'spans' list, so they refuse the entry whole."""
    fields = dict(encode_metrics([counter_row(1)], RESOURCES))
    del fields[b"kind"]
    with pytest.raises(codec.CodecError, match="not a mapping with a 'spans' list"):
        codec.decode_entry(fields)


def test_retention_deletes_metric_buckets_and_entry_records(client, redis_url, sqlite_url, sqlite_engine):
    settings = settings_for(redis_url, sqlite_url)
    stored_points(client, settings, sqlite_engine, [encode_metrics([counter_row(1), histogram_row([0.5])],
                                                                   RESOURCES)])
    future = time.time_ns() + 3 * 3600 * 10**9
    expected = count_expired(sqlite_engine, future)
    assert expected["metric_points"] == 4 and expected["metric_histogram"] == 2 and expected["metric_entries"] == 1
    deleted = run_retention(sqlite_engine, future)
    assert {k: deleted[k] for k in expected if k.startswith("metric")} == {
        "metric_points": 4, "metric_histogram": 2, "metric_entries": 1}
    assert query(sqlite_engine, "orders_total")["points"] == []
