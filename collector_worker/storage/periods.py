"""SQLite's day partitions: finalized traces of closed days sealed into files of their own, dropped whole.

The finalizer writes every finalized trace into the main database file, in the
same transaction as the staging deletes and the statistics, so a trace is
never half written. Once a UTC day has ended (plus :data:`SEAL_GRACE_NS`), a
retention pass *seals* it: the day's rows of the five finalized tables are
copied into a *period file* beside the database (``contrail.db.periods/
20261201.db``, one or a few days, see :func:`period_length`) and published by
a *watermark* ``(sealed_through, sealed_seq)`` in ``sealed_layout``: a row of a
day up to ``sealed_through`` with a sequence number up to ``sealed_seq`` is read
from its period file, every other row from the main file. The copied rows are
deleted from the main file a while later (:data:`PURGE_DELAY_NS`, so a reader
that attached before the seal still finds them), in small transactions; their
pages are reused by new traces, so the main file stays at about a day or two.
Retention then drops an expired period by unlinking its file: the space goes
back to the filesystem at once, whatever the day held.

A late span re-finalizes a sealed trace into the main file (a new number,
above the watermark) and records the old number in ``superseded_traces``,
which hides the copy in the period file until a seal pass deletes it there.
Every write to a period file (copying, deleting superseded copies) comes before
the main-file transaction that publishes it and is idempotent, so a crash at any
point leaves either the old or the new layout visible, never a mix. One sealer
at a time holds a lease in ``sealed_layout``.

Each pooled connection attaches the published period files whenever a Connection
is opened on it (:func:`on_checkout`, at most :func:`max_attached`); readers build one
query arm per part (:func:`parts`), each with the visibility condition of its
part (trace search builds its arms once per filter shape and layout:
``queries._search_statements``).
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import MetaData, Table, and_, or_, select, union_all
from sqlalchemy.engine import Connection, Engine

from . import schema

log = logging.getLogger(__name__)

DAY_SHIFT = 40
SEQ_MASK = (1 << DAY_SHIFT) - 1
DAY_NS = 86_400 * 1_000_000_000
SEAL_GRACE_NS = 3600 * 1_000_000_000  # a day is sealed an hour after it ended: most late spans are in by then
PURGE_DELAY_NS = 600 * 1_000_000_000  # copied rows stay in the main file this long after the seal
LEASE_NS = 3600 * 1_000_000_000
PURGE_CHUNK = 1000  # traces (or postings) deleted from the main file per transaction
LAYOUT = "sealed_layout"
PERIODS = "sealed_periods"
SUPERSEDED = "superseded_traces"
TABLES = ("traces", "trace_blocks", "trace_operations", "trace_tags", "trace_tag_numbers")
_SEALING = "contrail_sealing"  # the alias a period file is attached under while it is written
SEALING_PREFIX = _SEALING
_INFO_KEY = "contrail_periods"


@dataclass(frozen=True)
class Layout:
    """What a connection sees: the watermark and the period files attached under ``alias``."""

    version: int
    sealed_through: int  # the last sealed day, -1 before the first seal
    sealed_seq: int
    periods: tuple["Period", ...]


@dataclass(frozen=True)
class Period:
    first_day: int
    last_day: int
    file: str  # the file's name inside the periods directory

    @property
    def alias(self) -> str:
        return f"p{self.first_day}"


EMPTY = Layout(version=-1, sealed_through=-1, sealed_seq=0, periods=())
POSTGRES = Layout(version=-2, sealed_through=-1, sealed_seq=0, periods=())


# --------------------------------------------------------------------------- where period files live


def periods_dir(database: str | None) -> Path | None:
    """The directory of a database file's period files; None for in-memory and URI databases (no sealing)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve().with_name(Path(database).name + ".periods")


def _dir_of(engine_or_conn: Any) -> Path | None:
    engine = getattr(engine_or_conn, "engine", engine_or_conn)
    if engine.dialect.name != "sqlite":
        return None
    return periods_dir(engine.url.database)


