"""Idempotent span writes: the only way spans enter storage.

Spans enter the ``spans`` staging table; a span already compacted into its
trace's block (a redelivery after finalization) is left out. Spans are inserted with ``ON CONFLICT (trace_id, span_id) DO NOTHING ...
RETURNING`` so a redelivered stream entry changes nothing, and the caller
learns exactly which spans are new (statistics must count each span once).
Every trace that received a new span is marked in ``pending_traces`` for the
finalizer.

On SQLite one process runs ingest and finalization in two threads over one
database with a single writer; :func:`write_lock` serializes their write
transactions inside the process, so neither has to wait in SQLite's busy
handler (which sleeps) nor fails to upgrade a read into a write. Work that needs
no database (building rows, assembling traces) is done before taking it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import weakref
from typing import Any, Iterable

from sqlalchemy.engine import Connection, Engine

from .block_store import delete_staged, stored_span_ids
from .schema import pending_traces, spans, traces

INT64_MAX = 2**63 - 1

# Columns written on ingest, in insert order; the assembly columns are left to the finalizer.
SPAN_COLUMNS = (
    "trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns", "duration_ns",
    "status_code", "status_message", "attributes", "events", "links", "resource", "scope", "received_ns",
    "critical_path",
)
# Rows per INSERT statement: SQLite allows 32766 bound parameters, PostgreSQL 65535.
_ROWS_PER_STATEMENT = {"sqlite": 32766 // len(SPAN_COLUMNS), "postgresql": 65535 // len(SPAN_COLUMNS)}


_write_locks: "weakref.WeakKeyDictionary[Engine, threading.RLock]" = weakref.WeakKeyDictionary()
_write_locks_guard = threading.Lock()


def write_lock(engine: Engine) -> Any:
    """A context manager held around write transactions of this process on ``engine``.

    SQLite: one lock per engine, so the ingest and finalizer threads take turns
    at the database's single write lock. Other databases take row locks of
    their own: nothing is held.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    with _write_locks_guard:
        lock = _write_locks.get(engine)
        if lock is None:
            lock = _write_locks[engine] = threading.RLock()
    return lock


def take_write_lock(lock: Any, meanwhile: Any = None) -> None:
    """Enter ``lock`` (from :func:`write_lock`); if another thread holds it, call ``meanwhile()`` first.

    The caller does useful work (reads on, assembles the next batch) while the
    other writer finishes instead of waiting idle, then waits. Leave with
    ``lock.__exit__(None, None, None)``.
    """
    if meanwhile is None or not hasattr(lock, "acquire"):  # nothing to do meanwhile, or no lock at all
        lock.__enter__()
    elif not lock.acquire(blocking=False):
        meanwhile()
        lock.acquire()


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _stringify_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stringify_keys(v) for v in value]
    return value


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default).encode
try:  # the C encoder made once (JSONEncoder.encode builds one per call); no circular-reference markers
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_basestring

    _c_encode = _c_make_encoder(None, _json_default, _encode_basestring, None, ":", ",", False, False, True) \
        if _c_make_encoder is not None else None
except ImportError:  # pragma: no cover - interpreters without the C accelerator
    _c_encode = None


def _fast_encode(value: Any) -> str:
    """The same text as ``_encode``; a circular value raises RecursionError (handled by ``to_json``)."""
    if _c_encode is None:
        return _encode(value)
    return "".join(_c_encode(value, 0))


def to_json(value: Any) -> str:
    """Compact JSON; values JSON cannot hold are stored as their string form."""
    if not value:
        return "[]" if isinstance(value, (list, tuple)) else "{}"  # also None: an empty mapping
    try:
        return _fast_encode(value)
    except (TypeError, ValueError, RecursionError):  # keys of unusual types, circular data
        try:
            return _encode(_stringify_keys(value))
        except (TypeError, ValueError, RecursionError):
            return _encode(str(value))


