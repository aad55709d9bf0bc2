"""Batch finalization on SQLite and PostgreSQL: a large claimed batch gives the same rows as finalizing
trace by trace, late spans over several batches leave exactly the statistics of a single pass, and
collectors claiming at the same moment take disjoint sets of traces."""

from __future__ import annotations

import json
import threading

from sqlalchemy import select

from collector_worker import assembler, finalizer
from collector_worker.settings import CollectorSettings
from collector_worker.storage import schema
from collector_worker.storage.writer import store_spans
from collector_worker.storage import block_store
from tests.support.stored import operation_rows, tag_rows

MS = 1_000_000
S = 1_000_000_000
BASE = 1_700_000_040 * S  # a minute boundary


def tid(n: int) -> str:
    return f"{n:032x}"


def sid(n: int) -> str:
    return f"{n:016x}"


def trace_spans(n: int, prefix: str, first: int = 0, last: int = 8) -> list[dict]:
    """Spans ``first``..``last`` of trace ``n``: a root, cross-service calls, a DB call, an error, a lost parent."""
    t = tid(n if prefix == "a" else 10_000 + n)
    out = []
    for i in range(first, last):
        parent = None if i == 0 else sid(99) if (i == 7 and n % 5 == 0) else sid((i - 1) // 2 + 1)
        service = f"{prefix}-{('gateway', 'orders', 'payments', 'db')[0 if i == 0 else 1 + i % 3]}"
        attributes = {"http.route": f"/r/{n % 4}", "http.response.status_code": 200 + n % 2, "i": i}
        if i == 3:
            attributes["messaging.system"] = "redis"
        start = BASE + n * 37 * MS + i * MS
        out.append({
            "trace_id": t, "span_id": sid(i + 1), "parent_span_id": parent, "name": f"op-{i % 4}",
            "kind": "server" if i == 0 else ("client" if i % 2 else "server"),
            "start_ns": start, "end_ns": start + (20 - 2 * i + n % 3) * MS,
            "status_code": "error" if (n + i) % 11 == 0 else "ok", "status_message": None, "service": service,
            "resource": {"host.name": f"h{i % 2}"}, "attributes": attributes, "events": [], "links": [],
            "scope": None,
        })
    return out


def ingest(engine, spans, received_ns):
    with engine.begin() as conn:
        finalizer.on_spans_stored(conn, store_spans(conn, spans, received_ns))


def finalize_all(engine, now_ns, consumer="c1"):
    total = 0
    while (n := finalizer.finalize_ready(engine, CollectorSettings(quiet_period=2.0), consumer, now_ns=now_ns)):
        total += n
    return total


def snapshot(engine, prefix: str) -> dict:
    """Everything the finalizer wrote for one service prefix, with the prefix and trace-id offset removed."""
    def norm(value):
        if isinstance(value, str):
            return value.replace(f"{prefix}-", "x-")
        return int(value) if isinstance(value, bool) else value

    def trace_no(t):
        return int(t, 16) % 10_000

    out = {}
    with engine.connect() as conn:
        t = schema.traces
        out["traces"] = sorted(
            (trace_no(r.trace_id), norm(r.root_service), r.root_operation, r.start_ns, r.duration_ns, r.span_count,
             r.error_count, norm(r.services), int(r.incomplete), r.clock_skew_ns, r.warnings)
            for r in conn.execute(select(t).where(t.c.root_service.like(f"{prefix}-%"))))
        ids = [tid(n) if prefix == "a" else tid(10_000 + n) for n, *_ in out["traces"]]
        wanted = set(ids)
        out["spans"] = sorted((trace_no(r["trace_id"]), r["span_id"], r["depth"], r["self_time_ns"],
                               int(r["critical_path"])) for r in block_store.all_spans(conn) if r["trace_id"] in wanted)
    out["ops"] = sorted((trace_no(r["trace_id"]), norm(r["service"]), r["operation"], int(r["error"]))
                        for r in operation_rows(engine) if r["trace_id"] in wanted)
    out["tags"] = sorted((trace_no(r["trace_id"]), r["key"], r.get("value_hash") or 0, r.get("value_num") or 0.0)
                         for r in tag_rows(engine) if r["trace_id"] in wanted)
    with engine.connect() as conn:
        st, sh, dep = schema.stats, schema.stats_histogram, schema.dependencies
        out["stats"] = sorted((r.scope, r.resolution, r.bucket, norm(r.service), r.operation, r.count, r.error_count,
                               r.total_ns) for r in conn.execute(select(st).where(st.c.service.like(f"{prefix}-%")))
                              if r.count)
        out["hist"] = sorted((r.scope, r.resolution, r.bucket, norm(r.service), r.operation, r.bin, r.count)
                             for r in conn.execute(select(sh).where(sh.c.service.like(f"{prefix}-%"))) if r.count)
        out["deps"] = sorted((r.resolution, r.bucket, norm(r.caller), norm(r.callee), r.kind, r.calls, r.errors,
                              r.total_ns) for r in conn.execute(select(dep).where(dep.c.caller.like(f"{prefix}-%")))
                             if r.calls)
    return out


N_TRACES = finalizer.MAX_TRACES_PER_CALL + 150  # more than one claimed batch


def test_late_spans_over_several_batches_equal_one_pass(engine):
    """Traces of prefix "a" arrive in two parts, finalized in between; "b" arrives whole, finalized once.

    Every row the finalizer writes (summaries, search rows, span columns,
    statistics with histograms, dependency edges) must come out identical.
    """
    ingest(engine, [s for n in range(N_TRACES) for s in trace_spans(n, "a", 0, 5)], BASE)
    assert finalize_all(engine, BASE + 5 * S) == N_TRACES
    ingest(engine, [s for n in range(N_TRACES) if n % 2 for s in trace_spans(n, "a", 5, 8)], BASE + 6 * S)
    ingest(engine, [s for n in range(N_TRACES) if not n % 2 for s in trace_spans(n, "a", 5, 8)], BASE + 6 * S)
    assert finalize_all(engine, BASE + 20 * S) == N_TRACES

    ingest(engine, [s for n in range(N_TRACES) for s in trace_spans(n, "b")], BASE + 6 * S)
    assert finalize_all(engine, BASE + 20 * S) == N_TRACES

    a, b = snapshot(engine, "a"), snapshot(engine, "b")
    assert len(a["traces"]) == N_TRACES and len(a["spans"]) == 8 * N_TRACES
    for part in ("traces", "ops", "tags", "spans", "stats", "hist", "deps"):
        assert a[part] == b[part], part
    assert {r[3] for r in a["deps"]} >= {"x-orders", "x-payments", "x-db"}
    assert any(r[8] for r in a["traces"])  # some traces have a missing parent: incomplete
    with engine.connect() as conn:
        versions = {r.root_service[0]: set() for r in conn.execute(select(schema.traces.c.root_service))}
        for r in conn.execute(select(schema.traces.c.root_service, schema.traces.c.version)):
            versions[r.root_service[0]].add(r.version)
    assert versions == {"a": {2}, "b": {1}}
    assert finalize_all(engine, BASE + 30 * S) == 0


def test_batch_rows_match_the_assembler(engine):
    ingest(engine, [s for n in range(40) for s in trace_spans(n, "a")], BASE)
    assert finalize_all(engine, BASE + 5 * S) == 40
    with engine.connect() as conn:
        stored = {r.trace_id: r for r in conn.execute(select(schema.traces))}
        spans = {(r["trace_id"], r["span_id"]): r for r in block_store.all_spans(conn)}
    for n in range(40):
        a = assembler.assemble(trace_spans(n, "a"))
        row = stored[tid(n)]
        assert (row.root_span_id, row.start_ns, row.duration_ns, row.span_count, row.error_count,
                bool(row.incomplete), json.loads(row.services), json.loads(row.warnings)) == \
            (a.summary["root_span_id"], a.summary["start_ns"], a.summary["duration_ns"], a.summary["span_count"],
             a.summary["error_count"], a.summary["incomplete"], a.summary["services"], a.summary["warnings"])
        for span_id, fields in a.spans.items():
            r = spans[(tid(n), span_id)]
            assert (r["depth"], r["self_time_ns"], bool(r["critical_path"])) == \
                (fields["depth"], fields["self_time_ns"], fields["critical_path"])


def test_simultaneous_claims_are_disjoint(engine):
    ingest(engine, [s for n in range(600) for s in trace_spans(n, "a", 0, 1)], BASE)
    now = BASE + 5 * S
    barrier = threading.Barrier(3)
    claimed: dict[str, list] = {}
    errors: list[BaseException] = []

    def run(name):
        try:
            barrier.wait(10)
            claimed[name] = finalizer.claim(engine, name, now, now - 2 * S, limit=250)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"c{i}",)) for i in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    sets = [{t for t, _ in claimed[name]} for name in sorted(claimed)]
    assert sum(len(s) for s in sets) == len(set().union(*sets)) == 600  # no trace claimed twice, none left
    with engine.connect() as conn:
        owners = dict(conn.execute(select(schema.pending_traces.c.trace_id, schema.pending_traces.c.claimed_by)).all())
    for name in claimed:
        assert all(owners[t] == name for t, _ in claimed[name])


def test_claim_takes_oldest_quiet_traces_first(engine):
    for n in range(30):
        ingest(engine, trace_spans(n, "a", 0, 1), BASE + (30 - n) * MS)
    ingest(engine, trace_spans(99, "a", 0, 1), BASE + 10 * S)  # not quiet yet
    now = BASE + 5 * S
    first = finalizer.claim(engine, "c1", now, now - 2 * S, limit=10)
    assert {t for t, _ in first} == {tid(n) for n in range(20, 30)}
    rest = finalizer.claim(engine, "c2", now, now - 2 * S, limit=100)
    assert {t for t, _ in rest} == {tid(n) for n in range(20)}
