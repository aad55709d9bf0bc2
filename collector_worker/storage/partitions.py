"""Day partitions of the finalized traces: trace numbers that carry their day, partitions made and dropped.

A trace number is ``day << 40 | sequence``: the UTC day of the trace's start
and a number drawn once from a database-wide sequence (so a number is never
reused). Everything keyed by trace number (``traces``, ``trace_blocks`` and
the search postings) therefore sorts, and partitions, by day.

On PostgreSQL those five tables are partitioned by RANGE (trace_no), one
partition per day: retention drops a day with ``DROP TABLE``, which takes
milliseconds and hands the files back to the filesystem. Partitions are made
ahead (:func:`prepare_days`, from yesterday to two days on; the collector calls
it on start and on every retention pass) and on demand for a trace of another
day (:func:`ensure_days`, in the finalizer's write transaction).

On SQLite the finalizer writes into plain tables of the main database file;
once a day has ended it is sealed into a period file of its own, which
retention drops by deleting the file (periods.py). A day not sealed yet is
deleted from the main file by trace-number range (:func:`delete_day`): its rows
share the main file's pages with other days, so there is no whole to drop
(docs/operations.md, "Retention", says why it is not sealed first either).
"""

from __future__ import annotations

import datetime
from typing import Iterable

from sqlalchemy.engine import Connection

from . import periods, schema

DAY_SHIFT = 40  # a sequence of 2**40 numbers: a trillion traces before it would reach the day bits
DAY_NS = 86_400 * 1_000_000_000
SEQUENCE = "trace_no_seq"  # PostgreSQL sequence; SQLite keeps its counter in the trace_sequence table
PARTITIONED = schema.finalized_tables("postgresql")  # the tables partitioned by day (PostgreSQL)
AHEAD_DAYS = 2  # partitions made ahead of today


def day_of(start_ns: int) -> int:
    """The UTC day number (days since 1970-01-01) of a time in unix nanoseconds."""
    return int(start_ns) // DAY_NS


def first_no(day: int) -> int:
    """The smallest trace number of ``day``; the day's numbers are ``[first_no(day), first_no(day + 1))``."""
    return int(day) << DAY_SHIFT


def day_of_no(trace_no: int) -> int:
    return int(trace_no) >> DAY_SHIFT


def partition_name(table: str, day: int) -> str:
    """``traces_20260115``: the table's partition for ``day``."""
    return f"{table}_{(datetime.date(1970, 1, 1) + datetime.timedelta(days=int(day))).strftime('%Y%m%d')}"


def _is_postgres(conn: Connection) -> bool:
    return conn.dialect.name == "postgresql"


def allocate(conn: Connection, start_times: list[int]) -> list[int]:
    """New trace numbers for traces starting at ``start_times``, inside the caller's write transaction."""
    n = len(start_times)
    if not n:
        return []
    if _is_postgres(conn):
        sequence = [int(r[0]) for r in conn.exec_driver_sql(
            f"SELECT nextval('{SEQUENCE}') FROM generate_series(1, %s)", (n,))]
    else:  # the write transaction holds SQLite's write lock: nobody else draws meanwhile
        last = int(conn.exec_driver_sql("UPDATE trace_sequence SET last = last + ? RETURNING last",
                                        (n,)).scalar_one())
        sequence = list(range(last - n + 1, last + 1))
    return [first_no(day_of(start)) | seq for start, seq in zip(start_times, sequence)]


def _existing(conn: Connection) -> set[int]:
    """Days that have a ``traces`` partition (PostgreSQL)."""
    rows = conn.exec_driver_sql(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'traces'::regclass")
    prefix = len(schema.traces.name) + 1
    days = set()
    for (name,) in rows:
        date = datetime.datetime.strptime(name[prefix:], "%Y%m%d").date()
        days.add((date - datetime.date(1970, 1, 1)).days)
    return days


def create_day(conn: Connection, day: int) -> None:
    """The partitions of ``day`` in every partitioned table (PostgreSQL), if missing."""
    lo, hi = first_no(day), first_no(day + 1)
    for table in PARTITIONED:
        conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {partition_name(table.name, day)} "
                             f"PARTITION OF {table.name} FOR VALUES FROM ({lo}) TO ({hi})")


def ensure_days(conn: Connection, days: Iterable[int]) -> None:
    """Make sure ``days`` have partitions before rows of theirs are inserted (no-op on SQLite)."""
    if not _is_postgres(conn):
        return
    wanted = set(days)
    if not wanted:
        return
    for day in sorted(wanted - _existing(conn)):
        create_day(conn, day)