def file_name(first_day: int) -> str:
    import datetime

    return (datetime.date(1970, 1, 1) + datetime.timedelta(days=int(first_day))).strftime("%Y%m%d") + ".db"


def max_attached(dbapi_connection: sqlite3.Connection) -> int:
    """Period files one connection attaches at most: SQLite's attach limit less one for the sealer's file."""
    return max(1, dbapi_connection.getlimit(sqlite3.SQLITE_LIMIT_ATTACHED) - 1)


def period_length(retention_ns: int, limit: int = 9) -> int:
    """Days per period file so that a retention's files (plus the day being sealed) stay within ``limit``.

    A week's retention keeps a file per day; longer ones group days (14 days: 2 per file), and a period
    is dropped when its last day expires.
    """
    days = max(1, math.ceil(retention_ns / DAY_NS))
    return max(1, math.ceil((days + 1) / max(1, limit - 1)))


# --------------------------------------------------------------------------- reading the layout


def _read_layout(cursor: sqlite3.Cursor) -> tuple[int, int, int]:
    row = cursor.execute(f"SELECT version, sealed_through, sealed_seq FROM {LAYOUT} WHERE id = 1").fetchone()
    return (int(row[0]), int(row[1]), int(row[2])) if row else (-1, -1, 0)


def _read_periods(cursor: sqlite3.Cursor) -> tuple[Period, ...]:
    return tuple(Period(int(a), int(b), f) for a, b, f in cursor.execute(
        f"SELECT first_day, last_day, file FROM {PERIODS} ORDER BY first_day").fetchall())


def on_checkout(directory: Path) -> Callable:
    """A listener for each new Connection attaching the published period files (re-read when the layout
    changed since this DBAPI connection last looked)."""

    def checkout(conn: Connection) -> None:
        dbapi_connection, record = conn.connection.dbapi_connection, conn.connection
        cursor = dbapi_connection.cursor()
        try:
            try:
                version, through, seq = _read_layout(cursor)
            except sqlite3.OperationalError:  # not migrated yet
                return
            held: Layout = record.info.get(_INFO_KEY, EMPTY)
            if held.version == version:
                return
            periods = _read_periods(cursor)[-max_attached(dbapi_connection):]
            if dbapi_connection.in_transaction:
                return  # never the case on checkout; attaching would fail
            attached = {row[1] for row in cursor.execute("PRAGMA database_list")}
            for period in held.periods:
                if period not in periods and period.alias in attached:
                    cursor.execute(f"DETACH DATABASE {period.alias}")
            usable = []
            for period in periods:
                path = directory / period.file
                if period.alias not in attached or period not in held.periods:
                    if not path.exists():  # dropped meanwhile: ATTACH would create an empty file
                        continue
                    if period.alias in attached:
                        cursor.execute(f"DETACH DATABASE {period.alias}")
                    cursor.execute(f"ATTACH DATABASE ? AS {period.alias}", (str(path),))
                usable.append(period)
            record.info[_INFO_KEY] = Layout(version, through, seq, tuple(usable))
        finally:
            cursor.close()

    return checkout


def install(engine: Engine) -> None:
    """Attach period files whenever a Connection of ``engine`` is opened (file-backed SQLite only).

    On ``engine_connect`` rather than the pool's ``checkout``: other parts add checkout listeners while
    threads already check connections out, which the pool's listener list does not survive.
    """
    from sqlalchemy import event

    directory = periods_dir(engine.url.database) if engine.dialect.name == "sqlite" else None
    if directory is not None:
        event.listen(engine, "engine_connect", on_checkout(directory))


def layout_of(conn: Connection) -> Layout:
    """The layout ``conn`` attached at checkout (:data:`EMPTY` when nothing was ever sealed)."""
    try:
        return conn.connection.info.get(_INFO_KEY, EMPTY)
    except AttributeError:
        return EMPTY


# --------------------------------------------------------------------------- parts for readers


