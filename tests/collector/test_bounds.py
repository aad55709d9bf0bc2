"""Ingest bounds against a real Redis server, a running consumer and real databases: absurd span times,
token counts and sizes are rejected, clamped or cut per span, and no statistics sum can overflow."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from collector_worker import finalizer, llm_usage, stats, validation
from collector_worker.storage import open_engine, schema
from collector_worker.storage import block_store
from tests.support.stored import span_rows
from tests.collector.test_consumer import RunningConsumer, make_trace, publish, settings_for, span_count
from tests.support.servers import wait_until
from tracer.limits import DROPPED_EVENTS

END_OF_TIME = 2**63 - 1


def _stored(engine, span_id: str) -> dict:
    [row] = [s for s in span_rows(engine) if s["span_id"] == span_id]
    parsed = {k: json.loads(row[k]) if isinstance(row[k], str) else row[k] for k in ("attributes", "events")}
    return dict(row, **parsed)


def _span_stats(engine, service: str, operation: str, resolution: int = 3600) -> list[tuple]:
    s = schema.stats
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(s.c.count, s.c.total_ns, s.c.max_ns).where(
                s.c.scope == "span", s.c.resolution == resolution, s.c.service == service,
                s.c.operation == operation))]


@pytest.mark.postgres
def test_a_span_ending_at_the_end_of_time_blacks_out_nothing_on_postgres(client, redis_url, postgres_url):
    """Two spans ending at 2**63-1 used to overflow the hour bucket's BIGINT total_ns: the second one's entry,
    with an ordinary span of the same operation and an unrelated trace, was dead-lettered whole."""
    runaway, second, unrelated = make_trace(2), make_trace(2), make_trace(3, service="billing")
    runaway[1]["end_ns"] = END_OF_TIME
    second[1]["end_ns"] = END_OF_TIME
    ordinary = dict(make_trace(2)[1], name=runaway[1]["name"])
    publish(client, [runaway, second + [ordinary] + unrelated])
    settings = settings_for(redis_url, postgres_url)
    engine = open_engine(postgres_url)
    with RunningConsumer(settings, engine):
        wait_until(lambda: span_count(engine) == 8, timeout=60, message="all eight spans stored")
        wait_until(lambda: client.xpending(settings.stream, settings.consumer_group)["pending"] == 0,
                   message="both entries acknowledged")
    assert client.xlen(settings.dead_stream) == 0
    clamped = _stored(engine, runaway[1]["span_id"])
    assert clamped["attributes"][validation.CLAMPED_END] == END_OF_TIME
    assert clamped["end_ns"] <= time.time_ns() + validation.MAX_FUTURE_NS
    assert _stored(engine, ordinary["span_id"])["duration_ns"] == ordinary["end_ns"] - ordinary["start_ns"]
    [(count, total_ns, max_ns)] = _span_stats(engine, "orders", ordinary["name"])
    assert count == 3  # both clamped spans and the ordinary one
    assert 0 < total_ns <= 3 * validation.MAX_FUTURE_NS + 10**9 and max_ns <= 2 * validation.MAX_FUTURE_NS
    engine.dispose()


def test_spans_with_unusable_start_times_are_rejected_alone(client, redis_url, sqlite_url, sqlite_engine):
    ancient, future, good = make_trace(1), make_trace(1), make_trace(3)
    ancient[0]["start_ns"], ancient[0]["end_ns"] = 5, 10
    future[0]["start_ns"] = future[0]["end_ns"] = time.time_ns() + 2 * validation.MAX_FUTURE_NS
    before = validation.counters()["span_times_rejected"]
    publish(client, [ancient + good + future])
    settings = settings_for(redis_url, sqlite_url)
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: client.xlen(settings.dead_stream) == 1, message="the entry's rejections dead-lettered")
    assert span_count(sqlite_engine) == 3
    [(_, letter)] = client.xrange(settings.dead_stream)
    assert letter[b"reason"].decode().startswith("rejected 2 of 5 spans")
    assert "before 2000-01-01 or more than 1 h ahead" in letter[b"reason"].decode()
    assert validation.counters()["span_times_rejected"] - before == 2


@pytest.mark.parametrize("value", ["inf", 1e30, "-5", "NaN"])
def test_absurd_token_counts_are_ignored_and_the_span_stored(value, client, redis_url, database_url, engine):
    """``int(float("inf"))`` raised and 1e30 overflowed BIGINT: the whole entry was refused."""
    llm, honest, plain = make_trace(1), make_trace(1), make_trace(2)
    llm[0]["attributes"] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                            "gen_ai.usage.input_tokens": value, "gen_ai.usage.output_tokens": 7}
    honest[0]["attributes"] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m",
                               "gen_ai.usage.input_tokens": 10, "gen_ai.usage.output_tokens": 2}
    before = validation.counters()["token_counts_ignored"]
    publish(client, [llm + honest + plain])
    settings = settings_for(redis_url, database_url)
    with RunningConsumer(settings, engine):
        wait_until(lambda: span_count(engine) == 4, timeout=60, message="all four spans stored")
        wait_until(lambda: client.xpending(settings.stream, settings.consumer_group)["pending"] == 0,
                   message="the entry acknowledged")
    assert client.xlen(settings.dead_stream) == 0
    u = schema.llm_usage
    with engine.connect() as conn:
        usage = conn.execute(select(u.c.calls, u.c.input_tokens, u.c.output_tokens).where(
            u.c.resolution == 60)).all()
    assert [tuple(row) for row in usage] == [(2, 10, 9)]
    assert _stored(engine, llm[0]["span_id"])["attributes"][validation.IGNORED_TOKENS] == [
        "gen_ai.usage.input_tokens"]
    assert validation.counters()["token_counts_ignored"] - before == 1


def test_statistics_and_usage_sums_saturate_instead_of_overflowing(database_url, engine):
    """A bucket already at the top of BIGINT takes more spans: it stays at 2**63-1 (exact on SQLite too,
    which turned the sum into an inexact REAL), and reading the sums back does not overflow either."""
    span = make_trace(1)[0]
    span["attributes"] = {"gen_ai.request.model": "m", "gen_ai.usage.input_tokens": 5}
    bucket = stats.bucket_of(span["start_ns"], 3600)
    with engine.begin() as conn:
        stats.upsert_rows(conn, schema.stats, ("scope", "resolution", "bucket", "service", "operation", "count",
                                               "error_count", "total_ns", "max_ns"),
                          [("span", 3600, bucket, "orders", "root", 1, 0, END_OF_TIME - 5, 10)],
                          ("count", "error_count", "total_ns"), ("max_ns",))
        llm_usage.write_usage(conn, [dict(resolution=3600, bucket=bucket, service="orders", model="m", user_id="",
                                          agent="", calls=1, errors=0, input_tokens=END_OF_TIME - 1,
                                          output_tokens=0, cache_read_tokens=0, cost=0.0, total_ns=0)])
        finalizer.on_spans_stored(conn, [span, dict(span, span_id="f" * 16)])
        stats.upsert_rows(conn, schema.stats, ("scope", "resolution", "bucket", "service", "operation", "count",
                                               "error_count", "total_ns", "max_ns"),
                          [("span", 3600, bucket, "orders", "root", 1, 0, 2**70, 2**70)],
                          ("count", "error_count", "total_ns"), ("max_ns",))
    assert _span_stats(engine, "orders", "root") == [(4, END_OF_TIME, END_OF_TIME)]
    with engine.connect() as conn:
        tokens = conn.execute(select(schema.llm_usage.c.input_tokens).where(
            schema.llm_usage.c.resolution == 3600)).scalar_one()
        assert tokens == END_OF_TIME
        read = llm_usage.query_usage(conn, span["start_ns"] - 7200 * 10**9, span["start_ns"] + 7200 * 10**9)
    assert read["totals"]["calls"] == 3


def test_a_span_of_200000_events_is_stored_with_the_event_limit(client, redis_url, database_url, engine):
    """The amplification case: one span with a huge number of empty events is cut to 128 and the cut counted."""
    trace = make_trace(2)
    t0 = trace[1]["start_ns"]
    trace[1]["events"] = [{"name": "", "time_ns": t0, "attributes": {}} for _ in range(200_000)]
    before = validation.counters()["span_events_dropped"]
    publish(client, [trace])
    settings = settings_for(redis_url, database_url, report_interval=0.1)
    with RunningConsumer(settings, engine):
        wait_until(lambda: span_count(engine) == 2, timeout=60, message="both spans stored")
        wait_until(lambda: json.loads(client.hget("contrail:spans:collectors", "test-consumer") or "{}").get(
            "span_events_dropped", 0) >= 200_000 - 128, message="the cut shown in the collector report")
    stored = _stored(engine, trace[1]["span_id"])
    assert len(stored["events"]) == 128
    assert stored["attributes"][DROPPED_EVENTS] == 200_000 - 128
    assert validation.counters()["span_events_dropped"] - before == 200_000 - 128


def test_spans_of_a_trace_beyond_its_cap_are_dropped_counted_and_marked(client, redis_url, database_url, engine):
    big, other = make_trace(15), make_trace(5, service="billing")
    more = [dict(s, span_id=f"{i:016x}", name=f"late-{i}") for i, s in enumerate(make_trace(15), start=1)]
    for s in more:
        s["trace_id"], s["parent_span_id"] = big[0]["trace_id"], big[0]["span_id"]
    publish(client, [big, more + other])
    settings = settings_for(redis_url, database_url, trace_span_limit=20, report_interval=0.1)
    with RunningConsumer(settings, engine):
        wait_until(lambda: span_count(engine) == 25, timeout=60, message="25 spans stored")
        wait_until(lambda: json.loads(client.hget("contrail:spans:collectors", "test-consumer") or "{}").get(
            "trace_spans_dropped", 0) >= 10, message="the drops shown in the collector report")
        with engine.connect() as conn:
            wait_until(lambda: "truncated" in (conn.execute(select(schema.traces.c.warnings).where(
                schema.traces.c.trace_id == big[0]["trace_id"])).scalar() or ""), message="the big trace finalized")
            conn.rollback()
    assert client.xlen(settings.dead_stream) == 0
    with engine.connect() as conn:
        kept = [s["span_id"] for s in block_store.all_spans(conn) if s["trace_id"] == big[0]["trace_id"]]
        warnings = json.loads(conn.execute(select(schema.traces.c.warnings).where(
            schema.traces.c.trace_id == big[0]["trace_id"])).scalar_one())
    assert len(kept) == 20 and span_count(engine) == 25
    assert "truncated" in [w["code"] for w in warnings]
    [(count, _, _)] = _span_stats(engine, "billing", "root")
    assert count == 1
