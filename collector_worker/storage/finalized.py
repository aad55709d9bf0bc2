"""The finalizer's reads and writes of finalized traces, as plain SQL for the driver.

Identical text on SQLite and PostgreSQL, positional parameters, multi-row
VALUES (or executemany) for row sets: one claimed batch of up to a thousand
traces becomes a handful of statements, where the expression layer's per-row
parameter handling would cost more than the database work. What a batch
writes (summaries, blocks, postings, tombstones) is computed before the write
transaction (``collector_worker.finalizer``); this module only stores it.
"""

from __future__ import annotations

import itertools
import json
from typing import Any, Iterable

from sqlalchemy.engine import Connection

from . import block_store, partitions, periods, schema, staging
from .sql_text import chunks, in_list as _in_list, mark as _mark

_IN_CHUNK = 1000


def _chunks(items: list, size: int = _IN_CHUNK) -> Iterable[list]:
    return chunks(items, size)


_PREVIOUS_COLUMNS = ("trace_id", "root_service", "root_operation", "start_ns", "duration_ns", "error_count",
                     "version", "trace_no")
_TRACE_COLUMNS = ("trace_id", "root_span_id", "root_service", "root_operation", "start_ns", "end_ns",
                  "duration_ns", "span_count", "error_count", "services", "service_count", "incomplete",
                  "clock_skew_ns", "warnings", "finalized_ns", "version")
_TOMBSTONE_COLUMNS = ("trace_id", "start_ns", "dropped_ns")
_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode


def load_previous(conn: Connection, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The current ``traces`` rows of the batch (re-finalizations): what must be subtracted and replaced.

    A trace tail sampling dropped before has no row but a tombstone: ``{"dropped": True}``.
    """
    out: dict[str, dict[str, Any]] = {}
    for trace_id, row in block_store.trace_rows(conn, trace_ids, _PREVIOUS_COLUMNS).items():
        out[trace_id] = dict(row)  # from whichever day part holds it (SQLite: the main file or a period file)
    for chunk in _chunks(trace_ids):
        in_list = _in_list(conn, len(chunk))
        sql = f"SELECT trace_id FROM {schema.dropped_traces.name} WHERE trace_id IN {in_list}"
        for row in conn.exec_driver_sql(sql, tuple(chunk)):
            out.setdefault(row[0], {"dropped": True})
    return out


def trace_row(trace_id: str, s: dict[str, Any], version: int, now_ns: int) -> tuple:
    """The ``traces`` row of an assembly summary, in ``_TRACE_COLUMNS`` order."""
    return (
        trace_id, s["root_span_id"], s["root_service"][:255], s["root_operation"][:512], s["start_ns"],
        s["end_ns"], s["duration_ns"], s["span_count"], s["error_count"], _dumps(s["services"]),
        s["service_count"], bool(s["incomplete"]), int(s["clock_skew_ns"]), _dumps(s["warnings"]), now_ns,
        version,
    )


_MAX_SQLITE_PARAMS = 32766
_MAX_PARAMS = {"sqlite": 32766, "postgresql": 65535}
_sql_cache: dict[tuple, str] = {}


def _values_sql(head: str, width: int, rows: int, tail: str = "", mark: str = "?") -> str:
    """``head`` followed by ``rows`` rows of ``width`` parameters, cached."""
    key = (head, width, rows, tail, mark)
    sql = _sql_cache.get(key)
    if sql is None:
        row = "(" + ",".join([mark] * width) + ")"
        sql = _sql_cache[key] = head + ",".join([row] * rows) + tail
    return sql


def _multi_row(conn: Connection, head: str, width: int, rows: list[tuple], tail: str = "") -> list:
    """Run ``head VALUES-rows tail`` over ``rows`` in as few statements as the parameter limit allows.

    One statement per few thousand rows instead of one step per row: less
    binding overhead, and the interpreter lock is released once per statement
    rather than once per row, which keeps the ingest thread from waiting on it.
    Returns the rows the statements return (when ``tail`` has RETURNING).
    """
    step = _MAX_PARAMS.get(conn.dialect.name, _MAX_SQLITE_PARAMS) // width
    returned: list = []
    for i in range(0, len(rows), step):
        chunk = rows[i:i + step]
        result = conn.exec_driver_sql(_values_sql(head, width, len(chunk), tail, _mark(conn)),
                                      tuple(itertools.chain.from_iterable(chunk)))
        if result.returns_rows:
            returned.extend(result.fetchall())
    return returned


def _insert_many(conn: Connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if not rows:
        return
    cols = ",".join(f'"{c}"' for c in columns)
    if conn.dialect.name == "sqlite":
        _multi_row(conn, f"INSERT INTO {table.name} ({cols}) VALUES ", len(columns), rows)
        return
    m = _mark(conn)
    conn.exec_driver_sql(f"INSERT INTO {table.name} ({cols}) VALUES ({','.join([m] * len(columns))})", rows)


def _delete_traces(conn: Connection, tables, trace_ids: list[str]) -> None:
    for chunk in _chunks(trace_ids):
        in_list = _in_list(conn, len(chunk))
        for table in tables:
            conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE trace_id IN {in_list}", tuple(chunk))


def write_batch(conn: Connection, batch: Any) -> None:
    """Replace the finalizer's rows of the batch; only traces finalized before have rows to delete.

    Old postings are deleted by their exact keys (kept in the old block), the old block and summary by
    trace number; staged rows by the exact (trace, batch) keys merged into the new blocks, so a row
    staged after the batch was read stays staged for the next pass.
    """
    block_store.delete_finalized(conn, [(no, batch.old_postings.get(t)) for t, no in batch.old_numbers.items()])
    periods.retire(conn, batch.old_numbers.values())  # SQLite: hide old copies sealed into period files
    _delete_traces(conn, (schema.traces,), batch.replaced)
    staging.delete_traces(conn, batch.dropped)
    block_store.delete_staged(conn, batch.staged)
    if not batch.trace_rows:
        return
    numbered = partitions.allocate(conn, [row[4] for row in batch.trace_rows])  # row[4]: start_ns
    partitions.ensure_days(conn, {partitions.day_of_no(no) for no in numbered})
    cols = ",".join(f'"{c}"' for c in (*_TRACE_COLUMNS, "trace_no"))
    _multi_row(conn, f"INSERT INTO {schema.traces.name} ({cols}) VALUES ", len(_TRACE_COLUMNS) + 1,
               [(*row, no) for row, no in zip(batch.trace_rows, numbered)])
    numbers = {row[0]: no for row, no in zip(batch.trace_rows, numbered)}
    order = sorted(numbers, key=numbers.get)
    _insert_many(conn, schema.trace_blocks, ("trace_no", "data"), [(numbers[t], batch.blocks[t]) for t in order])
    block_store.insert_postings(conn, [(numbers[t], batch.postings[t]) for t in order])


def write_tombstones(conn: Connection, tombstones: list[tuple]) -> None:
    """Record traces tail sampling dropped: (trace_id, start_ns, dropped_ns)."""
    _insert_many(conn, schema.dropped_traces, _TOMBSTONE_COLUMNS, tombstones)
