"""How much each Contrail table holds: rows, bytes on disk, oldest and newest trace (doctor, /api/v1/status).

Bytes: PostgreSQL sums ``pg_total_relation_size`` over a table's partitions (indexes and TOAST
included); SQLite reads the ``dbstat`` table (table and its indexes) of the main file and of every
attached period file (storage/periods.py) when SQLite was built with it, else only the files' sizes
(page count times page size) are known. Rows of the finalized tables are the rows readers see, in
whichever part they live. Oldest and newest come from the
``start_ns`` of the tables that have one (traces, staged spans, dropped traces).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from . import periods, schema
from .engine import is_postgres

TABLES = tuple(t for t in schema.metadata.sorted_tables if t is not schema.schema_version)  # of both backends
FINALIZED = {"traces", "trace_blocks", "trace_operations", "trace_tags", "trace_tag_numbers", "trace_search_keys"}


def _sqlite_bytes(conn: Connection) -> dict[str, int] | None:
    """Bytes per table (its indexes included) from ``dbstat``, summed over the main file and the attached
    period files, or None when SQLite lacks it."""
    out: dict[str, int] = {}
    for part in periods.parts(conn):
        schema_name = part.schema or "main"
        try:
            rows = conn.exec_driver_sql(
                f"SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat(?) AS d JOIN {schema_name}.sqlite_master AS m "
                f"ON m.name = d.name GROUP BY m.tbl_name", (schema_name,)).all()
        except DBAPIError:  # no such table: dbstat (SQLite built without SQLITE_ENABLE_DBSTAT_VTAB)
            return None
        for name, size in rows:
            out[name] = out.get(name, 0) + int(size)
    return out


def row_count(conn: Connection, table) -> int:
    """Rows of ``table``; a finalized-trace table counted across its day partitions and period files."""
    if table.name not in FINALIZED:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
    every = periods.union(conn, table, lambda t: [t.c.trace_no]).subquery()
    return int(conn.execute(select(func.count()).select_from(every)).scalar_one())


def _extent(conn: Connection, table) -> tuple[Any, Any]:
    if table.name != "traces":
        return conn.execute(select(func.min(table.c.start_ns), func.max(table.c.start_ns))).one()
    every = periods.union(conn, table, lambda t: [func.min(t.c.start_ns).label("lo"),
                                                  func.max(t.c.start_ns).label("hi")]).subquery()
    return conn.execute(select(func.min(every.c.lo), func.max(every.c.hi))).one()


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
    present = set(schema.tables_of(conn.dialect.name))
    for table in (t for t in TABLES if t in present):
        row: dict[str, Any] = {"name": table.name, "rows": row_count(conn, table)}
        if postgres:
            row["bytes"] = _postgres_bytes(conn, table.name)
        else:
            row["bytes"] = per_table.get(table.name, 0) if per_table is not None else None
        oldest = newest = None
        if "start_ns" in table.c:
            oldest, newest = _extent(conn, table)
        row["oldest_ns"] = None if oldest is None else int(oldest)
        row["newest_ns"] = None if newest is None else int(newest)
        tables.append(row)
    if postgres:
        total, source = sum(t["bytes"] for t in tables), "pg_total_relation_size"
    elif per_table is not None:
        total, source = sum(t["bytes"] for t in tables), "dbstat"
    else:
        total, source = 0, "page_count"
        for part in periods.parts(conn):
            name = part.schema or "main"
            total += int(conn.exec_driver_sql(f"PRAGMA {name}.page_count").scalar_one()) * \
                int(conn.exec_driver_sql(f"PRAGMA {name}.page_size").scalar_one())
    return {"tables": tables, "total_bytes": total, "bytes_source": source}
