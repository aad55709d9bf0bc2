"""Small pieces of hand-written SQL shared by the storage modules that bypass the expression layer.

Hot paths (staging, finalization, leases, blocks) write their statements as
text, identical on SQLite and PostgreSQL but for the driver's parameter mark.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy.engine import Connection


def mark(conn: Connection) -> str:
    """The driver's parameter mark: ``?`` (sqlite3) or ``%s`` (psycopg)."""
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def in_list(conn: Connection, n: int) -> str:
    """``(?,?,…)`` with ``n`` marks, for ``IN`` lists."""
    return "(" + ",".join([mark(conn)] * n) + ")"


def chunks(items: list, size: int) -> Iterable[list]:
    """``items`` in slices of ``size`` (statements stay under the drivers' parameter limits)."""
    for i in range(0, len(items), size):
        yield items[i:i + size]
