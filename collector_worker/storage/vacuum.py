"""Give the drained staging area's space back on PostgreSQL: a plain VACUUM of ``spans`` and ``pending_traces``.

The finalizer deletes a trace's staging rows once they are in its block, so after a burst those tables are
mostly dead tuples until autovacuum comes by (hundreds of bytes per span: docs/performance.md, Storage).
A plain ``VACUUM`` marks them reusable and truncates the empty pages at the end of the table, which hands
them back to the filesystem; it takes no lock that stops ingest or finalization. Retention runs it every
pass. SQLite reuses the freed pages of its single file by itself.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine

from . import schema

STAGING_TABLES = (schema.spans, schema.pending_traces)


def vacuum_staging(engine: Engine) -> None:
    """``VACUUM`` the staging tables (PostgreSQL; nothing on SQLite). VACUUM cannot run in a transaction."""
    if engine.dialect.name != "postgresql":
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in STAGING_TABLES:
            conn.exec_driver_sql(f"VACUUM {table.name}")
