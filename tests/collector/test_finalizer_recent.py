"""Finalizing from the spans the collector just stored (RecentSpans), beside reading them back, on SQLite and
PostgreSQL: identical rows, exact fallback when another writer added spans, late spans, and the write lock
and WAL checkpointer the ingest and finalizer threads share on SQLite."""

from __future__ import annotations

import threading

from sqlalchemy import func, select

from collector_worker import finalizer, recent_spans
from collector_worker.consumer import Checkpointer, FinalizerThread, StreamConsumer
from collector_worker.settings import CollectorSettings
from collector_worker.storage import open_engine, schema, staging
from collector_worker.storage.writer import prepare_spans, store_spans, write_lock
from tests.collector.test_finalizer_batch import BASE, S, snapshot, trace_spans
from collector_worker.storage import block_store
from tests.support.stored import tag_hash

N = finalizer.MAX_TRACES_PER_CALL + 60  # more than one claimed batch


def odd_values(spans):
    """Attribute values JSON does not keep as they are (a list, bytes): the cache must read what was stored."""
    for s in spans:
        if int(s["trace_id"], 16) % 4 == 1:
            s["attributes"] = {**s["attributes"], "list": ["x", 1], "raw": b"ab"}
    return spans


def ingest(engine, spans, received_ns, recent=None):
    rows: list = []
    with engine.begin() as conn:
        new = store_spans(conn, spans, received_ns, stored_rows=rows)
        finalizer.on_spans_stored(conn, new)
    if recent is not None:
        recent.add(rows)
    return rows


def finalize_all(engine, now_ns, recent=None):
    total = 0
    settings = CollectorSettings(quiet_period=2.0)
    while (n := finalizer.finalize_ready(engine, settings, "c1", now_ns=now_ns, recent=recent)):
        total += n
    return total


def test_recent_spans_give_the_rows_reading_back_gives(engine):
    recent = finalizer.RecentSpans()
    # "a": this collector stored spans 0..4 of every trace, except span 4 of every third trace, which another
    # writer stored (so those traces must be read back); then late spans 5..7 arrive.
    first = odd_values([s for n in range(N) for s in trace_spans(n, "a", 0, 5)])
    other = {(s["trace_id"], s["span_id"]) for n in range(0, N, 3) for s in trace_spans(n, "a", 4, 5)}
    ingest(engine, [s for s in first if (s["trace_id"], s["span_id"]) not in other], BASE, recent)
    ingest(engine, [s for s in first if (s["trace_id"], s["span_id"]) in other], BASE)
    assert len(recent) == 5 * N - len(other)
    assert finalize_all(engine, BASE + 5 * S, recent) == N
    assert (recent.hits, recent.misses) == (N - len(other), len(other))
    assert len(recent) == 0

    ingest(engine, odd_values([s for n in range(N) for s in trace_spans(n, "a", 5, 8)]), BASE + 6 * S, recent)
    assert finalize_all(engine, BASE + 20 * S, recent) == N
    # Late spans of traces finalized before come from memory too (merged with the block): no read back.
    assert (recent.hits, recent.misses) == (2 * N - len(other), len(other))
    # "b": the same traces whole, read back from the database.
    ingest(engine, odd_values([s for n in range(N) for s in trace_spans(n, "b")]), BASE + 6 * S)
    assert finalize_all(engine, BASE + 20 * S) == N

    a, b = snapshot(engine, "a"), snapshot(engine, "b")
    assert len(a["spans"]) == 8 * N
    for part in ("traces", "ops", "tags", "spans", "stats", "hist", "deps"):
        assert a[part] == b[part], part
    assert any(t[1] == "raw" and t[2] == tag_hash("ab") for t in a["tags"])


def held_rows(spans):
    """What ``store_spans`` hands the cache for ``spans`` staged as one batch: a row per trace."""
    out = []
    for (trace_id, _), group in prepare_spans(spans, BASE).groups.items():
        row = staging.row(trace_id, group, BASE)
        out.append((trace_id, row[1], group, len(row[-1])))
    return out


def test_recent_spans_beyond_the_limit_are_not_held_and_the_oldest_stay():
    """Finalizers take the oldest traces first: under a backlog those are the ones worth holding."""
    recent = finalizer.RecentSpans(limit=20)
    recent.add(held_rows([s for n in range(5) for s in trace_spans(n, "a", 0, 8)]))
    assert len(recent) <= 20 and recent.forgotten == 24
    held = recent.take([f"{n:032x}" for n in range(5)])
    assert sorted(held) == [f"{n:032x}" for n in (0, 1)]
    assert all(sum(map(len, v.values())) == 8 for v in held.values()) and len(recent) == 0