@dataclass(frozen=True)
class Part:
    """One place finalized rows live: the main tables or a period file, with its visibility condition."""

    schema: str | None
    first_day: int | None  # days the part can hold; None: any
    last_day: int | None
    layout: Layout

    def visible(self, trace_no) -> Any:
        """The condition on a ``trace_no`` column under which this part's row is the one readers see."""
        through, seq = self.layout.sealed_through, self.layout.sealed_seq
        if through < 0:
            return None
        key = (self.schema, through, seq, trace_no)
        found = _visible_cache.get(key)
        if found is None:
            if len(_visible_cache) > 4096:
                _visible_cache.clear()
            found = _visible_cache[key] = self._visible(trace_no, through, seq)
        return found

    def _visible(self, trace_no, through: int, seq: int) -> Any:
        sealed_below = (through + 1) << DAY_SHIFT
        if self.schema is None:
            return or_(trace_no >= sealed_below, trace_no.op("&")(SEQ_MASK) > seq)
        superseded = select(_superseded.c.trace_no).scalar_subquery()
        # "+ 0": a bound on the rowid that every row meets would make SQLite scan by rowid and sort the whole
        # file for an ORDER BY start_ns, instead of walking the start-time index and stopping at the page's end
        return and_((trace_no + 0) < sealed_below, trace_no.op("&")(SEQ_MASK) <= seq, trace_no.not_in(superseded))

    def table(self, table: Table) -> Table:
        return _table_in(table, self.schema)

    @property
    def postgres(self) -> bool:
        """PostgreSQL's one part: its search postings are arrays (``trace_search_keys``)."""
        return self.layout is POSTGRES

    def holds_days(self, first_day: int | None, last_day: int | None) -> bool:
        """Whether rows of a day in ``[first_day, last_day]`` (None: open) can be here."""
        if self.first_day is None:
            return True
        return (first_day is None or self.last_day >= first_day) and (last_day is None or self.first_day <= last_day)


_visible_cache: dict[tuple, Any] = {}  # conditions are immutable: built once per part, watermark and column
_superseded = Table(SUPERSEDED, MetaData(), schema.Column("trace_no", schema.BigInteger, primary_key=True),
                    schema="main")
_tables: dict[tuple[str, str | None], Table] = {}
_metadata_by_schema: dict[str, MetaData] = {}


def _table_in(table: Table, schema_name: str | None) -> Table:
    if schema_name is None:
        return table
    key = (table.name, schema_name)
    found = _tables.get(key)
    if found is None:
        metadata = _metadata_by_schema.setdefault(schema_name, MetaData())
        found = _tables[key] = table.to_metadata(metadata, schema=schema_name)
    return found


def parts(conn: Connection) -> list[Part]:
    """The main tables and the attached period files of ``conn`` (just the tables on PostgreSQL)."""
    if conn.dialect.name != "sqlite":
        return [Part(None, None, None, POSTGRES)]
    layout = layout_of(conn)
    return [Part(None, None, None, layout)] + [Part(p.alias, p.first_day, p.last_day, layout)
                                               for p in reversed(layout.periods)]


# --------------------------------------------------------------------------- sealing


def _rows(conn: Connection, sql: str, params: Any = ()) -> list:
    return conn.exec_driver_sql(sql, params).all()


def listed_periods(conn: Connection) -> list[Period]:
    """Every published period, oldest first (also those this connection could not attach)."""
    return [Period(int(a), int(b), f) for a, b, f in
            _rows(conn, f"SELECT first_day, last_day, file FROM {PERIODS} ORDER BY first_day")]


def _state(conn: Connection) -> dict[str, Any]:
    row = conn.exec_driver_sql(f"SELECT version, sealed_through, sealed_seq, sealed_ns, purged FROM {LAYOUT} "
                               f"WHERE id = 1").one()
    return {"version": int(row[0]), "through": int(row[1]), "seq": int(row[2]), "sealed_ns": int(row[3]),
            "purged": bool(row[4])}


def _write_lock(engine: Engine) -> Any:
    from .write_lock import write_lock  # the process's SQLite writers take turns (ingest, finalizer, this)

    return write_lock(engine)


