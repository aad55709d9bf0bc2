"""The staging area: spans stored but not yet merged into their trace's block.

One ``spans`` row per trace per stream entry (``trace_id``, ``batch_id``),
holding that trace's spans of the batch as one msgpack value (the decoded span
dicts as they are), their span ids packed 8 bytes each, their count, earliest
start, receive time and whether any of them links elsewhere. Ingest writes a
row once (``writer.store_spans``); the finalizer merges a trace's rows into its
block and deletes exactly the rows it merged, in the same transaction; readers
of a trace not finalized yet (or of spans arrived since) unpack its rows.

A row per span cost more to build, insert, index, read back and delete than
everything else a span costs the collector; a row per trace and batch makes
those steps per trace. ``batch_id`` is a digest of the entry id and the row's
span ids, so an entry staged again (redelivered, or taken over by another
collector while the first still stores it) hits the same key.
"""

from __future__ import annotations

import hashlib
import itertools
from operator import itemgetter, methodcaller
from typing import Any, Iterable

import msgpack
from sqlalchemy.engine import Connection

from .schema import spans as _table
from .sql_text import chunks, in_list as _in, mark as _mark

TABLE = _table.name
_CHUNK = 500

# The fields of a staged span (a decoded span as the codec yields it, cut and normalised by the writer).
SPAN_FIELDS = ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns", "status_code",
               "status_message", "service", "resource", "attributes", "events", "links", "scope")
# Columns of a row in insert order.
ROW_COLUMNS = ("trace_id", "batch_id", "start_ns", "span_count", "linked", "received_ns", "span_ids", "data")


def _default(value: Any) -> Any:
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


_pack = msgpack.Packer(use_bin_type=True, default=_default).pack


def pack(spans: list[dict[str, Any]]) -> bytes:
    """One row's value: the spans' dicts, as they are (msgpack keeps str, int, float, bool, lists, dicts)."""
    return _pack(spans)


def unpack(data: bytes) -> list[dict[str, Any]]:
    return msgpack.unpackb(bytes(data), raw=False, strict_map_key=False)


def batch_id(span_ids: bytes, source: str = "") -> str:
    """The row key of a trace's spans from one source (a stream entry id, or "" when not from an entry): a
    digest of the source and the span ids. The same entry stored again, by this collector or by another at
    the same moment, gives the same key, so the insert's conflict leaves its spans stored once."""
    if source:
        return hashlib.blake2b(source.encode() + b"|" + span_ids, digest_size=16).hexdigest()
    return hashlib.blake2b(span_ids, digest_size=16).hexdigest()


_span_id, _start_ns, _links = itemgetter("span_id"), itemgetter("start_ns"), itemgetter("links")


def _linked(spans: list[dict[str, Any]]) -> bool:
    """Whether any of the spans has links (a span without the key has none)."""
    try:
        return any(map(_links, spans))
    except KeyError:
        return any(map(methodcaller("get", "links"), spans))


def packed_ids(spans: list[dict[str, Any]]) -> bytes:
    """Span ids (16 hex digits each, as the codec admits them) as 8 bytes each, in order."""
    return bytes.fromhex("".join(map(_span_id, spans)))


def ids_of(span_ids: bytes) -> list[str]:
    hexed = bytes(span_ids).hex()
    return [hexed[i:i + 16] for i in range(0, len(hexed), 16)]


def row(trace_id: str, spans: list[dict[str, Any]], received_ns: int, source: str = "") -> tuple:
    """The ``spans`` row of one trace's new spans from ``source``, in ``ROW_COLUMNS`` order."""
    ids = packed_ids(spans)
    return (trace_id, batch_id(ids, source), min(map(_start_ns, spans)), len(spans), _linked(spans),
            received_ns, ids, _pack(spans))


def _chunks(items: list, size: int = _CHUNK) -> Iterable[list]:
    return chunks(items, size)


_statements: dict[Any, str] = {}


