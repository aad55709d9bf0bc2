"""How much each Contrail table holds: rows, bytes on disk, oldest and newest trace (doctor, /api/v1/status).

Bytes: PostgreSQL sums ``pg_total_relation_size`` over a table's partitions (indexes and TOAST
included); SQLite reads the ``dbstat`` table (table and its indexes) when SQLite was built with it,
else only the file's size (page count times page size) is known. Oldest and newest come from the
``start_ns`` of the tables that have one (traces, staged spans, dropped traces).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from . import schema
from .engine import is_postgres

TABLES = tuple(t for t in schema.metadata.sorted_tables if t is not schema.schema_version)


def _sqlite_bytes(conn: Connection) -> dict[str, int] | None:
    """Bytes per table (its indexes included) from ``dbstat``, or None when SQLite lacks it."""
    try:
        rows = conn.exec_driver_sql(
            "SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat AS d JOIN sqlite_master AS m ON m.name = d.name "
            "GROUP BY m.tbl_name").all()
    except DBAPIError:  # no such table: dbstat (SQLite built without SQLITE_ENABLE_DBSTAT_VTAB)
        return None
    return {name: int(size) for name, size in rows}


def _postgres_bytes(conn: Connection, table: str) -> int:
    """The table's size plus its (day) partitions' sizes; a partitioned parent holds nothing itself."""
    return int(conn.exec_driver_sql(
        "SELECT pg_total_relation_size(%(t)s::regclass) + COALESCE((SELECT SUM(pg_total_relation_size(inhrelid)) "
        "FROM pg_inherits WHERE inhparent = %(t)s::regclass), 0)", {"t": table}).scalar_one())


def storage_usage(conn: Connection) -> dict[str, Any]:
    """``{"tables": [{name, rows, bytes, oldest_ns, newest_ns}], "total_bytes", "bytes_source"}``.

    ``bytes`` is None per table when only the file's size is known (SQLite without dbstat).
    """
    postgres = is_postgres(conn)
    per_table = None if postgres else _sqlite_bytes(conn)
    tables = []
    for table in TABLES:
        row: dict[str, Any] = {"name": table.name,
                               "rows": int(conn.execute(select(func.count()).select_from(table)).scalar_one())}
        if postgres:
            row["bytes"] = _postgres_bytes(conn, table.name)
        else:
            row["bytes"] = per_table.get(table.name, 0) if per_table is not None else None
        oldest = newest = None
        if "start_ns" in table.c:
            oldest, newest = conn.execute(select(func.min(table.c.start_ns), func.max(table.c.start_ns))).one()
        row["oldest_ns"] = None if oldest is None else int(oldest)
        row["newest_ns"] = None if newest is None else int(newest)
        tables.append(row)
    if postgres:
        total, source = sum(t["bytes"] for t in tables), "pg_total_relation_size"
    elif per_table is not None:
        total, source = sum(t["bytes"] for t in tables), "dbstat"
    else:
        pages = int(conn.exec_driver_sql("PRAGMA page_count").scalar_one())
        total, source = pages * int(conn.exec_driver_sql("PRAGMA page_size").scalar_one()), "page_count"
    return {"tables": tables, "total_bytes": total, "bytes_source": source}