def _covered(through: int, seq: int, column: str = "trace_no") -> str:
    """SQL: a row of the main file that the watermark ``(through, seq)`` publishes from a period file."""
    return f"({column} < {(through + 1) << DAY_SHIFT} AND ({column} & {SEQ_MASK}) <= {seq})"


def retire(conn: Connection, old_numbers: Iterable[int]) -> None:
    """Inside the finalizer's write transaction: hide the period-file copies of re-finalized traces.

    A number the current watermark publishes from a period file goes into ``superseded_traces``; one still
    read from the main file needs nothing (its row is deleted there). A no-op on PostgreSQL.
    """
    numbers = [(int(n),) * 5 for n in old_numbers]
    if not numbers or conn.dialect.name != "sqlite":
        return
    conn.exec_driver_sql(  # published, or being copied by a seal in progress (its watermark to be)
        f"INSERT OR IGNORE INTO {SUPERSEDED} (trace_no) SELECT ? FROM {LAYOUT} WHERE id = 1 "
        f"AND ((? < ((sealed_through + 1) << {DAY_SHIFT}) AND (? & {SEQ_MASK}) <= sealed_seq) "
        f"OR (? < ((sealing_through + 1) << {DAY_SHIFT}) AND (? & {SEQ_MASK}) <= sealing_seq))", numbers)


def seal(engine: Engine, now_ns: int, retention_ns: int, cutoff_ns: int | None = None,
         owner: str | None = None) -> dict[str, int]:
    """One sealing step: purge the main file's copies of the last seal once old enough, or seal the days
    that closed since (never an expired one); then delete superseded copies from period files.

    Returns ``{"sealed_traces", "purged_traces", "superseded_removed"}``; does nothing without a
    periods directory (in-memory database) or while another process holds the sealing lease.
    """
    directory = _dir_of(engine)
    done = {"sealed_traces": 0, "purged_traces": 0, "superseded_removed": 0}
    if directory is None:
        return done
    owner = owner or f"{os.getpid()}:{id(engine)}"
    with _write_lock(engine), engine.begin() as conn:
        taken = conn.exec_driver_sql(
            f"UPDATE {LAYOUT} SET lease_by = ?, lease_until_ns = ? WHERE id = 1 "
            f"AND (lease_by IS NULL OR lease_by = ? OR lease_until_ns < ?)",
            (owner, now_ns + LEASE_NS, owner, now_ns)).rowcount
    if not taken:
        return done
    try:
        with engine.connect() as conn:
            state = _state(conn)
        if state["through"] >= 0 and not state["purged"]:
            if state["sealed_ns"] + PURGE_DELAY_NS <= now_ns:
                done["purged_traces"] = _purge(engine, state)
        else:
            remove_orphans(engine)
            done["sealed_traces"] = _seal_closed_days(engine, directory, now_ns, retention_ns, cutoff_ns, state)
        done["superseded_removed"] = _remove_superseded(engine, directory)
    finally:
        with _write_lock(engine), engine.begin() as conn:
            conn.exec_driver_sql(f"UPDATE {LAYOUT} SET lease_by = NULL, lease_until_ns = NULL WHERE id = 1 "
                                 f"AND lease_by = ?", (owner,))
    return done


MAX_TARGETS = 3  # period files one seal pass writes at most (the first seal of an old database goes in steps)


