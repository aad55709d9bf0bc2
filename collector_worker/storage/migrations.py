"""A small versioned migration runner.

Each migration is a function taking a connection; ``MIGRATIONS[i]`` brings the
schema from version ``i`` to ``i + 1``. The runner takes a lock where the
backend has one, so several collectors starting at once migrate exactly once.
"""

from __future__ import annotations

import time
from typing import Callable

from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine

from . import schema


def _initial(conn: Connection) -> None:
    schema.metadata.create_all(conn)


def _dropped_traces(conn: Connection) -> None:
    """Version 2: tombstones of traces dropped by tail sampling."""
    schema.dropped_traces.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [_initial, _dropped_traces]
LATEST = len(MIGRATIONS)


def current_version(conn: Connection) -> int:
    if not conn.dialect.has_table(conn, schema.schema_version.name):
        return 0
    row = conn.execute(select(schema.schema_version.c.version).where(schema.schema_version.c.id == 1)).first()
    return int(row[0]) if row else 0


def migrate(engine: Engine) -> int:
    """Apply pending migrations; return the version the database is at.

    Collectors starting at the same moment must not both create the schema:
    PostgreSQL takes an advisory lock, SQLite a write lock (``BEGIN IMMEDIATE``)
    before the version is read, so the second starter waits and finds it current.
    """
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(742017)"))
        elif engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            _apply(conn)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
    return LATEST


def _apply(conn: Connection) -> None:
    version = current_version(conn)
    if version > LATEST:
        raise RuntimeError(
            f"database schema version {version} is newer than this Contrail ({LATEST}); upgrade Contrail"
        )
    for step in range(version, LATEST):
        MIGRATIONS[step](conn)
    if version != LATEST:
        now = time.time_ns()
        if version == 0:
            conn.execute(schema.schema_version.insert().values(id=1, version=LATEST, migrated_ns=now))
        else:
            conn.execute(schema.schema_version.update().where(schema.schema_version.c.id == 1)
                         .values(version=LATEST, migrated_ns=now))
