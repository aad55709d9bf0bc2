"""Finalization on SQLite and PostgreSQL: summaries, late spans, exact statistics, leases."""

from __future__ import annotations

import json
import threading
import time

import pytest

from sqlalchemy import func, select

from collector_worker import finalizer, write_pipeline
from collector_worker.settings import CollectorSettings
from collector_worker.stats import Histogram, bin_for
from collector_worker.storage import schema
from collector_worker.storage.writer import store_spans
from tests.support.stored import operation_rows, span_rows, tag_hash, tag_rows

MS = 1_000_000
S = 1_000_000_000
BASE = 1_700_000_040 * S  # a minute boundary


def make_span(trace_id, span_id, parent, start_ms, end_ms, service="api", name=None, kind="internal",
              status="unset", attributes=None):
    return {
        "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name or f"op-{span_id[-2:]}",
        "kind": kind, "start_ns": BASE + int(start_ms * MS), "end_ns": BASE + int(end_ms * MS),
        "status_code": status, "status_message": "boom" if status == "error" else None, "service": service,
        "resource": {}, "attributes": attributes or {}, "events": [], "links": [], "scope": None,
    }


def sid(n: int) -> str:
    return f"{n:016x}"


def tid(n: int) -> str:
    return f"{n:032x}"


def ingest(engine, spans, received_ns=BASE):
    """What the consumer does per batch: idempotent insert, then per-span bookkeeping, one transaction."""
    with engine.begin() as conn:
        new = store_spans(conn, spans, received_ns)
        finalizer.on_spans_stored(conn, new)
    return new


def settings(**kw):
    kw.setdefault("quiet_period", 2.0)
    return CollectorSettings(**kw)


def finalize_all(engine, now_ns, consumer="c1", **kw):
    total = 0
    while True:
        n = finalizer.finalize_ready(engine, settings(**kw), consumer, now_ns=now_ns)
        total += n
        if n == 0:
            return total


def rows(engine, table, *where):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(table).where(*where)).mappings()]


def trace_stats(engine, scope="trace", resolution=60):
    st, sh = schema.stats, schema.stats_histogram
    with engine.connect() as conn:
        stat = [dict(r) for r in conn.execute(select(st).where(st.c.scope == scope, st.c.resolution == resolution))
                .mappings()]
        hist = conn.execute(select(sh.c.service, sh.c.operation, sh.c.bin, sh.c.count)
                            .where(sh.c.scope == scope, sh.c.resolution == resolution, sh.c.count != 0)).all()
    return stat, sorted(tuple(h) for h in hist)


def test_finalize_writes_summary_search_rows_and_span_columns(engine):
    t = tid(1)
    #  root api [0 ........ 100]
    #   call api  [10 ... 60]        (client, http)
    #    handler users [15 . 55]     (server, error)
    ingest(engine, [
        make_span(t, sid(1), None, 0, 100, name="GET /x", kind="server"),
        make_span(t, sid(2), sid(1), 10, 60, kind="client", attributes={"http.method": "GET", "n": 3}),
        make_span(t, sid(3), sid(2), 15, 55, service="users", kind="server", status="error",
                  attributes={"http.route": "/u"}),
    ])
    assert finalizer.finalize_ready(engine, settings(), "c1", now_ns=BASE + 1 * S) == 0  # not quiet yet
    assert finalizer.finalize_ready(engine, settings(), "c1", now_ns=BASE + 3 * S) == 1

    [trace] = rows(engine, schema.traces)
    assert trace["root_service"] == "api" and trace["root_operation"] == "GET /x"
    assert trace["span_count"] == 3 and trace["error_count"] == 1 and trace["duration_ns"] == 100 * MS
    assert json.loads(trace["services"]) == ["api", "users"] and trace["version"] == 1
    assert not trace["incomplete"]
    ops = {(r["service"], r["operation"], r["error"]) for r in operation_rows(engine)}
    assert ops == {("api", "GET /x", False), ("api", "op-02", False), ("users", "op-03", True)}
    tags = {(r["key"], r.get("value_hash"), r.get("value_num")) for r in tag_rows(engine)}
    assert tags == {("http.method", tag_hash("GET"), None), ("n", tag_hash("3"), None), ("n", None, 3.0),
                    ("http.route", tag_hash("/u"), None),
                    ("span.kind", tag_hash("server"), None), ("span.kind", tag_hash("client"), None)}
    spans = {r["span_id"]: r for r in span_rows(engine)}
    assert [spans[sid(i)]["depth"] for i in (1, 2, 3)] == [0, 1, 2]
    assert [spans[sid(i)]["self_time_ns"] for i in (1, 2, 3)] == [50 * MS, 10 * MS, 40 * MS]
    assert all(bool(spans[sid(i)]["critical_path"]) for i in (1, 2, 3))
    assert rows(engine, schema.pending_traces) == []