def _seal_closed_days(engine: Engine, directory: Path, now_ns: int, retention_ns: int, cutoff_ns: int | None,
                      state: dict[str, Any]) -> int:
    old_through, old_seq = state["through"], state["seq"]
    through = max(old_through, (now_ns - SEAL_GRACE_NS) // DAY_NS - 1)  # the last day ended a grace ago
    first_kept = 0 if cutoff_ns is None else max(0, cutoff_ns // DAY_NS)  # an expired day is deleted, not sealed
    with engine.connect() as conn:
        seq = int(conn.exec_driver_sql("SELECT last FROM trace_sequence").scalar() or 0)
        if through < 0 or (through == old_through and seq == old_seq):
            return 0
        periods = listed_periods(conn)
        days = [int(d) for (d,) in _rows(conn, f"SELECT DISTINCT trace_no >> {DAY_SHIFT} FROM main.traces "
                                               f"WHERE {_fresh(through, seq, old_through, old_seq, first_kept)}")]
    targets: dict[Period, list[int]] = {}
    length = period_length(retention_ns)
    for day in sorted(days):
        period = next((p for p in periods if p.first_day <= day <= p.last_day), None)
        if period is None:
            later = [p.first_day for p in periods if p.first_day > day]
            period = Period(day, min([day + length - 1, *(d - 1 for d in later)]), file_name(day))
            periods.append(period)
        if period not in targets and len(targets) == MAX_TARGETS:
            through = min(through, day - 1)  # the rest next pass: the watermark stops before this day
            break
        targets.setdefault(period, []).append(day)
    fresh = _fresh(through, seq, old_through, old_seq, first_kept)
    with _write_lock(engine), engine.begin() as conn:  # from now on the finalizer records what it replaces ...
        conn.exec_driver_sql(f"UPDATE {LAYOUT} SET sealing_through = ?, sealing_seq = ? WHERE id = 1", (through, seq))
    # ... and the copy reads after that, so a row replaced earlier is not copied
    copied: list[int] = []
    if targets:
        directory.mkdir(mode=0o700, exist_ok=True)
    for period, period_days in targets.items():
        copied += _copy_into(engine, directory / period.file, [d for d in period_days if d <= through], fresh,
                             (old_through, old_seq))
    # A copied row re-finalized meanwhile is in superseded_traces already (retire() saw the sealing watermark).
    with _write_lock(engine), engine.begin() as conn:
        for period in targets:
            conn.exec_driver_sql(f"INSERT OR IGNORE INTO {PERIODS} (first_day, last_day, file) VALUES (?, ?, ?)",
                                 (period.first_day, period.last_day, period.file))
        conn.exec_driver_sql(f"UPDATE {LAYOUT} SET version = version + 1, sealed_through = ?, sealed_seq = ?, "
                             f"sealed_ns = ?, purged = ? WHERE id = 1", (through, seq, now_ns, int(not copied)))
    return len(copied)


def _fresh(through: int, seq: int, old_through: int, old_seq: int, first_kept: int) -> str:
    """SQL: main-file rows the watermark ``(through, seq)`` publishes and ``(old_through, old_seq)`` did not."""
    fresh = [_covered(through, seq), f"trace_no >= {first_kept << DAY_SHIFT}"]
    if old_through >= 0:
        fresh.append(f"NOT {_covered(old_through, old_seq)}")
    return " AND ".join(fresh)


def _ddl(engine: Engine, alias: str) -> list[str]:
    """CREATE statements of the five finalized tables (and their indexes) inside the attached ``alias``."""
    from sqlalchemy.schema import CreateIndex, CreateTable

    out = []
    for name in TABLES:
        table = _table_in(getattr(schema, name), alias)
        out.append(str(CreateTable(table).compile(dialect=engine.dialect)).replace("CREATE TABLE",
                                                                                   "CREATE TABLE IF NOT EXISTS", 1))
        out.extend(str(CreateIndex(index).compile(dialect=engine.dialect)).replace("CREATE INDEX",
                                                                                   "CREATE INDEX IF NOT EXISTS", 1)
                   for index in table.indexes)
    return out


def _copy_into(engine: Engine, path: Path, days: list[int], fresh: str, old: tuple[int, int]) -> list[int]:
    """Copy the main file's newly published rows of ``days`` into the period file at ``path`` and commit;
    returns the trace numbers copied.

    Trace rows a crashed earlier attempt left (not published by the old watermark ``old``) are deleted
    first; ``INSERT OR REPLACE`` in key order then rewrites whatever is there and fills the file's b-trees
    front to back (dense pages).
    """
    if not days:
        return []
    lo, hi = min(days) << DAY_SHIFT, (max(days) + 1) << DAY_SHIFT
    in_days = f"trace_no >= {lo} AND trace_no < {hi}"
    with engine.connect() as conn:
        numbers = [int(n) for (n,) in _rows(conn, f"SELECT trace_no FROM main.traces WHERE {in_days} AND {fresh}")]
        conn.rollback()
        conn.exec_driver_sql(f"ATTACH DATABASE ? AS {_SEALING}", (str(path),))
        conn.commit()
        try:
            conn.exec_driver_sql(f"PRAGMA {_SEALING}.journal_mode=WAL")
            for statement in _ddl(engine, _SEALING):
                conn.exec_driver_sql(statement)
            conn.commit()
            leftover = "1" if old[0] < 0 else f"NOT {_covered(*old)}"
            conn.exec_driver_sql(f"DELETE FROM {_SEALING}.traces WHERE {leftover}")
            picked = f"SELECT trace_no FROM main.traces WHERE {in_days} AND {fresh}"
            for name in TABLES:
                table = getattr(schema, name)
                columns = ", ".join(c.name for c in table.columns)
                key = ", ".join(c.name for c in table.primary_key.columns)
                where = f"{in_days} AND {fresh}" if name == "traces" else f"{in_days} AND trace_no IN ({picked})"
                conn.exec_driver_sql(f"INSERT OR REPLACE INTO {_SEALING}.{name} ({columns}) SELECT {columns} "
                                     f"FROM main.{name} WHERE {where} ORDER BY {key}")
            conn.commit()
            conn.exec_driver_sql(f"PRAGMA {_SEALING}.wal_checkpoint(TRUNCATE)")
            conn.commit()
        finally:
            conn.rollback()
            conn.exec_driver_sql(f"DETACH DATABASE {_SEALING}")
            conn.commit()
    return numbers


def _purge(engine: Engine, state: dict[str, Any]) -> int:
    """Delete the main file's rows the watermark publishes from period files, a chunk per transaction."""
    covered = _covered(state["through"], state["seq"])
    purged = 0
    while True:
        with _write_lock(engine), engine.begin() as conn:
            numbers = [int(n) for (n,) in _rows(conn, f"SELECT trace_no FROM main.traces WHERE {covered} "
                                                      f"LIMIT {PURGE_CHUNK}")]
            if not numbers:
                break
            marks = ",".join("?" * len(numbers))
            for name in ("traces", "trace_blocks"):
                conn.exec_driver_sql(f"DELETE FROM main.{name} WHERE trace_no IN ({marks})", tuple(numbers))
            purged += len(numbers)
    with _write_lock(engine), engine.begin() as conn:  # blocks of traces deleted before (cheap: a key range)
        conn.exec_driver_sql(f"DELETE FROM main.trace_blocks WHERE {covered}")
    for name in ("trace_operations", "trace_tags", "trace_tag_numbers"):
        _purge_postings(engine, name, covered)
    with _write_lock(engine), engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {LAYOUT} SET purged = 1 WHERE id = 1 AND sealed_through = ? "
                             f"AND sealed_seq = ?", (state["through"], state["seq"]))
    return purged


def _purge_postings(engine: Engine, name: str, covered: str) -> None:
    """Walk a posting table in key order, deleting covered postings by key, a chunk per transaction."""
    key = [c.name for c in getattr(schema, name).primary_key.columns]
    columns = ", ".join(key)
    after: tuple | None = None
    where = " AND ".join(f"{c} = ?" for c in key)
    while True:
        position = "" if after is None else f"AND ({columns}) > ({', '.join('?' * len(key))})"
        with engine.connect() as conn:
            found = _rows(conn, f"SELECT {columns} FROM main.{name} WHERE {covered} {position} "
                                f"ORDER BY {columns} LIMIT {PURGE_CHUNK}", after or ())
        if not found:
            return
        after = tuple(found[-1])
        with _write_lock(engine), engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM main.{name} WHERE {where}", [tuple(r) for r in found])


def _remove_superseded(engine: Engine, directory: Path) -> int:
    """Delete from period files the copies ``superseded_traces`` hides, then forget those numbers."""
    with engine.connect() as conn:
        numbers = [int(n) for (n,) in _rows(conn, f"SELECT trace_no FROM {SUPERSEDED}")]
        periods = listed_periods(conn)
    if not numbers:
        return 0
    removed = 0
    for period in periods:
        mine = [n for n in numbers if period.first_day <= n >> DAY_SHIFT <= period.last_day]
        path = directory / period.file
        if not mine or not path.exists():
            continue
        with engine.connect() as conn:
            conn.exec_driver_sql(f"ATTACH DATABASE ? AS {_SEALING}", (str(path),))
            conn.commit()
            try:  # one pass over each table (the postings are keyed by name first, not by trace number)
                conn.exec_driver_sql("CREATE TEMP TABLE IF NOT EXISTS contrail_gone (trace_no INTEGER PRIMARY KEY)")
                conn.exec_driver_sql("DELETE FROM temp.contrail_gone")
                conn.exec_driver_sql("INSERT OR IGNORE INTO temp.contrail_gone (trace_no) VALUES (?)",
                                     [(n,) for n in mine])
                for name in TABLES:
                    n = conn.exec_driver_sql(f"DELETE FROM {_SEALING}.{name} WHERE trace_no IN "
                                             f"(SELECT trace_no FROM temp.contrail_gone)").rowcount
                    if name == "traces":
                        removed += n or 0
                conn.exec_driver_sql("DELETE FROM temp.contrail_gone")
                conn.commit()
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"DETACH DATABASE {_SEALING}")
                conn.commit()
    # Every copy is gone now; a number of no period (replaced before it was sealed, or of a dropped day) had none.
    for i in range(0, len(numbers), 500):
        chunk = numbers[i:i + 500]
        with _write_lock(engine), engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM {SUPERSEDED} WHERE trace_no IN ({','.join('?' * len(chunk))})",
                                 tuple(chunk))
    return removed