def _text(value: Any, limit: int | None = None) -> Any:
    if type(value) is str and (limit is None or len(value) <= limit) and "\x00" not in value:
        return value  # the usual case
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        value = value.replace("\x00", "\ufffd")
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value


def invalid_reason(span: dict[str, Any]) -> str | None:
    """Why a decoded span cannot be stored, or None; the consumer dead-letters such spans."""
    start, end = span.get("start_ns"), span.get("end_ns")
    if not isinstance(start, int) or not isinstance(end, int):
        return "span times must be integers"
    if start > INT64_MAX or end > INT64_MAX or start < 0:
        return f"span times out of range start={start} end={end}"
    return None


def _resource_json(resource: Any, cache: dict) -> str:
    """Resources repeat across a batch (one per service process): encode each once."""
    if not resource:
        return "{}"
    try:
        key = tuple(resource.items())
        cached = cache.get(key)
    except (TypeError, AttributeError):  # unhashable values
        return to_json(resource)
    if cached is None:
        cached = cache[key] = to_json(resource)
    return cached


def row_values(span: dict[str, Any], received_ns: int, resource_cache: dict | None = None) -> tuple:
    """The ``spans`` row for one decoded span, in ``SPAN_COLUMNS`` order (the hot path of ingest)."""
    get = span.get
    start, end = span["start_ns"], span["end_ns"]
    status_message = get("status_message")
    return (
        span["trace_id"], span["span_id"], get("parent_span_id"),
        _text(get("service") or "unknown_service", 255), _text(span["name"], 512), get("kind") or "internal",
        start, end, end - start, get("status_code") or "unset",
        _text(status_message) if status_message else None,
        to_json(get("attributes")), to_json(get("events") or []), to_json(get("links") or []),
        to_json(get("resource")) if resource_cache is None else _resource_json(get("resource"), resource_cache),
        _text(get("scope"), 255), received_ns, False,
    )


def span_row(span: dict[str, Any], received_ns: int) -> dict[str, Any]:
    """The ``spans`` row for one decoded span, as a mapping of column to value."""
    return dict(zip(SPAN_COLUMNS, row_values(span, received_ns)))


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


_statements: dict[tuple[str, str, int], str] = {}


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _span_insert_sql(conn: Connection, rows: int) -> str:
    """Multi-row insert text, the same on SQLite and PostgreSQL; cached per row count."""
    key = ("spans", conn.dialect.name, rows)
    sql = _statements.get(key)
    if sql is None:
        mark = _placeholder(conn)
        row = "(" + ",".join([mark] * len(SPAN_COLUMNS)) + ")"
        sql = (f"INSERT INTO {spans.name} ({','.join(SPAN_COLUMNS)}) VALUES " + ",".join([row] * rows)
               + " ON CONFLICT (trace_id, span_id) DO NOTHING RETURNING trace_id, span_id")
        _statements[key] = sql
    return sql


def _pending_upsert_sql(conn: Connection, rows: int) -> str:
    key = ("pending", conn.dialect.name, rows)
    sql = _statements.get(key)
    if sql is None:
        mark = _placeholder(conn)
        sql = (f"INSERT INTO {pending_traces.name} (trace_id, first_seen_ns, last_seen_ns) VALUES "
               + ",".join([f"({mark},{mark},{mark})"] * rows)
               + " ON CONFLICT (trace_id) DO UPDATE SET last_seen_ns = excluded.last_seen_ns")
        _statements[key] = sql
    return sql


class PreparedSpans:
    """Rows of a batch of decoded spans, built before the write transaction (no database needed)."""

    __slots__ = ("keys", "by_key", "rows", "received_ns")

    def __init__(self, spans_in: list[dict[str, Any]], received_ns: int) -> None:
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        for span in spans_in:
            by_key.setdefault((span["trace_id"], span["span_id"]), span)  # first copy wins within a batch
        self.keys = sorted(by_key)
        self.by_key = by_key
        self.received_ns = received_ns
        self.rows = _rows_of([by_key[key] for key in self.keys], received_ns)