def test_recent_spans_beyond_the_memory_bound_are_not_held():
    rows = held_rows([s for n in range(5) for s in trace_spans(n, "a", 0, 8)])
    per_trace = recent_spans.estimated_bytes(8, rows[0][3])
    recent = finalizer.RecentSpans(max_bytes=2 * per_trace + 100)
    recent.add(rows)
    assert recent.bytes <= 2 * per_trace + 100 and recent.forgotten == 24
    held = recent.take([f"{n:032x}" for n in range(5)])
    assert sorted(held) == [f"{n:032x}" for n in (0, 1)]
    assert (len(recent), recent.bytes) == (0, 0)


def test_taking_a_batch_drops_what_was_received_well_before_it():
    """Held traces from before the oldest of a finalizer's batch were finalized elsewhere: they make room."""
    recent = finalizer.RecentSpans()
    old, new = held_rows(trace_spans(0, "a", 0, 4)), held_rows(trace_spans(1, "a", 0, 4))
    for row in old:
        for span in row[2]:
            span["received_ns"] = BASE - 10 * S
    for row in new:
        for span in row[2]:
            span["received_ns"] = BASE
    recent.add(old + new)
    assert recent.take([f"{2:032x}"], before_ns=BASE - S) == {}
    assert (len(recent), recent.forgotten) == (4, 4)
    assert list(recent.take([f"{1:032x}"])) == [f"{1:032x}"] and recent.bytes == 0


def test_the_memory_estimate_grows_with_what_a_span_holds():
    small, large = trace_spans(0, "a", 0, 2)
    large["attributes"] = {f"key.{i}": "v" * 1000 for i in range(20)}
    sizes = [len(staging.row(s["trace_id"], [s], BASE)[-1]) for s in (small, large)]
    assert recent_spans.estimated_bytes(1, sizes[1]) > recent_spans.estimated_bytes(1, sizes[0]) + 20 * 1000


def test_collector_setting_bounds_the_memory_of_recent_spans(engine):
    consumer = StreamConsumer(CollectorSettings.load({}, recent_spans_memory="1MB"), engine, None, "c1")
    assert consumer.recent.max_bytes == 1024 * 1024


def test_ingest_and_finalizer_threads_share_the_database(engine):
    """The consumer's two threads: batches stored while the finalizer writes; every trace finalized once."""
    settings = CollectorSettings(quiet_period=0.2)
    consumer = StreamConsumer(settings, engine, None, "c1")
    stop = threading.Event()
    thread = FinalizerThread(consumer, stop)
    thread.start()
    try:
        for part in range(6):
            spans = [s for n in range(part * 200, (part + 1) * 200) for s in trace_spans(n, "a")]
            rows: list = []
            with write_lock(engine), engine.begin() as conn:
                finalizer.on_spans_stored(conn, store_spans(conn, spans, BASE + part, stored_rows=rows))
            consumer.recent.add(rows)

        def done():
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(schema.pending_traces)).scalar_one() == 0

        deadline = threading.Event()
        for _ in range(600):
            if done():
                break
            deadline.wait(0.1)
        assert done()
    finally:
        stop.set()
        thread.join(30)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.traces)).scalar_one() == 1200
        versions = {v for (v,) in conn.execute(select(schema.traces.c.version))}
        assert [s for s in block_store.all_spans(conn) if s["depth"] is None] == []
    assert versions == {1}


def test_checkpointer_turns_automatic_checkpoints_off_while_it_runs(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'c.db'}")

    def autocheckpoint():
        with engine.connect() as conn:
            return (conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar(),
                    conn.exec_driver_sql("PRAGMA cache_size").scalar())

    try:
        assert autocheckpoint() == (1000, -2000)
        stop = threading.Event()
        checkpointer = Checkpointer(engine, stop)
        checkpointer.start()
        assert autocheckpoint() == (0, -65536)
        ingest(engine, [s for n in range(300) for s in trace_spans(n, "a")], BASE)
        stop.set()
        checkpointer.join(30)
        assert not checkpointer.is_alive()
        assert autocheckpoint() == (1000, -2000)
        with engine.connect() as conn:
            busy, log_frames, checkpointed = conn.exec_driver_sql("PRAGMA wal_checkpoint(PASSIVE)").one()
        assert busy == 0 and log_frames == checkpointed
    finally:
        engine.dispose()


def test_next_ready_is_when_the_oldest_unleased_trace_turns_quiet(engine):
    assert finalizer.next_ready_ns(engine, 2 * S, now_ns=BASE) is None
    ingest(engine, trace_spans(1, "a", 0, 2), BASE + 3 * S)
    ingest(engine, trace_spans(2, "a", 0, 2), BASE + 1 * S)
    assert finalizer.next_ready_ns(engine, 2 * S, now_ns=BASE) == BASE + 3 * S
    finalizer.claim(engine, "c1", BASE + 3 * S, BASE + 1 * S)  # leases trace 2 only
    assert finalizer.next_ready_ns(engine, 2 * S, now_ns=BASE + 3 * S) == BASE + 5 * S
