"""Trace finalization: turn quiet traces' raw spans into summaries, statistics and edges.

Two entry points, both called by the consumer:

* :func:`on_spans_stored` runs inside the ingest transaction with the spans
  that were *newly* inserted, so per-span statistics and LLM usage count every
  span exactly once however often a stream entry is redelivered.
* :func:`finalize_ready` claims traces that have been quiet for the quiet
  period, with a lease so two collectors never assemble the same trace at
  once, and writes the ``traces`` row, its search rows, the spans' assembly
  columns, trace-scope statistics and dependency edges in one transaction.

A late span re-queues its trace. Re-finalization is exact: the trace-scope
sample of the previous ``traces`` row is subtracted before the new one is
added, and dependency edges apply only the difference between the spans
assembled last time (``spans.depth`` is set) and the spans present now.
"""

from __future__ import annotations

import importlib
import json
import logging
import time
from collections import defaultdict
from typing import Any, Iterable

from sqlalchemy import update
from sqlalchemy.engine import Connection, Engine

from . import dependencies, sampling, stats
from .assembler import assemble
from .storage import schema

log = logging.getLogger(__name__)

MAX_TRACES_PER_CALL = 1000
LEASE_NS = 60 * 1_000_000_000  # a claim older than this belongs to a collector that died
_IN_CHUNK = 1000

_counters = {"finalized": 0, "refinalized": 0, "failed": 0}


def counters() -> dict[str, int]:
    """Traces finalized, re-finalized and failed (assembly raised) in this process."""
    return dict(_counters)


# --------------------------------------------------------------------------- ingest side


def _llm_usage_module():
    try:
        return importlib.import_module("collector_worker.llm_usage")
    except ModuleNotFoundError as exc:
        if exc.name != "collector_worker.llm_usage":
            raise
        return None


def on_spans_stored(conn: Connection, new_spans: list[dict]) -> None:
    """Count newly stored spans into span statistics and LLM usage (inside the ingest transaction)."""
    if not new_spans:
        return
    stats.record_spans(conn, new_spans, scope="span")
    module = _llm_usage_module()
    if module is not None:
        module.record_llm_usage(conn, new_spans)


# --------------------------------------------------------------------------- finalizer side
#
# The finalizer side is written as plain SQL for the driver (identical text on
# SQLite and PostgreSQL, positional parameters, executemany for row sets): one
# claimed batch of up to MAX_TRACES_PER_CALL traces becomes a handful of
# statements, and the expression layer's per-row parameter handling would cost
# more than the database work.


def _chunks(items: list, size: int = _IN_CHUNK) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _in_list(conn: Connection, n: int) -> str:
    return "(" + ",".join([_mark(conn)] * n) + ")"


def claim(engine: Engine, consumer_name: str, now_ns: int, quiet_cutoff_ns: int,
          limit: int = MAX_TRACES_PER_CALL) -> list[tuple[str, int]]:
    """Lease up to ``limit`` quiet traces to ``consumer_name``; return (trace_id, last_seen_ns) claimed.

    One conditional UPDATE … RETURNING, oldest traces first. On PostgreSQL the
    candidate rows are locked with SKIP LOCKED, so collectors claiming at the
    same moment take disjoint sets instead of queueing behind one another for
    the same rows, and the lease condition is re-checked after any wait. On
    SQLite the UPDATE runs under the database's single write lock, so the next
    claimer already sees the rows leased and moves on to the following ones.
    Either way a trace is leased to one collector at a time.
    """
    until = now_ns + LEASE_NS
    m = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    ready = f"last_seen_ns <= {m} AND (claimed_until_ns IS NULL OR claimed_until_ns < {m})"
    lock = " FOR UPDATE SKIP LOCKED" if engine.dialect.name == "postgresql" else ""
    sql = (f"UPDATE {schema.pending_traces.name} SET claimed_by = {m}, claimed_until_ns = {m} "
           f"WHERE trace_id IN (SELECT trace_id FROM {schema.pending_traces.name} WHERE {ready} "
           f"ORDER BY last_seen_ns LIMIT {m}{lock}) AND {ready} "
           f"RETURNING trace_id, last_seen_ns")
    params = (consumer_name, until, quiet_cutoff_ns, now_ns, int(limit), quiet_cutoff_ns, now_ns)
    with engine.begin() as conn:
        rows = conn.exec_driver_sql(sql, params).fetchall()
    return sorted((r[0], int(r[1])) for r in rows)


def release(engine: Engine, consumer_name: str, trace_ids: list[str]) -> None:
    """Give leases back (after a failed batch) so another pass can retry at once."""
    p = schema.pending_traces
    with engine.begin() as conn:
        for chunk in _chunks(trace_ids):
            conn.execute(update(p).where(p.c.trace_id.in_(chunk), p.c.claimed_by == consumer_name)
                         .values(claimed_by=None, claimed_until_ns=None))


