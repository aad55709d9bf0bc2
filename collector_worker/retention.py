"""Retention: delete data older than a cutoff, finalized traces by whole days, the rest in bounded batches.

Finalized traces go first, a UTC day at a time once the whole day ended before
the cutoff (storage/partitions.py: PostgreSQL drops the day's partitions, SQLite
deletes its trace-number range; never trace by trace), so a trace is kept up to
one day longer than the retention period. Then staging spans and pending rows
of traces never finalized, then statistics and metrics buckets that ended
before the cutoff (and the record of metric stream entries stored before it), and
profiles that started before it,
in batches that are each a short transaction so ingest and finalization, which
write the same tables, never wait long behind a cleanup.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from sqlalchemy import delete, func, literal_column, select, union_all
from sqlalchemy.engine import Connection, Engine

from .storage import partitions, periods, schema, staging, vacuum

Progress = Callable[[int, int], None]


def _bucket_tables() -> list[tuple[Any, str]]:
    return [(schema.stats, "resolution"), (schema.stats_histogram, "resolution"),
            (schema.dependencies, "resolution"), (schema.llm_usage, "resolution"),
            (schema.metric_points, "resolution"), (schema.metric_histogram, "resolution")]


def _row_id(conn: Connection):
    return literal_column("ctid" if conn.dialect.name == "postgresql" else "rowid")


def _delete_some(conn: Connection, table, condition, limit: int) -> int:
    """Delete at most ``limit`` rows matching ``condition`` by physical row id (rowid / ctid)."""
    rid = _row_id(conn)
    batch = select(rid).select_from(table).where(condition).limit(limit).scalar_subquery()
    if conn.dialect.name == "postgresql":
        stmt = delete(table).where(rid == func.any(func.array(batch)))  # a TID scan, not a table scan
    else:
        stmt = delete(table).where(rid.in_(batch))
    return conn.execute(stmt).rowcount or 0


def _expired(traces, cutoff_ns: int):
    """Finalized traces retention removes at ``cutoff_ns``: those of the days that ended before it."""
    return traces.c.trace_no < partitions.first_no(partitions.day_of(cutoff_ns))


def _measure(table):
    """What counts in ``table``: rows, except staging, where a row holds a trace's spans of one batch."""
    return func.coalesce(func.sum(table.c.span_count), 0) if table is schema.spans else func.count()


def _count(engine: Engine, table, condition) -> int:
    """Rows of ``table`` matching ``condition``; for staging, the spans those rows hold."""
    with engine.connect() as conn:
        return int(conn.execute(select(_measure(table)).select_from(table).where(condition)).scalar_one())


def run_retention(engine: Engine, cutoff_ns: int, batch_size: int = 5000,
                  progress: Progress | None = None) -> dict[str, int]:
    """Delete everything older than ``cutoff_ns``; return rows deleted per table.

    ``progress(done, total)`` is called after every batch; ``total`` is an
    estimate taken up front and grows if more turns up.
    """
    batch_size = max(1, int(batch_size))
    cutoff_s = int(cutoff_ns) // 1_000_000_000
    t, s, p = schema.traces, schema.spans, schema.pending_traces
    deleted = {name: 0 for name in ("traces", "spans", "trace_blocks", "pending_traces",
                                    "dropped_traces", "stats", "stats_histogram", "dependencies", "llm_usage",
                                    "metric_points", "metric_histogram", "metric_entries", "profiles")}

    bucket_conditions = [(table, table.c.bucket + table.c[res] <= cutoff_s) for table, res in _bucket_tables()]
    estimate = (_count(engine, t, _expired(t, cutoff_ns)) + _count(engine, s, s.c.start_ns < cutoff_ns)
                + _count(engine, p, p.c.last_seen_ns < cutoff_ns)
                + sum(_count(engine, table, cond) for table, cond in bucket_conditions))
    state = {"done": 0, "total": estimate}

    def advance(n: int) -> None:
        state["done"] += n
        state["total"] = max(state["total"], state["done"])
        if progress is not None:
            progress(state["done"], state["total"])

    # 1. finalized traces a day at a time, each day whole once it ended before the cutoff (PostgreSQL
    #    drops its partitions, SQLite deletes its trace-number range); days ahead are prepared meanwhile
    now_ns = time.time_ns()
    with engine.begin() as conn:
        partitions.prepare_days(conn, now_ns)
        days = partitions.expired_days(conn, cutoff_ns)
        sealed = periods.expired_periods(conn, cutoff_ns) if periods.published(conn) else []
    for day in days:
        with engine.begin() as conn:
            n = partitions.delete_day(conn, day)
        for name in ("spans", "traces", "trace_blocks"):
            deleted[name] += n[name]
        advance(n["spans"] + n["traces"])
    for period in sealed:  # SQLite: a sealed period goes with its file
        n = periods.drop_period(engine, period)
        for name in ("spans", "traces", "trace_blocks"):
            deleted[name] += n[name]
        advance(n["spans"] + n["traces"])
    # SQLite: days that ended since the last pass are sealed into period files (not counted as deleted)
    periods.seal(engine, now_ns, retention_ns=max(0, now_ns - int(cutoff_ns)), cutoff_ns=cutoff_ns)

    # 2. spans and pending rows of traces never finalized; 3. statistics buckets that ended before the cutoff
    d, m, f = schema.dropped_traces, schema.metric_entries, schema.profiles
    plan = [(s, s.c.start_ns < cutoff_ns), (p, p.c.last_seen_ns < cutoff_ns), (d, d.c.start_ns < cutoff_ns),
            (m, m.c.stored_ns < cutoff_ns), (f, f.c.start_ns < cutoff_ns)] + bucket_conditions
    for table, condition in plan:
        while True:
            with engine.begin() as conn:
                if table is s:  # staging: a row holds a trace's spans of one batch; spans are counted
                    rows, n = staging.delete_older(conn, cutoff_ns, batch_size)
                else:
                    rows = n = _delete_some(conn, table, condition, batch_size)
            deleted[table.name] += n
            if n:
                advance(n)
            if rows < batch_size:
                break
    vacuum.vacuum_staging(engine)  # PostgreSQL: the drained staging rows' pages come back
    if progress is not None and state["done"] == 0:
        progress(0, 0)
    return deleted


