"""Storage benchmark: bytes on disk per span after ingest and finalization, per table and index.

Run ``python bench/bench_storage.py [--spans 200000] [--postgres]``. Builds a
fresh database (a SQLite file in a temporary directory; with ``--postgres`` a
PostgreSQL database of its own) through the real write path: the spans of
``bench_collector.make_entries`` (traces of 10 spans over 5 services, a few
attributes each) plus one trace of 10,000 spans of the same shape are stored
with ``store_spans`` + ``on_spans_stored`` (what the consumer runs per batch)
and finalized with ``finalize_ready`` until nothing is pending. Then it
reports:

* bytes per span: SQLite, the pages of every table and index from ``dbstat``
  (and the whole file, ``page_count * page_size`` after a WAL checkpoint,
  whose free pages the drained staging table left are reused by later spans); PostgreSQL,
  ``pg_total_relation_size`` summed over every table (indexes and TOAST
  included) and each relation's own size, right after finalization and again
  after a plain ``VACUUM`` (what autovacuum does; the steady state);
* ingest and finalization time in this process (spans/s);
* fetching the 10,000-span trace with ``queries.get_trace`` against
  ``json.dumps`` of the same result (the ratio the API budget is about).

``--demo`` measures the demo system's spans instead (``bench/demo_workload.py``: the
demo's gateway, retrieval service and Celery worker run with their tracers
exporting to a private Redis; ``--demo-questions`` questions are asked, the
captured traces replayed with new ids up to ``--spans``; ``--record-content``
as in the demo with prompts and completions recorded).

Writes ``bench/results/storage.json`` (``--out`` to change); ``--label`` names
the run inside the file so a baseline and a later run sit side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_collector import (  # noqa: E402
    SPANS_PER_ENTRY, finalize_all, make_entries, service_and_attributes, store_all)
from collector_worker.storage import open_engine, queries  # noqa: E402
from tracer.codec import decode_entry, encode_span_dicts  # noqa: E402

BIG_TRACE_SPANS = 10_000
# The staging area the finalizer drains (tables and their indexes, as SQLite and PostgreSQL name them).
STAGING_RELATIONS = frozenset((
    "spans", "pending_traces", "ix_spans_start", "ix_pending_last_seen", "spans_pkey", "pending_traces_pkey",
    "sqlite_autoindex_spans_1", "sqlite_autoindex_pending_traces_1"))


def big_trace(spans: int, start_ns: int) -> list[dict]:
    """One trace of ``spans`` spans shaped like ``make_entries``' spans (a tree three children wide)."""
    trace_id = os.urandom(16).hex()
    ids = [os.urandom(8).hex() for _ in range(spans)]
    out = []
    for i, span_id in enumerate(ids):
        service, attributes = service_and_attributes(i)
        start = start_ns + i * 10_000
        out.append({
            "trace_id": trace_id, "span_id": span_id, "parent_span_id": None if i == 0 else ids[(i - 1) // 3],
            "name": "GET /api/v1/items" if i == 0 else f"step-{i % 6}",
            "kind": "server" if i == 0 else ("client" if i % 3 == 1 else "internal"),
            "start_ns": start, "end_ns": start + (spans - i) * 1000 + 5000,
            "status_code": "error" if i % 97 == 0 else "ok", "service": service,
            "resource": {"service.version": "1.4.2", "host.name": f"host-{i % 3}"},
            "attributes": attributes,
            "events": [{"name": "cache.miss", "time_ns": start + 10, "attributes": {}}] if i % 4 == 0 else [],
            "links": [],
        })
    return out


def decoded_spans(total_spans: int, big_spans: int) -> tuple[list[dict], str | None]:
    """Decoded spans as the consumer sees them: the benchmark traces, then the big trace; its id."""
    spans = [span for entry in make_entries(total_spans) for span in decode_entry(entry).spans]
    big_id = None
    if big_spans:
        big = big_trace(big_spans, time.time_ns() - 4_000_000_000)
        big_id = big[0]["trace_id"]
        for i in range(0, len(big), SPANS_PER_ENTRY):
            spans.extend(decode_entry(encode_span_dicts(big[i:i + SPANS_PER_ENTRY])).spans)
    return spans, big_id


def demo_spans(questions: int, total_spans: int, record_content: bool) -> list[dict]:
    """The demo's spans of ``questions`` questions, replayed with new ids to about ``total_spans`` spans."""
    from bench.demo_workload import capture, replay

    captured = capture(questions, record_content)
    print(f"captured {len(captured)} spans of {questions} demo questions", flush=True)
    return replay(captured, max(1, -(-total_spans // len(captured))))


def build(database_url: str, spans: list[dict]) -> dict:
    """Store ``spans`` in batches of 10 entries, as a consumer does, then finalize every trace."""
    engine = open_engine(database_url)
    now = time.time_ns()
    try:
        started = time.perf_counter()
        store_all(engine, spans, now)
        ingest_s = time.perf_counter() - started
        started = time.perf_counter()
        traces = finalize_all(engine, now)
        finalize_s = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"traces": traces, "ingest_seconds": round(ingest_s, 3),
            "ingest_spans_per_second": round(len(spans) / ingest_s),
            "finalize_seconds": round(finalize_s, 3), "finalize_spans_per_second": round(len(spans) / finalize_s)}


def sqlite_sizes(path: Path) -> dict:
    """File bytes after a checkpoint, and bytes per table/index from ``dbstat``."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        per = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
    finally:
        conn.close()
    return {"total_bytes": page_size * pages, "free_bytes": page_size * free, "relations": per}


def postgres_sizes(database_url: str) -> dict:
    """``pg_total_relation_size`` over every table, and each table's and index's own size."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            total = conn.execute(text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'm')")).scalar_one()
            per = dict(conn.execute(text(
                "SELECT c.relname, pg_total_relation_size(c.oid) - CASE WHEN c.relkind = 'r' THEN "
                "pg_indexes_size(c.oid) ELSE 0 END FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i', 'p', 'm') ORDER BY 2 DESC")).all())
    finally:
        engine.dispose()
    return {"total_bytes": int(total), "relations": {k: int(v) for k, v in per.items()}}


def fetch_ratio(database_url: str, trace_id: str, rounds: int = 3) -> dict:
    """Best of ``rounds``: ``queries.get_trace`` of the big trace, and ``json.dumps`` of its result."""
    engine = open_engine(database_url, migrate=False)
    try:
        fetch = dumps = float("inf")
        spans = 0
        for _ in range(rounds):
            with engine.connect() as conn:
                started = time.perf_counter()
                trace = queries.get_trace(conn, trace_id)
                fetch = min(fetch, time.perf_counter() - started)
            started = time.perf_counter()
            json.dumps(trace)
            dumps = min(dumps, time.perf_counter() - started)
            spans = len(trace["spans"])
    finally:
        engine.dispose()
    return {"spans": spans, "get_trace_ms": round(fetch * 1e3, 1), "json_dumps_ms": round(dumps * 1e3, 1),
            "ratio": round(fetch / dumps, 2)}


def per_span(sizes: dict, spans: int) -> dict:
    """Bytes per span of every table and index (SQLite: the pages in use, not free pages left by the drained
    staging table, which later spans reuse; reported apart as ``file_bytes_per_span``)."""
    live = sum(sizes["relations"].values()) if "free_bytes" in sizes else sizes["total_bytes"]
    staging = sum(v for k, v in sizes["relations"].items() if k in STAGING_RELATIONS)
    return {"bytes_per_span": round(live / spans, 1), "file_bytes_per_span": round(sizes["total_bytes"] / spans, 1),
            # the drained staging area: on PostgreSQL its dead rows keep their pages until VACUUM reuses them
            "staging_bytes_per_span": round(staging / spans, 1),
            "bytes_per_span_without_staging": round((live - staging) / spans, 1),
            "relations_bytes_per_span": {k: round(v / spans, 1) for k, v in sizes["relations"].items() if v}}


def vacuum(database_url: str) -> None:
    """PostgreSQL's plain VACUUM, what autovacuum runs: it marks dead rows free and truncates empty pages at a
    table's end (a drained staging table gives its pages back)."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM")
    finally:
        engine.dispose()


def run(database_url: str, spans: list[dict], big_id: str | None, sizes) -> dict:
    result = build(database_url, spans)
    measured = sizes()
    result.update(per_span(measured, len(spans)))
    result["total_bytes"] = measured["total_bytes"]
    if database_url.startswith("postgresql"):  # the steady state: after the vacuum autovacuum would run
        vacuum(database_url)
        result["after_vacuum"] = per_span(sizes(), len(spans))
    if big_id:
        result["fetch_10k_trace"] = fetch_ratio(database_url, big_id)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans of 10-span traces (plus the big trace)")
    parser.add_argument("--big-trace", type=int, default=BIG_TRACE_SPANS, help="spans of the one big trace; 0: none")
    parser.add_argument("--postgres", action="store_true", help="also measure a PostgreSQL database of its own")
    parser.add_argument("--label", default="current", help="name of this run inside the results file")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "storage.json"))
    parser.add_argument("--demo", action="store_true", help="the demo system's spans (no big trace)")
    parser.add_argument("--demo-questions", type=int, default=100, help="questions asked of the demo")
    parser.add_argument("--record-content", action="store_true", help="demo tracers record prompts/completions")
    args = parser.parse_args(argv)

    if args.demo:
        spans, big_id = demo_spans(args.demo_questions, args.spans, args.record_content), None
        args.big_trace = 0
    else:
        spans, big_id = decoded_spans(args.spans, args.big_trace)
    workdir = Path(tempfile.mkdtemp(prefix="contrail-storage-"))
    run_result: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                                    "sqlite": sqlite3.sqlite_version, "load_average_at_start": os.getloadavg()},
                        "spans": len(spans), "spans_per_trace": round(len(spans) / len({s["trace_id"] for s in spans}), 1),
                        "big_trace_spans": args.big_trace}
    if args.demo:
        run_result["workload"] = {"demo_questions": args.demo_questions, "record_content": args.record_content}
    try:
        path = workdir / "storage.db"
        run_result["sqlite"] = run(f"sqlite:///{path}", spans, big_id, lambda: sqlite_sizes(path))
        if args.postgres:
            from tests.support.servers import create_postgres_database, postgres_unavailable_reason

            reason = postgres_unavailable_reason()
            if reason:
                run_result["postgres"] = {"skipped": reason}
            else:
                url, drop = create_postgres_database("contrail_storage")
                try:
                    run_result["postgres"] = run(url, spans, big_id, lambda: postgres_sizes(url))
                finally:
                    drop()
                run_result["postgres_vs_sqlite_bytes"] = round(
                    run_result["postgres"]["bytes_per_span"] / run_result["sqlite"]["bytes_per_span"], 2)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    for backend in ("sqlite", "postgres"):
        found = run_result.get(backend)
        if not found or "skipped" in found:
            continue
        print(f"{backend}: {found['bytes_per_span']} B/span in tables and indexes (file {found['file_bytes_per_span']} "
              f"B/span, {found['total_bytes']:,} B for {len(spans):,} spans; without the drained staging area "
              f"{found['bytes_per_span_without_staging']} B/span); "
              f"ingest {found['ingest_spans_per_second']:,} spans/s, finalize {found['finalize_spans_per_second']:,}"
              f" spans/s")
        for name, size in sorted(found["relations_bytes_per_span"].items(), key=lambda kv: -kv[1]):
            print(f"    {name:<32} {size:>8} B/span")
        if "after_vacuum" in found:
            v = found["after_vacuum"]
            print(f"    after VACUUM: {v['bytes_per_span']} B/span ({v['staging_bytes_per_span']} B/span staging)")
        if "fetch_10k_trace" in found:
            f = found["fetch_10k_trace"]
            print(f"    get_trace of {f['spans']:,} spans {f['get_trace_ms']} ms, json.dumps {f['json_dumps_ms']} ms,"
                  f" ratio {f['ratio']}")
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[args.label] = run_result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {out} ({args.label})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