def finalize_ready(engine: Engine, settings: Any, consumer_name: str, now_ns: int | None = None) -> int:
    """Finalize up to :data:`MAX_TRACES_PER_CALL` traces quiet for ``settings.quiet_period``.

    Returns how many traces were finalized (or dropped by tail sampling).
    """
    now_ns = time.time_ns() if now_ns is None else int(now_ns)
    cutoff = now_ns - int(float(settings.quiet_period) * 1e9)
    claimed = claim(engine, consumer_name, now_ns, cutoff)
    if not claimed:
        return 0
    try:
        with engine.begin() as conn:
            finalize_traces(conn, settings, claimed, now_ns)
    except Exception:
        release(engine, consumer_name, [t for t, _ in claimed])
        raise
    return len(claimed)


_SPAN_COLUMNS = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns",
                 "status_code", "attributes", "resource", "depth", "self_time_ns", "critical_path")
_PREVIOUS_COLUMNS = ("trace_id", "root_service", "root_operation", "start_ns", "duration_ns", "error_count",
                     "version")
_TRACE_COLUMNS = ("trace_id", "root_span_id", "root_service", "root_operation", "start_ns", "end_ns",
                  "duration_ns", "span_count", "error_count", "services", "service_count", "incomplete",
                  "clock_skew_ns", "warnings", "finalized_ns", "version")
_OPERATION_COLUMNS = ("trace_id", "service", "operation", "start_ns", "error")
_TAG_COLUMNS = ("trace_id", "key", "value", "value_num", "start_ns")

_loads = json.loads
_dumps = json.JSONEncoder(separators=(",", ":"), default=str).encode


def _rows(conn: Connection, sql: str, params: tuple) -> list[tuple]:
    """All rows of a query through the driver's own cursor (inside the caller's transaction).

    For tens of thousands of span rows per batch the result wrapping of the
    expression layer costs more than the query itself.
    """
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return cursor.fetchall()
    finally:
        cursor.close()


