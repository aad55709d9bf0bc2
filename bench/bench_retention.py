"""Retention benchmark: the time to remove a day of finalized traces, and the space it gives back.

Run ``python bench/bench_retention.py [--spans 1000000] [--real 50000] [--runs 3] [--postgres]``.
Stores ``--real`` spans of ``bench_collector.make_entries`` (10-span traces)
dated three days ago, plus a tenth as many dated today, through the real write
path and finalizer (``bench_storage.build``); then copies the old day's
finalized rows (summaries, blocks, postings; new numbers and trace ids in the
same day) until the day holds ``--spans`` spans, since storing a million spans
through the write path takes most of an hour on a small machine and retention
only sees the rows. Then it runs ``run_retention`` with a cutoff of one day ago
and reports its seconds, the rows it removed and the database size before and
after: on PostgreSQL ``pg_database_size`` (the day's partitions are dropped,
their files deleted).

On SQLite each run measures, on two copies of the same database file:

* the layout: the day is sealed into its period file (``periods.seal``: the
  copy, seconds) and the main file's copies purged ten minutes later (seconds,
  transactions, the longest one: how long ingest can wait behind it); then
  ``run_retention`` deletes the day's file: seconds, and the bytes of every
  Contrail file (main file, WAL, period files) before and after, with the free
  space of the filesystem (``statvfs``) gained;
* the baseline in the same run: the same day deleted from the main file by
  trace-number range, the only way before period files (and still the way for
  a day not sealed yet), whose file keeps its pages (free inside it).

Writes ``bench/results/retention.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
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
from collector_worker.storage import open_engine, partitions, periods, schema  # noqa: E402
from sqlalchemy import event  # noqa: E402

DAY_NS = 86_400 * 1_000_000_000


def dated(spans: list[dict], days_ago: int) -> list[dict]:
    """The spans moved ``days_ago`` days back."""
    shift = days_ago * DAY_NS
    for span in spans:
        span["start_ns"] -= shift
        span["end_ns"] -= shift
    return spans


def sqlite_size(path: Path) -> dict:
    """The main file (after a checkpoint) with its free pages, and every period file beside it."""
    from collector_worker.storage import periods

    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page = conn.execute("PRAGMA page_size").fetchone()[0]
        main = {"file_bytes": page * conn.execute("PRAGMA page_count").fetchone()[0],
                "free_bytes": page * conn.execute("PRAGMA freelist_count").fetchone()[0]}
    finally:
        conn.close()
    directory = periods.periods_dir(str(path))
    files = {p.name: p.stat().st_size for p in sorted(directory.glob("*"))} if directory.is_dir() else {}
    main["period_files_bytes"] = sum(files.values())
    main["all_files_bytes"] = main["file_bytes"] + main["period_files_bytes"]
    main["filesystem_free_bytes"] = _free(path)
    return main


def _free(path: Path) -> int:
    found = os.statvfs(path.parent)
    return found.f_bavail * found.f_frsize


class Transactions:
    """The duration of every writing transaction on an engine, per database file it wrote (the main file's
    longest is how long ingest can wait behind it; a period file's lock blocks nobody)."""

    def __init__(self, engine) -> None:
        self.seconds: dict[str, list[float]] = {}
        self._open: dict[int, tuple[float, set]] = {}
        event.listen(engine, "begin", self._begin)
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._end)
        event.listen(engine, "rollback", self._end)

    def _begin(self, conn) -> None:
        self._open[id(conn)] = (time.perf_counter(), set())

    def _statement(self, conn, _cursor, statement, _params, _context, _many) -> None:
        head = statement.lstrip()[:40].upper()
        if head.startswith(("INSERT", "UPDATE", "DELETE")) and id(conn) in self._open:
            target = statement.split(" SELECT ")[0]  # INSERT ... INTO target (...) SELECT ... FROM main...
            self._open[id(conn)][1].add("period file" if f"{periods.SEALING_PREFIX}." in target else "main file")

    def _end(self, conn) -> None:
        started, wrote = self._open.pop(id(conn), (None, set()))
        for target in wrote:
            self.seconds.setdefault(target, []).append(time.perf_counter() - started)

    def clear(self) -> None:
        self.seconds.clear()

    def summary(self) -> dict:
        return {f"{target} writes": {"transactions": len(found), "longest_ms": round(max(found) * 1000, 1)}
                for target, found in sorted(self.seconds.items())}


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
            for table in schema.finalized_tables(engine.dialect.name)[1:]:
                cols = [c.name for c in table.columns]
                picked = ", ".join(f"trace_no + {shift}" if c == "trace_no" else c for c in cols)
                conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(cols)}) SELECT {picked} FROM {table.name} "
                                     f"WHERE trace_no >= {lo} AND trace_no < {lo + (1 << 24)}")
    with engine.begin() as conn:  # the sequence passes the copies' numbers, as if they had been drawn from it
        mask = (1 << partitions.DAY_SHIFT) - 1
        if postgres:
            conn.exec_driver_sql(f"SELECT setval('{partitions.SEQUENCE}', greatest((SELECT last_value FROM "
                                 f"{partitions.SEQUENCE}), (SELECT max(trace_no & {mask}) FROM traces)))")
        else:
            conn.exec_driver_sql(f"UPDATE trace_sequence SET last = max(last, (SELECT max(trace_no & {mask}) "
                                 f"FROM traces))")