def test_late_span_refinalizes_and_statistics_stay_exact(engine):
    t = tid(2)
    ingest(engine, [make_span(t, sid(1), None, 0, 100, name="root"),
                    make_span(t, sid(2), sid(1), 10, 20, service="db", name="q")])
    assert finalize_all(engine, BASE + 5 * S) == 1
    # the same stream entry redelivered changes nothing
    assert ingest(engine, [make_span(t, sid(2), sid(1), 10, 20, service="db", name="q")]) == []

    # a late span arrives from another service, extends the trace and fails
    ingest(engine, [make_span(t, sid(3), sid(1), 50, 250, service="mail", name="send", status="error")],
           received_ns=BASE + 6 * S)
    assert finalize_all(engine, BASE + 7 * S) == 0  # quiet period counts from the late span
    assert finalize_all(engine, BASE + 9 * S) == 1

    [trace] = rows(engine, schema.traces)
    assert trace["version"] == 2 and trace["span_count"] == 3 and trace["duration_ns"] == 250 * MS
    stat, hist = trace_stats(engine)
    # one trace, counted once, with the new end-to-end duration; the old sample was taken back out
    assert [(r["service"], r["operation"], r["count"], r["error_count"], r["total_ns"]) for r in stat] == \
        [("api", "root", 1, 1, 250 * MS)]
    assert hist == [("api", "root", bin_for(250 * MS), 1)]
    for resolution in (60, 3600):
        span_stat, _ = trace_stats(engine, scope="span", resolution=resolution)
        assert sum(r["count"] for r in span_stat) == 3
    deps = rows(engine, schema.dependencies, schema.dependencies.c.resolution == 60)
    assert sorted((d["caller"], d["callee"], d["calls"], d["errors"]) for d in deps) == \
        [("api", "db", 1, 0), ("api", "mail", 1, 1)]


def test_missing_parent_stored_incomplete_with_warning(engine):
    t = tid(3)
    ingest(engine, [make_span(t, sid(1), None, 0, 100), make_span(t, sid(2), sid(99), 10, 20)])
    finalize_all(engine, BASE + 5 * S)
    [trace] = rows(engine, schema.traces)
    assert trace["incomplete"] and trace["root_span_id"] == sid(1)
    warnings = json.loads(trace["warnings"])
    assert [(w["code"], w["span_id"]) for w in warnings] == [("missing_parent", sid(2))]
    # the missing parent arrives: the trace becomes complete
    ingest(engine, [make_span(t, sid(99), sid(1), 5, 30)], received_ns=BASE + 6 * S)
    finalize_all(engine, BASE + 10 * S)
    [trace] = rows(engine, schema.traces)
    assert not trace["incomplete"] and json.loads(trace["warnings"]) == [] and trace["span_count"] == 3


def test_lease_prevents_double_finalization(engine):
    for i in range(5):
        ingest(engine, [make_span(tid(100 + i), sid(1), None, 0, 10)])
    now = BASE + 5 * S
    claimed = finalizer.claim(engine, "c1", now, now - 2 * S)
    assert len(claimed) == 5
    # c2 finds everything leased to c1
    assert finalizer.finalize_ready(engine, settings(), "c2", now_ns=now) == 0
    assert rows(engine, schema.traces) == []
    # c1 died: after the lease runs out c2 takes over
    later = now + finalizer.LEASE_NS + 1
    assert finalizer.finalize_ready(engine, settings(), "c2", now_ns=later) == 5
    assert finalizer.finalize_ready(engine, settings(), "c1", now_ns=later) == 0
    assert len(rows(engine, schema.traces)) == 5


def test_concurrent_finalizers_split_the_work(engine):
    n = 120
    ingest(engine, [make_span(tid(1000 + i), sid(1), None, 0, 10 + i) for i in range(n)])
    now = BASE + 5 * S
    results: dict[str, int] = {}
    errors: list[BaseException] = []

    def run(name):
        try:
            total = 0
            while (k := finalizer.finalize_ready(engine, settings(), name, now_ns=now)):
                total += k
            results[name] = total
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"c{i}",)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert sum(results.values()) == n
    assert {r["version"] for r in rows(engine, schema.traces)} == {1}
    stat, _ = trace_stats(engine)
    assert sum(r["count"] for r in stat) == n  # each trace counted by exactly one collector


def test_on_spans_stored_counts_each_new_span_once(engine):
    spans = [make_span(tid(5), sid(i), None, i, i + 3 + i % 5, name="work") for i in range(1, 40)]
    ingest(engine, spans)
    ingest(engine, spans)  # redelivery: store_spans returns nothing new
    stat, hist = trace_stats(engine, scope="span")
    [row] = stat
    assert row["count"] == 39 and row["max_ns"] == max(s["end_ns"] - s["start_ns"] for s in spans)
    h = Histogram()
    for s in spans:
        h.add(s["end_ns"] - s["start_ns"])
    assert hist == sorted(("api", "work", b, c) for b, c in h.bins.items())