def _rows_of(spans_in: list[dict[str, Any]], received_ns: int) -> list[tuple]:
    """``row_values`` of every span, in order (the same tuples; the usual span is built inline).

    Decoded spans of one stream entry share their resource mapping (``tracer.codec``), so its JSON is
    looked up by identity first; every span stays referenced by ``spans_in`` during the call, so an
    identity is not reused meanwhile.
    """
    resource_cache: dict = {}
    by_identity: dict[int, str] = {}
    encode = _fast_encode
    rows = []
    append = rows.append
    for span in spans_in:
        get = span.get
        service, name, scope, attributes = get("service"), get("name"), get("scope"), get("attributes")
        events, links, resource = get("events"), get("links"), get("resource")
        if (type(service) is str and service and len(service) <= 255 and "\x00" not in service
                and type(name) is str and len(name) <= 512 and "\x00" not in name
                and (scope is None or (type(scope) is str and len(scope) <= 255 and "\x00" not in scope))
                and type(attributes) is dict):
            resource_json = by_identity.get(id(resource))
            if resource_json is None:
                resource_json = by_identity[id(resource)] = _resource_json(resource, resource_cache)
            if attributes:
                try:
                    attributes_json = encode(attributes)
                except (TypeError, ValueError, RecursionError):
                    attributes_json = to_json(attributes)
            else:
                attributes_json = "{}"
            status_message = get("status_message")
            start, end = span["start_ns"], span["end_ns"]
            append((span["trace_id"], span["span_id"], get("parent_span_id"), service, name,
                    get("kind") or "internal", start, end, end - start, get("status_code") or "unset",
                    _text(status_message) if status_message else None, attributes_json,
                    to_json(events) if events else "[]", to_json(links) if links else "[]", resource_json, scope,
                    received_ns, False))
        else:
            append(row_values(span, received_ns, resource_cache))
    return rows


def prepare_spans(spans_in: list[dict[str, Any]], received_ns: int) -> PreparedSpans:
    """Build the ``spans`` rows of a batch ahead of :func:`store_spans` (outside any lock or transaction)."""
    return PreparedSpans(spans_in, received_ns)


