"""``contrail db upgrade`` and ``contrail db current``: the schema revision of the trace database.

Collectors and the web app upgrade the schema when they start; these commands let an
operator do it as a separate deploy step (before rolling out, with a backup in hand) and
see where a database stands.
"""

from __future__ import annotations

import click

from tracer.settings_base import mask_url

from .output import database_option, emit_json, fail, first_line, missing_sqlite_file, resolve_database_url

STATE_TEXT = {
    "empty": "no Contrail schema yet (contrail db upgrade creates it)",
    "behind": "older than this Contrail (contrail db upgrade brings it to the head)",
    "current": "current",
    "newer": "newer than this Contrail: upgrade Contrail",
}


@click.group("db")
def db() -> None:
    """The trace database's schema: its revision, and upgrading it."""


@db.command("current")
@database_option
def current(database_url: str, as_json: bool) -> None:
    """Show the database's schema revision and the newest one this Contrail has."""
    from .storage.migrations import schema_status

    missing = missing_sqlite_file(database_url)
    if missing:
        raise fail(f"no database at {missing}: check --database-url / CONTRAIL_DATABASE_URL")
    status = _with_engine(database_url, schema_status)
    if as_json:
        emit_json({"revision": status.current, "head": status.head, "state": status.state})
        return
    click.echo(f"revision {status.current or '-'} (this Contrail: {status.head}): {STATE_TEXT[status.state]}")


@db.command("upgrade")
@click.option("--database-url", envvar="CONTRAIL_DATABASE_URL", default=None,
              help="SQLAlchemy URL of the trace database [CONTRAIL_DATABASE_URL, default under the data dir].")
def upgrade(database_url: str | None) -> None:
    """Create the schema or bring it to the newest revision (under the same lock collectors take)."""
    from .storage.migrations import NewerSchemaError, migrate, schema_status

    url = resolve_database_url(database_url)
    before = _with_engine(url, schema_status)
    try:
        head = _with_engine(url, lambda engine: migrate(engine), connect=False)
    except NewerSchemaError as exc:
        raise fail(str(exc)) from None
    if before.current == head:
        click.echo(f"{mask_url(url)}: already at revision {head}")
    else:
        click.echo(f"{mask_url(url)}: upgraded from revision {before.current or '- (empty)'} to {head}")


def _with_engine(url: str, work, connect: bool = True):
    """Run ``work`` on a connection (or, ``connect=False``, on the engine); database errors become one line."""
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .storage import open_engine

    try:
        engine = open_engine(url, migrate=False)
    except (ArgumentError, ImportError) as exc:
        raise fail(f"cannot open database {mask_url(url)}: {first_line(exc)}") from None
    try:
        if not connect:
            return work(engine)
        with engine.connect() as conn:
            return work(conn)
    except SQLAlchemyError as exc:
        raise fail(f"cannot reach database {mask_url(url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()