# --------------------------------------------------------------------------- dropping


def expired_periods(conn: Connection, cutoff_ns: int) -> list[Period]:
    """Published periods whose last day ended at or before ``cutoff_ns`` (retention drops them whole)."""
    last = cutoff_ns // DAY_NS - 1
    return [p for p in listed_periods(conn) if p.last_day <= last]


def _visible_in_file(alias: str) -> str:
    """SQL: the rows of the period file attached as ``alias`` that readers see."""
    return (f"{alias}.traces.trace_no < ((SELECT sealed_through FROM {LAYOUT} WHERE id = 1) + 1) << {DAY_SHIFT} "
            f"AND ({alias}.traces.trace_no & {SEQ_MASK}) <= (SELECT sealed_seq FROM {LAYOUT} WHERE id = 1) "
            f"AND {alias}.traces.trace_no NOT IN (SELECT trace_no FROM {SUPERSEDED})")


def count_period(engine: Engine, period: Period) -> dict[str, int]:
    """Traces, blocks and spans readers see in ``period``'s file."""
    directory = _dir_of(engine)
    path = directory / period.file if directory is not None else None
    if path is None or not path.exists():
        return {"traces": 0, "trace_blocks": 0, "spans": 0}
    with engine.connect() as conn:
        conn.exec_driver_sql(f"ATTACH DATABASE ? AS {_SEALING}", (str(path),))
        try:
            traces, spans = conn.exec_driver_sql(
                f"SELECT count(*), coalesce(sum(span_count), 0) FROM {_SEALING}.traces "
                f"WHERE {_visible_in_file(_SEALING)}").one()
            blocks = traces  # every trace is sealed with its block (counting them would read every block page)
        finally:
            conn.rollback()
            conn.exec_driver_sql(f"DETACH DATABASE {_SEALING}")
    return {"traces": int(traces), "trace_blocks": int(blocks), "spans": int(spans)}


