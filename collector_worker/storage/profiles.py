"""SQL of the ``profiles`` table (schema.profiles): write once per key, read by trace or by operation."""

from __future__ import annotations

from typing import Any, Iterable

from sqlalchemy import select
from sqlalchemy.engine import Connection

from . import schema

COLUMNS = ("trace_id", "span_id", "name", "mode", "service", "operation", "start_ns", "end_ns", "interval_ns",
           "samples", "dropped", "stacks")
SUMMARY = ("trace_id", "span_id", "name", "mode", "service", "operation", "start_ns", "end_ns", "interval_ns",
           "samples", "dropped")


def insert_rows(conn: Connection, rows: list[tuple]) -> int:
    """Insert rows (``COLUMNS`` order) whose key is not stored yet; the number inserted."""
    if not rows:
        return 0
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (f'INSERT INTO "profiles" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in COLUMNS)}) '
           f'VALUES ({", ".join([mark] * len(COLUMNS))}) '
           f'ON CONFLICT ("trace_id", "span_id", "name", "mode") DO NOTHING')
    inserted = 0
    for row in sorted(rows, key=lambda r: r[:4]):  # one key order for concurrent writers
        inserted += conn.exec_driver_sql(sql, row).rowcount or 0
    return inserted


def of_trace(conn: Connection, trace_id: str, span_id: str | None = None) -> list[Any]:
    """The profiles of one trace (of one span of it), with their stacks, earliest first."""
    p = schema.profiles
    query = select(*(p.c[c] for c in COLUMNS)).where(p.c.trace_id == trace_id)
    if span_id is not None:
        query = query.where(p.c.span_id == span_id)
    return conn.execute(query.order_by(p.c.start_ns, p.c.span_id, p.c.name)).all()


def matching(conn: Connection, since_ns: int, until_ns: int, operation: str | None = None,
             service: str | None = None, limit: int = 1000) -> Iterable[Any]:
    """The latest ``limit`` profiles that started in ``[since_ns, until_ns)``, with their stacks."""
    p = schema.profiles
    query = select(*(p.c[c] for c in COLUMNS)).where(p.c.start_ns >= since_ns, p.c.start_ns < until_ns)
    if operation is not None:
        query = query.where(p.c.operation == operation)
    if service is not None:
        query = query.where(p.c.service == service)
    return conn.execute(query.order_by(p.c.start_ns.desc()).limit(limit)).all()


def spans_with_profiles(conn: Connection, trace_id: str) -> list[Any]:
    """span_id, name, mode and samples of each profile of a trace, without stacks."""
    p = schema.profiles
    return conn.execute(select(p.c.span_id, p.c.name, p.c.mode, p.c.samples)
                        .where(p.c.trace_id == trace_id).order_by(p.c.start_ns)).all()
