"""Retention benchmark: the time to remove a day of finalized traces, and the space it gives back.

Run ``python bench/bench_retention.py [--spans 1000000] [--postgres]``. Stores
``--spans`` spans of ``bench_collector.make_entries`` (10-span traces) dated
three days ago, plus a tenth as many dated today, through the real write path
and finalizer (``bench_storage.build``), then runs ``run_retention`` with a
cutoff of one day ago and reports its seconds, the rows it removed and the
database size before and after: on PostgreSQL ``pg_database_size`` (the day's
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
from collector_worker.storage import open_engine  # noqa: E402

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


def measure(url: str, spans: int, size) -> dict:
    old, _ = decoded_spans(spans, 0)
    new, _ = decoded_spans(max(10, spans // 10), 0)
    built = build(url, dated(old, 3) + new)
    before = size()
    engine = open_engine(url)
    try:
        started = time.perf_counter()
        removed = run_retention(engine, time.time_ns() - DAY_NS)
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"spans_in_the_day": len(old), "spans_kept": len(new), "build": built,
            "retention_seconds": round(seconds, 3), "removed": removed, "size_before": before, "size_after": size()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in the day that expires")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (a database of its own) instead of SQLite")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retention.json"))
    args = parser.parse_args(argv)

    if args.postgres:
        from tests.support.servers import create_postgres_database

        url, drop = create_postgres_database("contrail_retention")
        try:
            result = measure(url, args.spans, lambda: postgres_size(url))
        finally:
            drop()
        backend = "postgres"
    else:
        workdir = Path(tempfile.mkdtemp(prefix="contrail-retention-"))
        try:
            path = workdir / "retention.db"
            result = measure(f"sqlite:///{path}", args.spans, lambda: sqlite_size(path))
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