def _not_compacted(conn: Connection, inserted: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``inserted`` without redelivered spans that are already in their trace's block (whose staging rows
    the finalizer deleted); those rows are deleted again. Checked after the insert: a finalizer that
    committed meanwhile had to delete the staging row first, so its block is visible by now."""
    compacted = stored_span_ids(conn, sorted({trace_id for trace_id, _ in inserted}))
    if not compacted:
        return inserted
    again = [key for key in inserted if key[1] in compacted.get(key[0], ())]
    delete_staged(conn, again)
    return [key for key in inserted if key[1] not in compacted.get(key[0], ())]


def store_spans(conn: Connection, spans_in: list[dict[str, Any]], received_ns: int,
                prepared: PreparedSpans | None = None, stored_rows: list | None = None,
                trace_span_limit: int | None = None) -> list[dict[str, Any]]:
    """Insert spans that are not stored yet; return exactly those newly inserted.

    Runs inside the caller's transaction. The statements are written as plain
    multi-row SQL (identical on SQLite and PostgreSQL) because building them
    through the expression layer costs more than the database work at the
    ingest rates a collector must sustain. Rows are written in key order so
    concurrent collectors on PostgreSQL take row locks in the same order and
    cannot deadlock each other.

    ``prepared`` (from :func:`prepare_spans` over the same spans and
    ``received_ns``) skips building the rows here. ``stored_rows``, when given,
    receives ``(row, span)`` for every newly inserted span: the row as stored
    (``SPAN_COLUMNS`` order) and the decoded span it came from.

    ``trace_span_limit``, when given, caps the spans stored per trace: new spans
    of a trace beyond it are taken out again (:func:`over_trace_limit`) and are
    neither returned nor counted; ``dropped_over_limit`` counts them.
    """
    if not spans_in:
        return []
    if conn.dialect.name not in _ROWS_PER_STATEMENT:
        raise RuntimeError(f"unsupported database backend {conn.dialect.name!r} (use SQLite or PostgreSQL)")
    if prepared is None or prepared.received_ns != received_ns:
        prepared = PreparedSpans(spans_in, received_ns)
    keys, by_key, rows = prepared.keys, prepared.by_key, prepared.rows
    inserted: list[tuple[str, str]] = []
    step = _ROWS_PER_STATEMENT[conn.dialect.name]
    for start in range(0, len(rows), step):
        chunk = rows[start:start + step]
        result = conn.exec_driver_sql(_span_insert_sql(conn, len(chunk)), tuple(itertools.chain.from_iterable(chunk)))
        inserted.extend(tuple(row) for row in result.fetchall())
    if not inserted:
        return []
    inserted = _not_compacted(conn, inserted)
    if not inserted:
        return []
    if trace_span_limit is not None:
        inserted = over_trace_limit(conn, inserted, by_key, trace_span_limit)
        if not inserted:
            return []

    trace_ids = sorted({trace_id for trace_id, _ in inserted})
    for chunk in _chunks(trace_ids, 10000):
        params = []
        for trace_id in chunk:
            params.extend((trace_id, received_ns, received_ns))
        conn.exec_driver_sql(_pending_upsert_sql(conn, len(chunk)), tuple(params))
    if len(inserted) == len(keys):  # the usual case: every span was new
        if stored_rows is not None:
            stored_rows.extend(zip(rows, (by_key[key] for key in keys)))
        return [by_key[key] for key in keys]
    new_keys = set(inserted)
    if stored_rows is not None:
        stored_rows.extend((row, by_key[key]) for key, row in zip(keys, rows) if key in new_keys)
    return [by_key[key] for key in keys if key in new_keys]


_dropped_lock = threading.Lock()
dropped_over_limit = {"spans": 0}  # spans of traces past trace_span_limit, in this process


def over_trace_limit(conn: Connection, inserted: list[tuple[str, str]], by_key: dict,
                     limit: int) -> list[tuple[str, str]]:
    """``inserted`` without the spans that took their trace past ``limit`` spans; those are deleted again.

    A trace's spans are its staging rows (one grouped count over their key) and
    those in its block (the summary's span count); the usual case finds none over. Of a trace's new spans, the latest starting ones
    go (what was stored before stays).
    """
    p = _placeholder(conn)
    counts: dict[str, int] = {}
    trace_ids = sorted({trace_id for trace_id, _ in inserted})
    for chunk in _chunks(trace_ids, 1000):
        marks = ",".join([p] * len(chunk))
        sql = f"SELECT trace_id, count(*) FROM {spans.name} WHERE trace_id IN ({marks}) GROUP BY trace_id"
        counts.update((row[0], int(row[1])) for row in conn.exec_driver_sql(sql, tuple(chunk)))
        sql = f"SELECT trace_id, span_count FROM {traces.name} WHERE trace_id IN ({marks})"  # in the block
        for trace_id, in_block in conn.exec_driver_sql(sql, tuple(chunk)):
            counts[trace_id] = counts.get(trace_id, 0) + int(in_block)
    over = {trace_id: count - limit for trace_id, count in counts.items() if count > limit}
    if not over:
        return inserted
    drop: set[tuple[str, str]] = set()
    for trace_id, excess in over.items():
        new = sorted((key for key in inserted if key[0] == trace_id),
                     key=lambda key: (by_key[key]["start_ns"], key[1]))
        drop.update(new[len(new) - min(excess, len(new)):])
    for chunk in _chunks(sorted(drop), 1000):
        conn.exec_driver_sql(f"DELETE FROM {spans.name} WHERE " + " OR ".join(
            [f"(trace_id = {p} AND span_id = {p})"] * len(chunk)), tuple(itertools.chain.from_iterable(chunk)))
    with _dropped_lock:
        dropped_over_limit["spans"] += len(drop)
    return [key for key in inserted if key not in drop]