def insert(conn: Connection, rows: list[tuple], all_new: bool = False) -> list[tuple[str, str]]:
    """Insert rows that are not there yet; the (trace_id, batch_id) keys actually inserted.

    ``all_new``: no row of these traces was staged when the transaction read them, so every row is
    expected in. On SQLite (one writer, its transaction serialized by the write lock) such rows go in
    without ``RETURNING``, whose result rows cost more than the insert itself, and the count of rows
    inserted confirms it; a count short of them raises (the transaction is then rolled back).
    """
    if not rows:
        return []
    if all_new and conn.dialect.name == "sqlite":
        sql = _statements.get("insert-all-new")
        if sql is None:
            sql = _statements["insert-all-new"] = (
                f"INSERT INTO {TABLE} ({','.join(ROW_COLUMNS)}) VALUES ({','.join(['?'] * len(ROW_COLUMNS))}) "
                "ON CONFLICT (trace_id, batch_id) DO NOTHING")
        count = conn.exec_driver_sql(sql, rows).rowcount
        if count != len(rows):
            raise RuntimeError(f"{len(rows) - count} of {len(rows)} staged rows were already there: "
                               "their traces had none when read before the insert")
        return [(row[0], row[1]) for row in rows]
    step = (32766 if conn.dialect.name == "sqlite" else 65535) // len(ROW_COLUMNS)
    inserted: list[tuple[str, str]] = []
    for chunk in _chunks(rows, step):
        key = ("insert", conn.dialect.name, len(chunk))
        sql = _statements.get(key)
        if sql is None:
            mark = _mark(conn)
            one = "(" + ",".join([mark] * len(ROW_COLUMNS)) + ")"
            sql = _statements[key] = (
                f"INSERT INTO {TABLE} ({','.join(ROW_COLUMNS)}) VALUES " + ",".join([one] * len(chunk))
                + " ON CONFLICT (trace_id, batch_id) DO NOTHING RETURNING trace_id, batch_id")
        result = conn.exec_driver_sql(sql, tuple(itertools.chain.from_iterable(chunk)))
        inserted.extend((r[0], r[1]) for r in result.fetchall())
    return inserted


def staged_ids(conn: Connection, trace_ids: list[str]) -> dict[str, set[str]]:
    """Span ids staged for each of ``trace_ids`` (traces with none are absent)."""
    out: dict[str, set[str]] = {}
    for chunk in _chunks(sorted(set(trace_ids))):
        for trace_id, ids in conn.exec_driver_sql(
                f"SELECT trace_id, span_ids FROM {TABLE} WHERE trace_id IN {_in(conn, len(chunk))}", tuple(chunk)):
            out.setdefault(trace_id, set()).update(ids_of(ids))
    return out


def keys(conn: Connection, trace_ids: list[str]) -> dict[str, dict[str, int]]:
    """The staged rows of each of ``trace_ids``: batch id -> span count (traces with none are absent)."""
    out: dict[str, dict[str, int]] = {}
    for chunk in _chunks(sorted(set(trace_ids))):
        for trace_id, batch, count in conn.exec_driver_sql(
                f"SELECT trace_id, batch_id, span_count FROM {TABLE} WHERE trace_id IN {_in(conn, len(chunk))}",
                tuple(chunk)):
            out.setdefault(trace_id, {})[batch] = int(count)
    return out


def read(conn: Connection, trace_ids: list[str],
         wanted: set[tuple[str, str]] | None = None) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """The staged spans of ``trace_ids`` as decoded span dicts (``received_ns`` set): trace -> batch -> spans.

    ``wanted``: only these (trace_id, batch_id) rows are unpacked (the others are skipped).
    """
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for chunk in _chunks(sorted(set(trace_ids))):
        for trace_id, batch, received_ns, data in conn.exec_driver_sql(
                f"SELECT trace_id, batch_id, received_ns, data FROM {TABLE} "
                f"WHERE trace_id IN {_in(conn, len(chunk))}", tuple(chunk)):
            if wanted is not None and (trace_id, batch) not in wanted:
                continue
            found = unpack(data)
            for span in found:
                span["received_ns"] = received_ns
            out.setdefault(trace_id, {})[batch] = found
    return out