def drop_period(engine: Engine, period: Period) -> dict[str, int]:
    """Unpublish ``period``, delete its file, and delete what the main file still holds of its days.

    Returns the rows it held (traces, blocks, spans, staged spans of its traces included). The file is
    unlinked after the main-file transaction commits: a crash between leaves an unlisted file, which the
    next seal deletes (:func:`remove_orphans`). A connection of another process that still has the file
    attached reads it until its next checkout, then detaches it; only then does that process give the
    space back too.
    """
    directory = _dir_of(engine)
    counted = count_period(engine, period)
    lo, hi = period.first_day << DAY_SHIFT, (period.last_day + 1) << DAY_SHIFT
    path = directory / period.file if directory is not None else None
    with _write_lock(engine), engine.connect() as conn:
        if path is not None and path.exists():
            conn.exec_driver_sql(f"ATTACH DATABASE ? AS {_SEALING}", (str(path),))
            conn.commit()
            try:
                counted["spans"] += sum(int(n) for (n,) in conn.exec_driver_sql(  # spans, not staging rows
                    f"DELETE FROM main.spans WHERE EXISTS (SELECT 1 FROM {_SEALING}.traces t "
                    f"WHERE t.trace_id = main.spans.trace_id) RETURNING span_count"))
                conn.commit()
            finally:
                conn.rollback()
                conn.exec_driver_sql(f"DETACH DATABASE {_SEALING}")
                conn.commit()
        conn.exec_driver_sql(f"DELETE FROM {PERIODS} WHERE first_day = ?", (period.first_day,))
        conn.exec_driver_sql(f"DELETE FROM {SUPERSEDED} WHERE trace_no >= ? AND trace_no < ?", (lo, hi))
        conn.exec_driver_sql(f"UPDATE {LAYOUT} SET version = version + 1 WHERE id = 1")
        conn.commit()
    if path is not None:
        _unlink(path)
    return counted


