"""Engines for SQLite (embedded default) and PostgreSQL (shared, multi-host)."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import fields
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url

from tracer.private_files import create_private_file, make_private_dir

from ..settings import CollectorSettings

DEFAULT_POOL_SIZE: int = next(f.default for f in fields(CollectorSettings) if f.name == "db_pool_size")


def open_engine(url: str, *, migrate: bool = True, pool_size: int | None = None) -> Engine:
    """Create an engine for ``url`` and bring its schema up to date.

    ``pool_size`` is the PostgreSQL connection pool's size: processes built from
    a settings object pass its ``db_pool_size`` (``CONTRAIL_DB_POOL``); None
    means that setting's default. SQLite ignores it.

    SQLite gets WAL journaling and a busy timeout so the web app can read while
    a collector writes. A database file it creates is 0600 in a 0700 directory
    (SQLite gives its -wal and -shm files the database file's mode): spans can
    hold secrets. An existing file or directory keeps its mode.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:" and not parsed.database.startswith("file:"):
            make_private_dir(Path(parsed.database).parent)
            create_private_file(parsed.database)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA busy_timeout=30000")
            enter_wal(cursor)
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.close()
    else:
        engine = create_engine(url, pool_pre_ping=True, pool_size=pool_size or DEFAULT_POOL_SIZE)
    if migrate:
        from .migrations import migrate as run_migrations

        run_migrations(engine)
    from .periods import install

    install(engine)  # SQLite: attach the period files of sealed days on checkout
    return engine


def enter_wal(cursor: sqlite3.Cursor, wait_s: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection holds a lock on the file.

    Switching a new file to WAL needs it alone, and SQLite answers "database is locked" at once, without
    its busy handler, while another process holds any lock on it: collectors starting together on a new
    database (one of them already migrating it) would otherwise fail to start.
    """
    deadline, delay = time.monotonic() + wait_s, 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"
