"""Tail sampling: errors and slow traces kept, a deterministic share of the rest, statistics kept."""

from __future__ import annotations

from sqlalchemy import select

from collector_worker import finalizer, sampling
from collector_worker.storage import schema
from tests.collector.test_finalizer import BASE, S, finalize_all, ingest, make_span, rows, sid, tid, trace_stats
from tests.support.stored import operation_rows, span_rows
from collector_worker.storage import block_store


def test_policy():
    assert sampling.should_keep({"error_count": 1, "duration_ns": 1}, tid(1), 0.0, 1.0)
    assert sampling.should_keep({"error_count": 0, "duration_ns": 2 * S}, tid(1), 0.0, 2.0)
    assert not sampling.should_keep({"error_count": 0, "duration_ns": 2 * S - 1}, tid(1), 0.0, 2.0)
    assert sampling.should_keep({"error_count": 0, "duration_ns": 1}, tid(1), 1.0, 2.0)


def test_ratio_is_deterministic_and_close_to_configured():
    ordinary = {"error_count": 0, "duration_ns": 1000}
    ids = [f"{(i * 2654435761) % 16**32:032x}" for i in range(1, 20001)]
    kept = [sampling.should_keep(ordinary, t, 0.25, 10.0) for t in ids]
    assert abs(sum(kept) / len(ids) - 0.25) < 0.02
    assert kept == [sampling.should_keep(ordinary, t, 0.25, 10.0) for t in ids]


def test_dropped_traces_still_count_in_statistics(engine):
    ingest(engine, [
        make_span(tid(1), sid(1), None, 0, 10, name="fast"),                    # ordinary: dropped at ratio 0
        make_span(tid(2), sid(1), None, 0, 10, name="fast", status="error"),    # error: kept
        make_span(tid(3), sid(1), None, 0, 1500, name="slow"),                  # slow: kept
        make_span(tid(4), sid(1), None, 0, 10, name="fast"),
        make_span(tid(4), sid(2), sid(1), 1, 5, service="db", name="q"),        # cross-service edge, dropped
    ])
    before = sampling.counters()
    assert finalize_all(engine, BASE + 5 * S, tail_sampling=True, tail_keep_ratio=0.0,
                        tail_slow_threshold=1.0) == 4
    after = sampling.counters()
    assert after["kept"] - before["kept"] == 2 and after["dropped"] - before["dropped"] == 2

    assert sorted(r["trace_id"] for r in rows(engine, schema.traces)) == [tid(2), tid(3)]
    with engine.connect() as conn:
        span_traces = {s["trace_id"] for s in block_store.all_spans(conn)}
    op_traces = {r["trace_id"] for r in operation_rows(engine)}
    assert span_traces == op_traces == {tid(2), tid(3)}
    stat, _ = trace_stats(engine)
    assert {(r["operation"], r["count"], r["error_count"]) for r in stat} == {("fast", 3, 1), ("slow", 1, 0)}
    span_stat, _ = trace_stats(engine, scope="span")
    assert sum(r["count"] for r in span_stat) == 5
    deps = rows(engine, schema.dependencies, schema.dependencies.c.resolution == 60)
    assert [(d["caller"], d["callee"], d["calls"]) for d in deps] == [("api", "db", 1)]


def test_sampling_off_keeps_everything(engine):
    ingest(engine, [make_span(tid(i), sid(1), None, 0, 10) for i in range(1, 6)])
    finalize_all(engine, BASE + 5 * S, tail_sampling=False, tail_keep_ratio=0.0)
    assert len(rows(engine, schema.traces)) == 5


def test_a_late_span_of_a_dropped_trace_is_dropped_and_counted_once(engine):
    """Tail sampling dropped the trace; a span arriving later must not bring it back or count it again."""
    ingest(engine, [make_span(tid(7), sid(1), None, 0, 10, name="fast"),
                    make_span(tid(7), sid(2), sid(1), 1, 5, service="db", name="q")])
    policy = dict(tail_sampling=True, tail_keep_ratio=0.0, tail_slow_threshold=1.0)
    assert finalize_all(engine, BASE + 5 * S, **policy) == 1
    assert rows(engine, schema.traces) == [] and len(rows(engine, schema.dropped_traces)) == 1
    counted, _ = trace_stats(engine)

    ingest(engine, [make_span(tid(7), sid(3), sid(1), 2, 4, service="db", name="late")],
           received_ns=BASE + 10 * S)
    late_before = finalizer.counters()["late_dropped"]
    assert finalize_all(engine, BASE + 20 * S, **policy) == 1
    assert finalizer.counters()["late_dropped"] == late_before + 1
    assert rows(engine, schema.traces) == [] and span_rows(engine) == []
    assert trace_stats(engine)[0] == counted  # the trace-scope sample is still the one of the whole trace
    assert [(r["operation"], r["count"]) for r in counted] == [("fast", 1)]
    span_ops = sorted((r["operation"], r["count"]) for r in trace_stats(engine, scope="span")[0])
    assert span_ops == [("fast", 1), ("late", 1), ("q", 1)]  # every span counted once at ingest


def test_retention_removes_old_tombstones(engine):
    from collector_worker.retention import run_retention

    ingest(engine, [make_span(tid(8), sid(1), None, 0, 10)])
    finalize_all(engine, BASE + 5 * S, tail_sampling=True, tail_keep_ratio=0.0, tail_slow_threshold=1.0)
    assert len(rows(engine, schema.dropped_traces)) == 1
    assert run_retention(engine, BASE + 60 * S)["dropped_traces"] == 1
    assert rows(engine, schema.dropped_traces) == []