def _unlink(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


def remove_orphans(engine: Engine) -> list[str]:
    """Delete period files no period row names (a crash between unpublishing and unlinking, or during a
    first seal). Called by the sealer, under its lease."""
    directory = _dir_of(engine)
    if directory is None or not directory.is_dir():
        return []
    with engine.connect() as conn:
        listed = {p.file for p in listed_periods(conn)}
    removed = []
    for path in directory.glob("*.db"):
        if path.name not in listed:
            _unlink(path)
            removed.append(path.name)
    return removed


def file_sizes(engine_or_conn: Any) -> dict[str, int]:
    """Bytes of each period file on disk (with its -wal), by file name."""
    directory = _dir_of(engine_or_conn)
    if directory is None or not directory.is_dir():
        return {}
    out = {}
    for path in sorted(directory.glob("*.db")):
        wal = Path(f"{path}-wal")
        out[path.name] = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return out


def published(conn: Connection) -> list[Period]:
    """Every published period (none on PostgreSQL or before the migration)."""
    if conn.dialect.name != "sqlite":
        return []
    try:
        return listed_periods(conn)
    except Exception:  # no such table: not migrated yet
        conn.rollback()
        return []


def union(conn: Connection, table: Table, columns: Callable[[Table], list],
          where: Callable[[Table], list] | None = None, days: tuple[int | None, int | None] = (None, None)) -> Any:
    """One SELECT of ``columns(t)`` WHERE ``where(t)`` per part holding rows of ``days`` (each arm with its
    part's visibility condition), as a UNION ALL; a single part gives a plain SELECT."""
    arms = []
    for part in parts(conn):
        if not part.holds_days(*days):
            continue
        t = part.table(table)
        conditions = list(where(t)) if where is not None else []
        visible = part.visible(t.c.trace_no)
        if visible is not None:
            conditions.append(visible)
        arms.append(select(*columns(t)).where(*conditions))
    if len(arms) == 1:
        return arms[0]
    return union_all(*arms)


def forget_superseded(conn: Connection) -> None:
    """Empty ``superseded_traces`` (``contrail cleanup --all``, once every period file is gone)."""
    if conn.dialect.name == "sqlite" and published(conn) == []:
        try:
            conn.exec_driver_sql(f"DELETE FROM {SUPERSEDED}")
        except Exception:  # not migrated yet
            pass