def count_expired(engine: Engine, cutoff_ns: int) -> dict[str, int]:
    """Rows per table that ``run_retention(engine, cutoff_ns)`` would delete now, deleting nothing.

    The same conditions as the deletion: spans of expired traces and spans
    older than the cutoff, search rows of expired traces, pending and dropped
    rows, and statistics buckets that ended before the cutoff.
    """
    cutoff_s = int(cutoff_ns) // 1_000_000_000
    s, p, d = schema.spans, schema.pending_traces, schema.dropped_traces
    with engine.connect() as conn:
        expired = _expired_traces(conn, cutoff_ns)
        checks = [(s, (s.c.start_ns < cutoff_ns) | s.c.trace_id.in_(select(expired.c.trace_id))),
                  (p, p.c.last_seen_ns < cutoff_ns), (d, d.c.start_ns < cutoff_ns),
                  (schema.metric_entries, schema.metric_entries.c.stored_ns < cutoff_ns),
                  (schema.profiles, schema.profiles.c.start_ns < cutoff_ns)]
        checks += [(table, table.c.bucket + table.c[res] <= cutoff_s) for table, res in _bucket_tables()]
        counted = {table.name: int(conn.execute(select(_measure(table)).select_from(table).where(condition))
                                   .scalar_one()) for table, condition in checks}
        traces, spans, blocks = conn.execute(select(func.count(), func.coalesce(func.sum(expired.c.span_count), 0),
                                                    func.coalesce(func.sum(expired.c.blocks), 0))).one()
    counted["traces"], counted["trace_blocks"] = int(traces), int(blocks)
    counted["spans"] += int(spans)  # spans in the expired traces' blocks, besides their staging rows
    return counted


def _expired_traces(conn: Connection, cutoff_ns: int):
    """(trace_id, span_count, blocks) of the finalized traces retention removes at ``cutoff_ns``: those of the
    days that ended before it, in the main tables, and (SQLite) every trace of a period file that expired whole."""
    dropped = {p.alias for p in periods.expired_periods(conn, cutoff_ns)} if periods.published(conn) else set()
    arms = []
    for part in periods.parts(conn):
        if part.schema is not None and part.schema not in dropped:
            continue
        t, b = part.table(schema.traces), part.table(schema.trace_blocks)
        where = [_expired(t, cutoff_ns)] if part.schema is None else []
        visible = part.visible(t.c.trace_no)
        if visible is not None:
            where.append(visible)
        has_block = select(func.count()).where(b.c.trace_no == t.c.trace_no).scalar_subquery()
        arms.append(select(t.c.trace_id, t.c.span_count, has_block.label("blocks")).where(*where))
    return (arms[0] if len(arms) == 1 else union_all(*arms)).subquery()


def cutoff_for(retention_s: float, now_ns: int) -> int:
    """The cutoff for keeping ``retention_s`` seconds of data as of ``now_ns``."""
    return int(now_ns - retention_s * 1_000_000_000)


__all__ = ["run_retention", "cutoff_for"]
