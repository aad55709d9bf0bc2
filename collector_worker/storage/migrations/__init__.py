"""Schema migrations with Alembic, run from code: no alembic.ini, the scripts ship in this package.

``migrate(engine)`` brings a database to the newest revision under a lock, so several
collectors starting at once migrate exactly once: PostgreSQL takes an advisory lock,
SQLite a write lock (``BEGIN IMMEDIATE``), before anything is read, and every step runs
in that one transaction. A database written before Alembic (the hand-written runner's
``contrail_schema`` table at version 1 or 2) is adopted: brought to version 2 if needed,
stamped at revision 0001 (which is that schema) and upgraded from there.

Revisions live in ``versions/``; ``new_revision("what it does")`` writes the next one.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

HERE = Path(__file__).resolve().parent
VERSION_TABLE = "contrail_alembic_version"  # a name of our own: the database may hold another app's alembic_version
BASELINE = "0001"  # the schema the hand-written runner left at its version 2
LEGACY_TABLE = "contrail_schema"  # the hand-written runner's version table
LEGACY_LATEST = 2
# Written into contrail_schema once Alembic manages the database: a release from before Alembic reads
# a version newer than its own and refuses to start instead of writing into a schema it does not know.
LEGACY_FENCE = 3
ADVISORY_LOCK_ID = 742017  # the same key the hand-written runner took, so old and new starters exclude each other


class NewerSchemaError(RuntimeError):
    """The database is at a revision this Contrail does not have: a newer release migrated it."""


@dataclass(frozen=True)
class SchemaStatus:
    state: str  # empty | behind | current | newer
    current: str | None  # the database's revision ("v1"/"v2" before Alembic), None when empty
    head: str  # the newest revision this Contrail has


def alembic_config(connection: Connection | None = None) -> Config:
    """The configuration ``alembic.command`` functions take; env.py migrates ``connection``."""
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    return scripts().get_current_head()


def known_revisions() -> set[str]:
    return {script.revision for script in scripts().walk_revisions()}


def schema_status(conn: Connection) -> SchemaStatus:
    """Where the database stands against this Contrail, read without a lock and without changing anything."""
    head = head_revision()
    current = _current_revision(conn)
    if current is not None:
        if current not in known_revisions():
            return SchemaStatus("newer", current, head)
        return SchemaStatus("current" if current == head else "behind", current, head)
    legacy = _legacy_version(conn)
    if legacy is None:
        return SchemaStatus("empty", None, head)
    return SchemaStatus("newer" if legacy > LEGACY_LATEST else "behind", f"v{legacy}", head)


def migrate(engine: Engine) -> str:
    """Bring the database to the newest revision; return it. Raises NewerSchemaError for a newer database."""
    with _locked_connection(engine) as conn:
        status = schema_status(conn)
        if status.state == "newer":
            raise NewerSchemaError(
                f"database schema revision {status.current} is newer than this Contrail ({status.head}); "
                "upgrade Contrail")
        config = alembic_config(conn)
        if status.current in ("v1", "v2"):
            _adopt_legacy(conn, config, int(status.current[1:]))
        command.upgrade(config, "head")
        _fence_legacy_releases(conn)
    return head_revision()


def new_revision(message: str) -> Path:
    """Write ``versions/<next number>_<message>.py`` on top of the head; return its path."""
    number = f"{int(head_revision()) + 1:04d}"
    script = command.revision(alembic_config(), message=message, rev_id=number)
    return Path(script.path)


@contextmanager
def _locked_connection(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the migration lock until it commits."""
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_ID})
        elif engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _current_revision(conn: Connection) -> str | None:
    heads = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_heads()
    return heads[0] if heads else None


def _legacy_version(conn: Connection) -> int | None:
    if not conn.dialect.has_table(conn, LEGACY_TABLE):
        return None
    version = conn.execute(text(f"SELECT version FROM {LEGACY_TABLE} WHERE id = 1")).scalar()
    return int(version) if version is not None else None


def _adopt_legacy(conn: Connection, config: Config, version: int) -> None:
    """A database of the hand-written runner: finish its version 2, then record it as revision 0001."""
    if version == 1:
        baseline = scripts().get_revision(BASELINE).module
        baseline.create_dropped_traces(Operations(MigrationContext.configure(conn)))
    command.stamp(config, BASELINE)


def _fence_legacy_releases(conn: Connection) -> None:
    if not conn.dialect.has_table(conn, LEGACY_TABLE):
        return
    version = _legacy_version(conn)
    if version == LEGACY_FENCE:
        return
    values = {"v": LEGACY_FENCE, "now": time.time_ns()}
    if version is None:
        conn.execute(text(f"INSERT INTO {LEGACY_TABLE} (id, version, migrated_ns) VALUES (1, :v, :now)"), values)
    else:
        conn.execute(text(f"UPDATE {LEGACY_TABLE} SET version = :v, migrated_ns = :now WHERE id = 1"), values)
