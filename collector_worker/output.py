"""Terminal output shared by the read commands: rich tables and trees, or JSON for scripts.

Colour and terminal widths only when stdout is a terminal, so piped output is
plain text a script can parse; ``--json`` gives the same data as the API.
Errors go to stderr as one line and exit with status 1;
bad arguments are click usage errors with status 2.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable, Iterable, Sequence

import click

from tracer.settings_base import mask_url
from tracer.units import format_duration_ms, parse_duration

from .settings import CollectorSettings


def console(err: bool = False):
    """A rich Console on the current stdout/stderr; no colour and a wide page when not a terminal."""
    from rich.console import Console

    stream = sys.stderr if err else sys.stdout
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    # Piped output is for scripts: never cut lines to a terminal width that is not there.
    width = None if is_tty else 400
    return Console(file=stream, force_terminal=is_tty, no_color=not is_tty, highlight=False,
                   width=width, soft_wrap=not is_tty)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def fail(message: str) -> "click.ClickException":
    """An operational error: one line on stderr, exit status 1."""
    return click.ClickException(message)


def ms(value: float | None) -> str:
    return "—" if value is None else format_duration_ms(float(value))


def red(value: Any):
    """A table cell shown in red on a terminal (plain text elsewhere)."""
    from rich.text import Text

    return Text(str(value), style="red")


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]],
          right: Sequence[str] = ()) -> None:
    """Print a table; ``right`` names the numeric columns to right-align."""
    from rich.table import Table
    from rich.text import Text

    out = Table(title=title, title_justify="left", header_style="bold", box=None, pad_edge=False)
    for name in columns:
        out.add_column(name, justify="right" if name in right else "left", no_wrap=True)
    count = 0
    for row in rows:
        # Plain Text cells: names from traced services are never read as markup.
        out.add_row(*(cell if isinstance(cell, Text) else Text("" if cell is None else str(cell)) for cell in row))
        count += 1
    target = console()
    if count == 0:
        target.print(f"{title + ': ' if title else ''}nothing found")
        return
    target.print(out)


# --------------------------------------------------------------------------- option parsing


def duration_seconds(ctx, param, value):
    """click callback: ``250ms``, ``1.5s``, ``15m``, ``7d`` → seconds; a bad value is a usage error."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def duration_ms_option(ctx, param, value):
    """Like :func:`duration_seconds` but bare numbers are milliseconds; returns nanoseconds."""
    if value is None:
        return None
    try:
        return int(parse_duration(value, default_unit="ms") * 1e9)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def timestamp_option(ctx, param, value):
    """ISO-8601 (naive means UTC) or unix nanoseconds → unix nanoseconds."""
    if value is None:
        return None
    from datetime import datetime, timezone

    text = value.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter("use ISO-8601 such as 2026-01-31T12:00:00Z, or unix nanoseconds",
                                 ctx=ctx, param=param) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


# --------------------------------------------------------------------------- database access


def database_option(func: Callable) -> Callable:
    """``--database-url`` (default from settings) and ``--json`` for a read command."""

    @click.option("--database-url", envvar="CONTRAIL_DATABASE_URL", default=None,
                  help="SQLAlchemy URL of the trace database [CONTRAIL_DATABASE_URL, default under the data dir].")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON (the API's shapes) instead of text.")
    @functools.wraps(func)
    def wrapper(*args, database_url=None, as_json=False, **kwargs):
        return func(*args, database_url=resolve_database_url(database_url), as_json=as_json, **kwargs)

    return wrapper


def resolve_database_url(given: str | None) -> str:
    if given:
        return given
    try:
        return CollectorSettings.load().resolved_database_url
    except ValueError as exc:
        raise fail(f"bad configuration: {exc}") from None


def missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist (connecting would create an empty one)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        return None if os.path.exists(parsed.database) else parsed.database
    return None


def open_database(url: str):
    """An engine on an existing, reachable database at the current schema, else a one-line error."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from .storage import open_engine
    from .storage.migrations import schema_status

    shown = mask_url(url)
    try:
        make_url(url)
    except ArgumentError:
        raise fail(f"invalid database URL {shown!r}") from None
    missing = missing_sqlite_file(url)
    if missing:
        raise fail(f"no database at {missing}: start the stack (contrail up) or a collector first, "
                   "or pass --database-url")
    try:
        engine = open_engine(url, migrate=False)
        with engine.connect() as conn:
            status = schema_status(conn)
    except ImportError as exc:
        raise fail(f"cannot open database {shown}: driver missing ({exc})") from None
    except ArgumentError as exc:  # an unknown dialect, a bad query option: the URL, not the server
        raise fail(f"invalid database URL {shown!r}: {first_line(exc)} "
                   "(use sqlite:///path or postgresql+psycopg://user@host/db)") from None
    except SQLAlchemyError as exc:
        raise fail(f"cannot reach database {shown}: {first_line(exc)}") from None
    if status.state == "empty":
        raise fail(f"database {shown} has no Contrail schema yet: start a collector first")
    if status.state == "newer":
        raise fail(f"database {shown} is at schema revision {status.current}, newer than this Contrail "
                   f"({status.head}): upgrade Contrail")
    return engine


def first_line(exc: BaseException) -> str:
    """An error as one line (the driver's own message when SQLAlchemy wraps one), for a command's output."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def run_query(url: str, query: Callable[[Any], Any]) -> Any:
    """Open the database, run ``query(conn)``, turn driver errors into one-line messages."""
    from sqlalchemy.exc import SQLAlchemyError

    from .storage.queries import QueryError

    engine = open_database(url)
    try:
        with engine.connect() as conn:
            return query(conn)
    except QueryError as exc:
        raise click.BadParameter(str(exc), param_hint=f"--{exc.parameter.replace('_', '-')}") from None
    except SQLAlchemyError as exc:
        raise fail(f"query failed on {mask_url(url)}: {first_line(exc)}") from None
    finally:
        engine.dispose()
