"""Delete all stored trace data at once (``contrail cleanup --all``), keeping the schema.

Names and block dictionaries stay: they hold no trace data, ids in them never change, and running
processes cache them. Each table is emptied in a transaction of its own, so the progress shown is
real and a failure leaves the tables already emptied empty and the rest whole. On SQLite the period
files of sealed days (storage/periods.py) go first, each unpublished and deleted whole.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from . import periods, schema
from .engine import is_postgres
from .usage import row_count

# Postings and blocks before the traces they belong to; every table that holds trace data (a backend has
# either trace_operations and trace_tags or trace_search_keys: wiped_tables()).
WIPED_TABLES = (
    schema.trace_operations, schema.trace_tags, schema.trace_search_keys, schema.trace_tag_numbers,
    schema.trace_blocks, schema.traces, schema.spans, schema.pending_traces, schema.dropped_traces,
    schema.stats, schema.stats_histogram, schema.dependencies, schema.llm_usage,
    schema.metric_points, schema.metric_histogram, schema.metric_entries, schema.profiles,
)


def wiped_tables(engine) -> tuple:
    """:data:`WIPED_TABLES` that ``engine``'s backend has."""
    present = set(schema.tables_of(engine.dialect.name))
    return tuple(t for t in WIPED_TABLES if t in present)


def count_all(engine: Engine) -> dict[str, int]:
    """Rows of every table :func:`wipe_all` empties (what ``--dry-run`` prints)."""
    with engine.connect() as conn:
        return {t.name: row_count(conn, t) for t in wiped_tables(engine)}


def wipe_all(engine: Engine, progress: Callable[[int, int, str], None] | None = None) -> dict[str, int]:
    """Empty every table of ``WIPED_TABLES``; returns the rows each held.

    ``progress(done, total, table)`` is called after each table. PostgreSQL truncates (partitions
    included); SQLite deletes.
    """
    counts: dict[str, int] = {}
    with engine.connect() as conn:
        sealed = periods.published(conn)
        sealed_counts = {t.name: row_count(conn, t) - int(conn.execute(select(func.count()).select_from(t)
                                                                       .where(*_not_covered(conn, t))).scalar_one())
                         for t in wiped_tables(engine) if t.name in periods.TABLES} if sealed else {}
    for period in sealed:
        periods.drop_period(engine, period)
    tables = wiped_tables(engine)
    for done, table in enumerate(tables, start=1):
        with engine.begin() as conn:
            counts[table.name] = int(conn.execute(select(func.count()).select_from(table)
                                                  .where(*_not_covered(conn, table))).scalar_one()) \
                + sealed_counts.get(table.name, 0)
            if table.name in periods.TABLES:
                periods.forget_superseded(conn)
            if is_postgres(conn):
                conn.exec_driver_sql(f"TRUNCATE TABLE {table.name}")
            else:
                conn.exec_driver_sql(f"DELETE FROM {table.name}")
        if progress is not None:
            progress(done, len(tables), table.name)
    return counts


def _not_covered(conn, table) -> list:
    """Conditions for the rows of ``table`` readers see in the main tables (all of them off the finalized
    tables and on PostgreSQL)."""
    if table.name not in periods.TABLES:
        return []
    visible = periods.parts(conn)[0].visible(table.c.trace_no)
    return [] if visible is None else [visible]
