"""Delete all stored trace data at once (``contrail cleanup --all``), keeping the schema.

Names and block dictionaries stay: they hold no trace data, ids in them never change, and running
processes cache them. Each table is emptied in a transaction of its own, so the progress shown is
real and a failure leaves the tables already emptied empty and the rest whole.
"""

from __future__ import annotations

from typing import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from . import schema
from .engine import is_postgres

# Postings and blocks before the traces they belong to; every table that holds trace data.
WIPED_TABLES = (
    schema.trace_operations, schema.trace_tags, schema.trace_tag_numbers, schema.trace_blocks, schema.traces,
    schema.spans, schema.pending_traces, schema.dropped_traces,
    schema.stats, schema.stats_histogram, schema.dependencies, schema.llm_usage,
    schema.metric_points, schema.metric_histogram, schema.metric_entries, schema.profiles,
)


def count_all(engine: Engine) -> dict[str, int]:
    """Rows of every table :func:`wipe_all` empties (what ``--dry-run`` prints)."""
    with engine.connect() as conn:
        return {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one()) for t in WIPED_TABLES}


def wipe_all(engine: Engine, progress: Callable[[int, int, str], None] | None = None) -> dict[str, int]:
    """Empty every table of ``WIPED_TABLES``; returns the rows each held.

    ``progress(done, total, table)`` is called after each table. PostgreSQL truncates (partitions
    included); SQLite deletes.
    """
    counts: dict[str, int] = {}
    for done, table in enumerate(WIPED_TABLES, start=1):
        with engine.begin() as conn:
            counts[table.name] = int(conn.execute(select(func.count()).select_from(table)).scalar_one())
            if is_postgres(conn):
                conn.exec_driver_sql(f"TRUNCATE TABLE {table.name}")
            else:
                conn.exec_driver_sql(f"DELETE FROM {table.name}")
        if progress is not None:
            progress(done, len(WIPED_TABLES), table.name)
    return counts