def test_pending_row_without_spans_is_settled(engine):
    with engine.begin() as conn:
        conn.execute(schema.pending_traces.insert().values(trace_id=tid(7), first_seen_ns=BASE, last_seen_ns=BASE))
    assert finalizer.finalize_ready(engine, settings(), "c1", now_ns=BASE + 5 * S) == 1
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(schema.pending_traces)).scalar_one() == 0


def _two_refinalized_traces(engine):
    """Two traces finalized once (10 ms each), then extended by late spans (A to 30 ms, B to 40 ms)."""
    a, b = tid(300), tid(301)
    ingest(engine, [make_span(a, sid(1), None, 0, 10, name="root"), make_span(b, sid(1), None, 0, 10, name="root")])
    assert finalize_all(engine, BASE + 5 * S) == 2
    ingest(engine, [make_span(a, sid(2), sid(1), 5, 30)], received_ns=BASE + 6 * S)  # A is the older: leased first
    ingest(engine, [make_span(b, sid(2), sid(1), 5, 40)], received_ns=BASE + 7 * S)
    return a, b


def _stolen_meanwhile(monkeypatch, engine, later_ns):
    """Make the first finalize pass outlive its leases: while it assembles, collector c2 takes over the oldest
    trace (its lease ran out) and finalizes it. Returns what c2 took."""
    prepare, taken = finalizer.read_and_assemble, []

    def slow_prepare(engine_, settings_, claimed, now_ns, recent):
        batch = prepare(engine_, settings_, claimed, now_ns, recent)
        if not taken:
            now = later_ns()
            taken.extend(finalizer.claim(engine, "c2", now, now - 2 * S, limit=1))
            theirs = prepare(engine, settings(), taken, now, None)
            with engine.begin() as conn:
                theirs.write(conn, "c2")
        return batch

    monkeypatch.setattr(finalizer, "read_and_assemble", slow_prepare)
    return taken


def _assert_each_trace_counted_once(engine, a, b):
    assert {(r["trace_id"], r["version"], r["duration_ns"]) for r in rows(engine, schema.traces)} == \
        {(a, 2, 30 * MS), (b, 2, 40 * MS)}
    stat, hist = trace_stats(engine)
    assert [(r["service"], r["operation"], r["count"], r["total_ns"]) for r in stat] == \
        [("api", "root", 2, 70 * MS)]
    # counted twice, A would leave its old 10 ms sample at -1 and its new one at 2
    assert hist == sorted([("api", "root", bin_for(30 * MS), 1), ("api", "root", bin_for(40 * MS), 1)])
    assert rows(engine, schema.pending_traces) == []


def test_a_pass_that_outlived_its_leases_leaves_their_traces_to_the_collector_that_took_them(engine, monkeypatch):
    a, b = _two_refinalized_traces(engine)
    now = BASE + 20 * S
    taken = _stolen_meanwhile(monkeypatch, engine, lambda: now + finalizer.LEASE_NS + 1)
    lost_before = finalizer.counters()["leases_lost"]
    assert finalizer.finalize_ready(engine, settings(), "c1", now_ns=now) == 1  # B; A is c2's
    assert [t for t, _ in taken] == [a]
    assert finalizer.counters()["leases_lost"] == lost_before + 1
    _assert_each_trace_counted_once(engine, a, b)


def test_the_sqlite_write_thread_checks_its_leases_too(sqlite_engine, monkeypatch):
    engine = sqlite_engine
    a, b = _two_refinalized_traces(engine)
    taken = _stolen_meanwhile(monkeypatch, engine, lambda: time.time_ns() + finalizer.LEASE_NS + 1)
    written: list = []
    pipeline = write_pipeline.WritePipeline(engine, settings(), "c1", None, finalizer.ClaimAhead(),
                                       on_written=written.append)
    try:
        while pipeline.step():
            pass
    finally:
        pipeline.close()
    assert [t for t, _ in taken] == [a] and written == [1]
    _assert_each_trace_counted_once(engine, a, b)


def test_a_write_without_the_leases_writes_nothing(engine):
    ingest(engine, [make_span(tid(310), sid(1), None, 0, 10)])
    now = BASE + 5 * S
    claimed = finalizer.claim(engine, "c1", now, now - 2 * S)
    batch = finalizer.read_and_assemble(engine, settings(), claimed, now, None)
    finalizer.release(engine, "c1", [t for t, _ in claimed])  # e.g. given back by an earlier failure
    with pytest.raises(finalizer.LeaseLost) as lost, engine.begin() as conn:
        batch.write(conn, "c1")
    assert lost.value.trace_ids == [tid(310)]
    assert rows(engine, schema.traces) == [] and len(rows(engine, schema.pending_traces)) == 1