def as_row(span: dict[str, Any]) -> dict[str, Any]:
    """A staged span in the shape of a block span (``blocks.decode``); not assembled (``depth`` None) unless
    it was staged by an earlier release after an assembly (revision 0008 keeps those results)."""
    start, end = span["start_ns"], span["end_ns"]
    return {"trace_id": span["trace_id"], "span_id": span["span_id"], "parent_span_id": span.get("parent_span_id"),
            "service": span.get("service") or "unknown_service", "name": span.get("name") or "",
            "kind": span.get("kind") or "internal", "start_ns": start, "end_ns": end, "duration_ns": end - start,
            "status_code": span.get("status_code") or "unset", "status_message": span.get("status_message"),
            "attributes": span.get("attributes") or {}, "events": span.get("events") or [],
            "links": span.get("links") or [], "resource": span.get("resource") or {}, "scope": span.get("scope"),
            "received_ns": span.get("received_ns"), "depth": span.get("depth"), "self_time_ns": span.get("self_time_ns"),
            "critical_path": bool(span.get("critical_path"))}


def rows_of(conn: Connection, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every staged span of ``trace_ids`` as block-shaped row dicts, by trace (first copy of a span id wins)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for trace_id, batches in read(conn, trace_ids).items():
        seen: set[str] = set()
        rows = out[trace_id] = []
        for batch in sorted(batches):
            for span in batches[batch]:
                if span["span_id"] not in seen:
                    seen.add(span["span_id"])
                    rows.append(as_row(span))
    return out


def all_rows(conn: Connection) -> list[dict[str, Any]]:
    """Every staged span (for checks and small exports)."""
    trace_ids = [r[0] for r in conn.exec_driver_sql(f"SELECT DISTINCT trace_id FROM {TABLE}")]
    return [span for spans in rows_of(conn, trace_ids).values() for span in spans]


def delete(conn: Connection, keys_: list[tuple[str, str]]) -> None:
    """Delete staged rows by exact (trace_id, batch_id).

    The trace ids are listed too: SQLite plans ``(a, b) IN (VALUES …)`` alone as a scan of the table, with
    them as a search of the key index. One statement per chunk.
    """
    if not keys_:
        return
    m = _mark(conn)
    for chunk in _chunks(sorted(keys_), 2000):
        trace_ids = sorted({trace_id for trace_id, _ in chunk})
        pairs = ",".join([f"({m},{m})"] * len(chunk))
        conn.exec_driver_sql(f"DELETE FROM {TABLE} WHERE trace_id IN {_in(conn, len(trace_ids))} "
                             f"AND (trace_id, batch_id) IN (VALUES {pairs})",
                             (*trace_ids, *itertools.chain.from_iterable(chunk)))


def delete_traces(conn: Connection, trace_ids: list[str]) -> None:
    """Delete every staged row of ``trace_ids``."""
    for chunk in _chunks(sorted(set(trace_ids))):
        conn.exec_driver_sql(f"DELETE FROM {TABLE} WHERE trace_id IN {_in(conn, len(chunk))}", tuple(chunk))



def delete_older(conn: Connection, cutoff_ns: int, limit: int) -> tuple[int, int]:
    """Delete at most ``limit`` staged rows whose earliest span started before ``cutoff_ns`` (retention);
    (rows, spans) deleted."""
    m = _mark(conn)
    found = conn.exec_driver_sql(f"SELECT trace_id, batch_id, span_count FROM {TABLE} WHERE start_ns < {m} "
                                 f"ORDER BY start_ns LIMIT {m}", (int(cutoff_ns), int(limit))).fetchall()
    delete(conn, [(r[0], r[1]) for r in found])
    return len(found), sum(int(r[2]) for r in found)