def prepare_days(conn: Connection, now_ns: int) -> None:
    """Partitions from yesterday to :data:`AHEAD_DAYS` after today, so finalizers rarely make one."""
    today = day_of(now_ns)
    ensure_days(conn, range(today - 1, today + AHEAD_DAYS + 1))


def stored_days(conn: Connection) -> list[int]:
    """Days holding finalized traces (PostgreSQL: days with partitions, empty ones included)."""
    if _is_postgres(conn):
        return sorted(_existing(conn))
    found = []
    no = conn.exec_driver_sql("SELECT min(trace_no) FROM traces").scalar()
    while no is not None:
        day = day_of_no(no)
        found.append(day)
        no = conn.exec_driver_sql("SELECT min(trace_no) FROM traces WHERE trace_no >= ?",
                                  (first_no(day + 1),)).scalar()
    return found


def _not_sealed(conn: Connection) -> str:
    """SQL (SQLite): a main-file row no period file publishes (copies awaiting their purge are left out)."""
    if _is_postgres(conn) or not periods.published(conn) and not _sealed_ever(conn):
        return ""
    return (f" AND NOT (trace_no < ((SELECT sealed_through FROM {periods.LAYOUT} WHERE id = 1) + 1) << {DAY_SHIFT} "
            f"AND (trace_no & {periods.SEQ_MASK}) <= (SELECT sealed_seq FROM {periods.LAYOUT} WHERE id = 1))")


def _sealed_ever(conn: Connection) -> bool:
    try:
        return int(conn.exec_driver_sql(f"SELECT sealed_through FROM {periods.LAYOUT} WHERE id = 1").scalar()) >= 0
    except Exception:  # before the migration that made the table
        conn.rollback()
        return False


def count_day(conn: Connection, day: int) -> dict[str, int]:
    """Traces, blocks and spans (the traces' span counts) stored for ``day`` in the main tables (on SQLite,
    those not published from a period file)."""
    lo, hi = first_no(day), first_no(day + 1)
    m = "%s" if _is_postgres(conn) else "?"
    visible = _not_sealed(conn)
    traces, spans = conn.exec_driver_sql(
        f"SELECT count(*), coalesce(sum(span_count), 0) FROM traces WHERE trace_no >= {m} AND trace_no < {m}"
        f"{visible}", (lo, hi)).one()
    blocks = conn.exec_driver_sql(f"SELECT count(*) FROM trace_blocks WHERE trace_no >= {m} AND trace_no < {m}"
                                  f"{visible}", (lo, hi)).scalar_one()
    return {"traces": int(traces), "trace_blocks": int(blocks), "spans": int(spans)}


def _staged_spans_deleted(conn: Connection, delete_returning_span_count: str, params: tuple = ()) -> int:
    """Run a DELETE of staging rows that returns their ``span_count``; the spans deleted (a row holds a
    trace's spans of one batch, so its late spans are counted as the spans they are, not as one row)."""
    return sum(int(n) for (n,) in conn.exec_driver_sql(delete_returning_span_count, params))


def delete_day(conn: Connection, day: int) -> dict[str, int]:
    """Delete every finalized trace of ``day`` (with the staging rows of those traces); rows per table.

    PostgreSQL drops the day's partitions; SQLite deletes the day's trace-number range from the main file
    (a day sealed into a period file goes with its file: :func:`periods.drop_period`).
    """
    counted = count_day(conn, day)
    lo, hi = first_no(day), first_no(day + 1)
    if _is_postgres(conn):
        part = partition_name(schema.traces.name, day)
        counted["spans"] += _staged_spans_deleted(
            conn, f"DELETE FROM spans s USING {part} t WHERE s.trace_id = t.trace_id RETURNING s.span_count")
        for table in reversed(PARTITIONED):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {partition_name(table.name, day)}")
        return counted
    counted["spans"] += _staged_spans_deleted(
        conn, "DELETE FROM spans WHERE trace_id IN (SELECT trace_id FROM traces WHERE trace_no >= ? AND trace_no < ?) "
              "RETURNING span_count", (lo, hi))
    for table in reversed(schema.finalized_tables("sqlite")):
        conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE trace_no >= ? AND trace_no < ?", (lo, hi))
    return counted


def expired_days(conn: Connection, cutoff_ns: int) -> list[int]:
    """Stored days that ended at or before ``cutoff_ns``: retention removes a day only whole."""
    last = day_of(cutoff_ns) - 1  # the cutoff's own day still has time after the cutoff
    return [day for day in stored_days(conn) if day <= last]


__all__ = ["allocate", "day_of", "day_of_no", "delete_day", "ensure_days", "expired_days", "first_no", "prepare_days"]
