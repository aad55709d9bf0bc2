"""Retention deletes what is older than the cutoff, keeps the rest, in bounded batches."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from collector_worker.retention import count_expired, run_retention
from collector_worker.storage import partitions, queries, schema
from tests.collector.test_finalizer import BASE, S, finalize_all, ingest, make_span, sid, tid
from tests.support.stored import operation_rows, span_rows

DAY = 86400 * S


def count(engine, table):
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def trace(t, offset_ns, spans=3, service="api"):
    out = [make_span(t, sid(1), None, 0, 100, service=service, attributes={"k": "v"})]
    out += [make_span(t, sid(i), sid(1), i, i + 5, service="db") for i in range(2, spans + 1)]
    for s in out:
        s["start_ns"] += offset_ns
        s["end_ns"] += offset_ns
    return out


def test_retention_deletes_old_keeps_new_in_batches(engine):
    old_traces = [tid(i) for i in range(1, 8)]
    new_traces = [tid(i) for i in range(100, 104)]
    ingest(engine, [s for t in old_traces for s in trace(t, -10 * DAY)], received_ns=BASE - 10 * DAY)
    ingest(engine, [s for t in new_traces for s in trace(t, 0)], received_ns=BASE)
    finalize_all(engine, BASE + 5 * S)
    # an old trace that was never finalized (still pending) and a big old trace
    ingest(engine, trace(tid(50), -9 * DAY, spans=12), received_ns=BASE - 9 * DAY)
    assert len(span_rows(engine)) == 7 * 3 + 4 * 3 + 12
    stats_before = count(engine, schema.stats)

    calls = []
    predicted = count_expired(engine, BASE - DAY)  # what `contrail cleanup --dry-run` prints
    result = run_retention(engine, BASE - DAY, batch_size=4, progress=lambda done, total: calls.append((done, total)))
    assert predicted == result

    assert result["traces"] == 7 and result["trace_blocks"] == 7
    assert result["spans"] == 7 * 3 + 12 and result["pending_traces"] == 1
    assert result["stats"] > 0 and result["stats_histogram"] > 0 and result["dependencies"] > 0
    assert len(span_rows(engine)) == 4 * 3
    with engine.connect() as conn:
        kept = {r[0] for r in conn.execute(select(schema.traces.c.trace_id))}
        assert conn.execute(select(func.min(schema.stats.c.bucket))).scalar_one() >= (BASE - DAY) // S - 3600
    assert kept == set(new_traces)
    assert len(operation_rows(engine)) == 12 and count(engine, schema.pending_traces) == 0
    assert count(engine, schema.stats) == stats_before - result["stats"]
    # many small batches, progress only moves forward and ends complete
    assert len(calls) >= 10
    assert all(a[0] <= b[0] for a, b in zip(calls, calls[1:]))
    assert calls[-1][0] == calls[-1][1] == sum(v for k, v in result.items()
                                               if k != "trace_blocks")

    # a second pass finds nothing
    again = run_retention(engine, BASE - DAY, batch_size=4)
    assert sum(again.values()) == 0
    assert len(span_rows(engine)) == 12


def test_hour_bucket_that_straddles_the_cutoff_is_kept(engine):
    ingest(engine, trace(tid(1), 0))
    cutoff = BASE + 30 * 60 * S  # in the middle of the hour of the spans
    predicted = count_expired(engine, cutoff)
    assert predicted == run_retention(engine, cutoff)
    st = schema.stats
    with engine.connect() as conn:
        resolutions = {r[0] for r in conn.execute(select(st.c.resolution))}
    assert resolutions == {3600}


def _day_sizes(conn) -> int:
    """Bytes of every partition of the partitioned tables (PostgreSQL)."""
    return sum(int(conn.exec_driver_sql(f"SELECT coalesce(sum(pg_total_relation_size(relid)), 0) "
                                        f"FROM pg_partition_tree('{table.name}')").scalar_one())
               for table in partitions.PARTITIONED)


def test_an_expired_day_goes_whole_and_the_days_kept_are_still_searched(engine):
    old_day = partitions.day_of(BASE - 3 * DAY)
    old = [tid(i) for i in range(1, 2001)]  # 2,000 traces of 10 spans: 20,000 spans in one day
    for i in range(0, len(old), 250):
        ingest(engine, [s for t in old[i:i + 250] for s in trace(t, -3 * DAY, spans=10)],
               received_ns=BASE - 3 * DAY)
    kept = [tid(i) for i in range(5000, 5010)]
    ingest(engine, [s for t in kept for s in trace(t, 0)], received_ns=BASE)
    finalize_all(engine, BASE + 5 * S)
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        assert partitions.day_of_no(conn.exec_driver_sql("SELECT min(trace_no) FROM traces").scalar()) == old_day
        if postgres:
            size_before = _day_sizes(conn)

    result = run_retention(engine, BASE - DAY)

    assert result["traces"] == 2000 and result["trace_blocks"] == 2000 and result["spans"] == 20_000
    with engine.connect() as conn:
        for table in schema.finalized_tables(engine.dialect.name):
            lo, hi = partitions.first_no(old_day), partitions.first_no(old_day + 1)
            assert conn.execute(select(func.count()).select_from(table)
                                .where(table.c.trace_no >= lo, table.c.trace_no < hi)).scalar_one() == 0
            if postgres:  # the day's partition itself is gone
                name = partitions.partition_name(table.name, old_day)
                assert conn.exec_driver_sql(f"SELECT to_regclass('{name}')").scalar() is None
        if postgres:
            assert _day_sizes(conn) < size_before
        found = queries.search_traces(conn, queries.TraceQuery(service="db", limit=50))
        tagged = queries.search_traces(conn, queries.TraceQuery(tags=[("k", "=", "v")], limit=50))
    assert {t["trace_id"] for t in found["traces"]} == set(kept)
    assert {t["trace_id"] for t in tagged["traces"]} == set(kept)


@pytest.mark.postgres
def test_retention_gives_the_drained_staging_pages_back_on_postgres(postgres_url):
    """The finalizer leaves dead staging rows behind; the retention pass VACUUMs them and the empty
    pages at the end of the table go back to the filesystem (not only when autovacuum comes by)."""
    from collector_worker.storage import open_engine

    engine = open_engine(postgres_url)
    try:
        with engine.begin() as conn:  # no autovacuum during the test: what is measured is the pass's own VACUUM
            conn.exec_driver_sql("ALTER TABLE spans SET (autovacuum_enabled = false)")
        for i in range(0, 400, 100):
            ingest(engine, [s for t in range(i, i + 100) for s in trace(tid(t + 1), 0, spans=10)], received_ns=BASE)
        finalize_all(engine, BASE + 5 * S)

        def staging_bytes():
            with engine.connect() as conn:
                return conn.exec_driver_sql("SELECT pg_relation_size('spans')").scalar_one()

        drained = staging_bytes()
        assert drained > 100_000 and count(engine, schema.spans) == 0  # dead rows only
        run_retention(engine, BASE - 30 * DAY)  # nothing expires
        assert staging_bytes() == 0
        assert count(engine, schema.traces) == 400
    finally:
        engine.dispose()


def _late_spans(trace_id, offset_ns, count=3):
    """``count`` late spans of one finalized trace, stored in one batch: one staging row holding them all."""
    out = [make_span(trace_id, sid(70 + i), sid(1), 10 + i, 20 + i, service="late") for i in range(count)]
    for s in out:
        s["start_ns"] += offset_ns
        s["end_ns"] += offset_ns
    return out


def test_late_spans_of_an_expired_trace_are_counted_as_spans(engine):
    """A trace of an expired day with late spans staged (not re-finalized yet): the pass reports the late
    spans, not the staging row that holds them, and agrees with the dry run."""
    old = [tid(i) for i in range(1, 4)]
    ingest(engine, [s for t in old for s in trace(t, -3 * DAY)], received_ns=BASE - 3 * DAY)
    finalize_all(engine, BASE + 5 * S)
    ingest(engine, _late_spans(old[0], -3 * DAY), received_ns=BASE - 3 * DAY)
    assert len(span_rows(engine)) == 3 * 3 + 3

    predicted = count_expired(engine, BASE - DAY)
    result = run_retention(engine, BASE - DAY)

    assert result["traces"] == 3 and result["spans"] == 3 * 3 + 3
    assert predicted == result
    assert span_rows(engine) == []


def test_a_trace_refinalized_into_a_day_after_it_expired_goes_with_the_next_pass(engine):
    """A late span of a trace whose day was deleted re-finalizes the trace into that day (the day of its
    start); the next pass deletes it again, counted, and keeps the rest (docs/operations.md, Retention)."""
    old, kept = tid(1), tid(2)
    ingest(engine, trace(old, -3 * DAY), received_ns=BASE - 3 * DAY)
    ingest(engine, trace(kept, 0), received_ns=BASE)
    finalize_all(engine, BASE + 5 * S)
    assert run_retention(engine, BASE - DAY)["traces"] == 1

    ingest(engine, _late_spans(old, -3 * DAY, count=2), received_ns=BASE + 10 * S)
    finalize_all(engine, BASE + 20 * S)
    with engine.connect() as conn:
        again = queries.get_trace(conn, old)
        assert again is not None and again["summary"]["span_count"] == 2  # what arrived after the delete
        numbers = conn.execute(select(schema.traces.c.trace_no).where(schema.traces.c.trace_id == old)).scalars()
        assert [partitions.day_of_no(n) for n in numbers] == [partitions.day_of(BASE - 3 * DAY)]

    result = run_retention(engine, BASE - DAY)

    assert result["traces"] == 1 and result["spans"] == 2
    with engine.connect() as conn:
        assert queries.get_trace(conn, old) is None and queries.get_trace(conn, kept) is not None