def prepare(url: str, spans: int, real: int) -> dict:
    """The database of a run: ``real`` spans through the write path three days ago (copied up to ``spans``)
    and a tenth as many today."""
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
    return {"day": day, "spans_in_the_day": in_day, "spans_stored_through_the_write_path": len(old),
            "spans_kept": len(new), "build": built}


def retention(url: str, size) -> dict:
    """``run_retention`` with a cutoff of one day ago: seconds, rows removed, sizes before and after."""
    before = size()
    engine = open_engine(url)
    try:
        started = time.perf_counter()
        removed = run_retention(engine, time.time_ns() - DAY_NS)
        seconds = time.perf_counter() - started
    finally:
        engine.dispose()
    return {"retention_seconds": round(seconds, 3), "removed": removed, "size_before": before, "size_after": size()}


def measure_postgres(url: str, spans: int, real: int) -> dict:
    prepared = prepare(url, spans, real)
    return {**prepared, **retention(url, lambda: postgres_size(url))}


def measure_sqlite(workdir: Path, spans: int, real: int) -> dict:
    """The day dropped with period files, and deleted by range (the baseline), on copies of one database."""
    path = workdir / "retention.db"
    prepared = prepare(f"sqlite:///{path}", spans, real)
    sqlite_size(path)  # checkpointed: the copy below is the whole database
    baseline_path = workdir / "baseline.db"
    shutil.copyfile(path, baseline_path)

    url = f"sqlite:///{path}"
    engine = open_engine(url)
    try:
        now = time.time_ns()
        tracked = Transactions(engine)
        started = time.perf_counter()
        sealed = periods.seal(engine, now, 7 * DAY_NS)
        seal_seconds = time.perf_counter() - started
        seal_tx = tracked.summary()
        tracked.clear()
        started = time.perf_counter()
        purged = periods.seal(engine, now + periods.PURGE_DELAY_NS, 7 * DAY_NS)
        purge_seconds = time.perf_counter() - started
        purge_tx = tracked.summary()
    finally:
        engine.dispose()
    layout = {"seal": {"seconds": round(seal_seconds, 3), "traces": sealed["sealed_traces"], **seal_tx},
              "purge": {"seconds": round(purge_seconds, 3), "traces": purged["purged_traces"], **purge_tx},
              **retention(url, lambda: sqlite_size(path))}
    layout["bytes_returned_to_the_filesystem"] = (layout["size_after"]["filesystem_free_bytes"]
                                                  - layout["size_before"]["filesystem_free_bytes"])
    layout["contrail_files_shrank_by_bytes"] = (layout["size_before"]["all_files_bytes"]
                                                - layout["size_after"]["all_files_bytes"])

    engine = open_engine(f"sqlite:///{baseline_path}", migrate=False)
    try:
        before = sqlite_size(baseline_path)
        tracked = Transactions(engine)
        started = time.perf_counter()
        with engine.begin() as conn:
            removed = partitions.delete_day(conn, prepared["day"])
        seconds = time.perf_counter() - started
        baseline = {"delete_seconds": round(seconds, 3), "removed": removed, **tracked.summary(),
                    "size_before": before, "size_after": sqlite_size(baseline_path)}
    finally:
        engine.dispose()
    return {**prepared, "period_files": layout, "baseline_range_delete": baseline}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="spans in the day that expires")
    parser.add_argument("--real", type=int, default=50_000, help="of those, spans stored through the write path")
    parser.add_argument("--runs", type=int, default=3, help="whole measurements, each on a database of its own")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (a database of its own) instead of SQLite")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "retention.json"))
    args = parser.parse_args(argv)

    runs = []
    for run in range(max(1, args.runs)):
        if args.postgres:
            from tests.support.servers import create_postgres_database

            url, drop = create_postgres_database("contrail_retention")
            try:
                result = measure_postgres(url, args.spans, args.real)
            finally:
                drop()
            backend = "postgres"
            print(f"run {run + 1}, postgres: removed a day of {result['spans_in_the_day']:,} spans in "
                  f"{result['retention_seconds']} s; size {result['size_before']} -> {result['size_after']}")
        else:
            workdir = Path(tempfile.mkdtemp(prefix="contrail-retention-"))
            try:
                result = measure_sqlite(workdir, args.spans, args.real)
            finally:
                shutil.rmtree(workdir, ignore_errors=True)
            backend = "sqlite"
            layout, baseline = result["period_files"], result["baseline_range_delete"]
            print(f"run {run + 1}, sqlite, {result['spans_in_the_day']:,} spans in the day: sealed in "
                  f"{layout['seal']['seconds']} s, purged in {layout['purge']['seconds']} s "
                  f"({layout['purge']}); dropped in "
                  f"{layout['retention_seconds']} s, {layout['bytes_returned_to_the_filesystem']:,} bytes back to "
                  f"the filesystem; baseline range delete {baseline['delete_seconds']} s, file "
                  f"{baseline['size_before']['file_bytes']:,} -> {baseline['size_after']['file_bytes']:,} bytes")
        runs.append(result)
    result = {"runs": runs}
    if backend == "sqlite":
        result["summary"] = {
            "drop_seconds": [r["period_files"]["retention_seconds"] for r in runs],
            "bytes_returned_to_the_filesystem": [r["period_files"]["bytes_returned_to_the_filesystem"] for r in runs],
            "seal_seconds": [r["period_files"]["seal"]["seconds"] for r in runs],
            "purge_seconds": [r["period_files"]["purge"]["seconds"] for r in runs],
            "purge_longest_main_file_write_ms": [r["period_files"]["purge"]["main file writes"]["longest_ms"]
                                                 for r in runs],
            "seal_longest_main_file_write_ms": [r["period_files"]["seal"]["main file writes"]["longest_ms"]
                                                for r in runs],
            "baseline_range_delete_seconds": [r["baseline_range_delete"]["delete_seconds"] for r in runs],
            "baseline_file_bytes_after": [r["baseline_range_delete"]["size_after"]["file_bytes"] for r in runs],
        }
    else:
        result["summary"] = {"drop_seconds": [r["retention_seconds"] for r in runs]}
    out = Path(args.out)
    existing = json.loads(out.read_text()) if out.exists() else {}
    existing[backend] = result
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {out} ({backend})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
