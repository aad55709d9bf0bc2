"""Retention benchmark: the time to remove a day of finalized traces, and the space it gives back.

Run ``python bench/bench_retention.py [--spans 1000000] [--real 50000] [--postgres]``.
Stores ``--real`` spans of ``bench_collector.make_entries`` (10-span traces)
dated three days ago, plus a tenth as many dated today, through the real write
path and finalizer (``bench_storage.build``); then copies the old day's
finalized rows (summaries, blocks, postings; new numbers and trace ids in the
same day) until the day holds ``--spans`` spans, since storing a million spans
through the write path takes most of an hour on a small machine and retention
only sees the rows. Then it runs ``run_retention`` with a cutoff of one day ago
and reports its seconds, the rows it removed and the database size before and
after: on PostgreSQL ``pg_database_size`` (the day's
partitions are dropped, their files deleted), on SQLite the file size after a
checkpoint and the pages left free inside it (SQLite deletes the day's rows;
the file keeps its pages for reuse until a VACUUM).

Writes ``bench/results/retention.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_storage import build, decoded_spans  # noqa: E402
from collector_worker.retention import run_retention  # noqa: E402
from collector_worker.storage import open_engine, partitions, schema  # noqa: E402

DAY_NS = 86_400 * 1_000_000_000


def dated(spans: list[dict], days_ago: int) -> list[dict]:
    """The spans moved ``days_ago`` days back."""
    shift = days_ago * DAY_NS
    for span in spans:
        span["start_ns"] -= shift
        span["end_ns"] -= shift
    return spans


def sqlite_size(path: Path) -> dict:
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        return {"file_bytes": page * conn.execute("PRAGMA page_count").fetchone()[0],
                "free_bytes": page * conn.execute("PRAGMA freelist_count").fetchone()[0]}
    finally:
        conn.close()


def postgres_size(url: str) -> dict:
    engine = open_engine(url, migrate=False)
    try:
        with engine.connect() as conn:
            return {"database_bytes": int(conn.exec_driver_sql("SELECT pg_database_size(current_database())")
                                          .scalar_one())}
    finally:
        engine.dispose()


def copy_day(engine, day: int, copies: int) -> None:
    """Add ``copies`` copies of ``day``'s finalized rows to the same day, each with numbers and trace ids of its own."""
    lo, hi = partitions.first_no(day), partitions.first_no(day + 1)
    postgres = engine.dialect.name == "postgresql"
    columns = [c.name for c in schema.traces.columns if c.name not in ("trace_no", "trace_id")]
    for k in range(1, copies + 1):
        shift = k << 24  # sequence numbers below 2**24 stay apart and inside the day
        new_id = (f"substr(trace_id, 1, 24) || lpad(to_hex({k}), 8, '0')" if postgres
                  else f"substr(trace_id, 1, 24) || printf('%08x', {k})")
        with engine.begin() as conn:
            conn.exec_driver_sql(f"INSERT INTO traces (trace_no, trace_id, {', '.join(columns)}) "
                                 f"SELECT trace_no + {shift}, {new_id}, {', '.join(columns)} FROM traces "
                                 f"WHERE trace_no >= {lo} AND trace_no < {hi} AND trace_no < {lo + (1 << 24)}")
            for table in (schema.trace_blocks, schema.trace_operations, schema.trace_tags, schema.trace_tag_numbers):
                cols = [c.name for c in table.columns]
                picked = ", ".join(f"trace_no + {shift}" if c == "trace_no" else c for c in cols)
                conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT {picked} FROM {table.name} "
                                     f"WHERE trace_no >= {lo} AND trace_no < {lo + (1 << 24)}")


def measure(url: str, spans: int, real: int, size) -> dict:
    real = min(real, spans)
    old, _ = decoded_spans(real, 0)
    new, _ = decoded_spans(max(10, real // 10), 0)
    built = build(url, dated(old, 3) + new)
    engine = open_engine(url)
    try:
        day = partitions.day_of(min(s["start_ns"] for s in old))
        copy_day(engine, day, max(0, round(spans / len(old)) - 1))
        with engine.connect() as conn:
            in_day = partitions.count_day(conn, day)["spans"]
    finally:
        engine.dispose()
    before = size()
    engine = open_engine(url)
    try:
        started = time.perf_counter()
        removed = run_retention(engine, time.time_ns() - DAY_NS)
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"spans_in_the_day": in_day, "spans_stored_through_the_write_path": len(old), "spans_kept": len(new),
            "build": built,
            "retention_seconds": round(seconds, 3), "removed": removed, "size_before": before, "size_after": size()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in the day that expires")
    parser.add_argument("--real", type=int, default=50_000, help="of those, spans stored through the write path")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (a database of its own) instead of SQLite")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retention.json"))
    args = parser.parse_args(argv)

    if args.postgres:
        from tests.support.servers import create_postgres_database

        url, drop = create_postgres_database("contrail_retention")
        try:
            result = measure(url, args.spans, args.real, lambda: postgres_size(url))
        finally:
            drop()
        backend = "postgres"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="contrail-retention-"))
        try:
            path = workdir / "retention.db"
            result = measure(f"sqlite:///{path}", args.spans, args.real, lambda: sqlite_size(path))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        backend = "sqlite"
    print(f"{backend}: removed a day of {result['spans_in_the_day']:,} spans in {result['retention_seconds']} s; "
          f"size {result['size_before']} -> {result['size_after']}; rows {result['removed']}")
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[backend] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {out} ({backend})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