def _load_spans(conn: Connection, trace_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Spans of every claimed trace, a few IN-list queries for the whole batch; attributes parsed once."""
    by_trace: dict[str, list[dict[str, Any]]] = defaultdict(list)
    columns = ",".join(_SPAN_COLUMNS)
    loads = _loads
    for chunk in _chunks(trace_ids):
        sql = f"SELECT {columns} FROM {schema.spans.name} WHERE trace_id IN {_in_list(conn, len(chunk))}"
        for row in _rows(conn, sql, tuple(chunk)):
            span = dict(zip(_SPAN_COLUMNS, row))
            try:
                attributes = loads(row[9] or "{}")
            except ValueError:
                attributes = {}
            span["attributes"] = attributes if type(attributes) is dict else {}
            by_trace[row[0]].append(span)  # resource stays JSON text; the assembler parses it lazily
    return by_trace


def _load_previous(conn: Connection, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The current ``traces`` rows of the batch (re-finalizations): what must be subtracted and replaced."""
    out = {}
    columns = ",".join(_PREVIOUS_COLUMNS)
    for chunk in _chunks(trace_ids):
        sql = f"SELECT {columns} FROM {schema.traces.name} WHERE trace_id IN {_in_list(conn, len(chunk))}"
        for row in conn.exec_driver_sql(sql, tuple(chunk)):
            out[row[0]] = dict(zip(_PREVIOUS_COLUMNS, row))
    return out


def _trace_row(trace_id: str, s: dict[str, Any], version: int, now_ns: int) -> tuple:
    """The ``traces`` row of an assembly summary, in ``_TRACE_COLUMNS`` order."""
    return (
        trace_id, s["root_span_id"], s["root_service"][:255], s["root_operation"][:512], s["start_ns"],
        s["end_ns"], s["duration_ns"], s["span_count"], s["error_count"], _dumps(s["services"]),
        s["service_count"], bool(s["incomplete"]), int(s["clock_skew_ns"]), _dumps(s["warnings"]), now_ns,
        version,
    )


def finalize_traces(conn: Connection, settings: Any, claimed: list[tuple[str, int]], now_ns: int) -> None:
    """Assemble and write the claimed traces inside the caller's transaction."""
    trace_ids = sorted(t for t, _ in claimed)
    spans_by_trace = _load_spans(conn, trace_ids)
    previous = _load_previous(conn, trace_ids)

    acc = stats.Accumulator()
    edges: dict = defaultdict(lambda: [0, 0, 0])
    trace_rows, op_rows, tag_rows, span_updates, dropped = [], [], [], [], []
    for trace_id in trace_ids:
        spans = spans_by_trace.get(trace_id)
        old = previous.get(trace_id)
        if not spans:  # spans deleted meanwhile (retention); nothing to assemble
            if old is not None:
                dropped.append(trace_id)
            continue
        try:
            a = assemble(spans)
        except Exception:  # never let one malformed trace block the others
            _counters["failed"] += 1
            log.exception("cannot assemble trace %s; its spans stay stored unassembled", trace_id)
            continue
        summary = a.summary
        if old is not None:
            acc.add("trace", old["root_service"], old["root_operation"], int(old["start_ns"]),
                    int(old["duration_ns"]), int(old["error_count"]) > 0, weight=-1)
            _counters["refinalized"] += 1
        acc.add("trace", summary["root_service"], summary["root_operation"], summary["start_ns"],
                summary["duration_ns"], summary["error_count"] > 0)
        assembled_before = [s for s in spans if s["depth"] is not None]
        dependencies.edge_difference(assembled_before, spans, into=edges)
        _counters["finalized"] += 1

        if not sampling.decide(settings, trace_id, summary):
            dropped.append(trace_id)
            continue
        trace_rows.append(_trace_row(trace_id, summary, int(old["version"]) + 1 if old else 1, now_ns))
        start = summary["start_ns"]
        op_rows.extend((trace_id, svc[:255], op[:512], start, bool(err)) for svc, op, err in a.operations)
        tag_rows.extend((trace_id, k, v, num, start) for k, v, num in a.tags)
        depth, self_time, critical = a.depth, a.self_time_ns, a.critical_path
        for s in spans:
            span_id = s["span_id"]
            fields = (depth.get(span_id, 0), self_time.get(span_id, 0), span_id in critical)
            if (s["depth"], s["self_time_ns"], bool(s["critical_path"])) != fields:
                span_updates.append(fields + (trace_id, span_id))

    # Key order: each index is filled front to back (fewer pages touched), and concurrent writers lock alike.
    # Keys are unique within a batch, so the sort never compares the payload columns.
    op_rows.sort()
    tag_rows.sort()
    _write(conn, sorted(previous), trace_rows, op_rows, tag_rows, span_updates, dropped)
    acc.flush(conn)
    dependencies.record_edges(conn, edges)
    _settle_pending(conn, claimed)


def _insert_many(conn: Connection, table, columns: tuple[str, ...], rows: list[tuple]) -> None:
    if rows:
        m = _mark(conn)
        cols = ",".join(f'"{c}"' for c in columns)
        conn.exec_driver_sql(f"INSERT INTO {table.name} ({cols}) VALUES ({','.join([m] * len(columns))})", rows)


def _delete_traces(conn: Connection, tables, trace_ids: list[str]) -> None:
    for chunk in _chunks(trace_ids):
        in_list = _in_list(conn, len(chunk))
        for table in tables:
            conn.exec_driver_sql(f"DELETE FROM {table.name} WHERE trace_id IN {in_list}", tuple(chunk))


def _write(conn: Connection, replaced: list[str], trace_rows: list[tuple], op_rows: list[tuple],
           tag_rows: list[tuple], span_updates: list[tuple], dropped: list[str]) -> None:
    """Replace the finalizer's rows of the batch; only traces finalized before have rows to delete."""
    t, ops, tags, s = schema.traces, schema.trace_operations, schema.trace_tags, schema.spans
    _delete_traces(conn, (ops, tags, t), replaced)
    _delete_traces(conn, (s,), dropped)
    _insert_many(conn, t, _TRACE_COLUMNS, trace_rows)
    _insert_many(conn, ops, _OPERATION_COLUMNS, op_rows)
    _insert_many(conn, tags, _TAG_COLUMNS, tag_rows)
    if span_updates:
        m = _mark(conn)
        conn.exec_driver_sql(
            f"UPDATE {s.name} SET depth={m}, self_time_ns={m}, critical_path={m} WHERE trace_id={m} AND span_id={m}",
            span_updates,
        )


def _settle_pending(conn: Connection, claimed: list[tuple[str, int]]) -> None:
    """Delete pending rows no span touched since the claim; a late span leaves its row to re-queue."""
    p, m = schema.pending_traces.name, _mark(conn)
    conn.exec_driver_sql(f"DELETE FROM {p} WHERE trace_id = {m} AND last_seen_ns = {m}", list(claimed))
    for chunk in _chunks([t for t, _ in claimed]):
        conn.exec_driver_sql(f"UPDATE {p} SET claimed_by = NULL, claimed_until_ns = NULL "
                             f"WHERE trace_id IN {_in_list(conn, len(chunk))}", tuple(chunk))
