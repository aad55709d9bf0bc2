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

import contextlib
import importlib
import itertools
import json
import logging
import threading
import time
from collections import defaultdict
from typing import Any, Iterable

from sqlalchemy import update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from . import dependencies, forwarding, sampling, stats
from .assembler import assemble
from .recent_spans import RecentSpans
from .storage import block_dictionary, block_store, blocks, partitions, periods, schema, search_keys
from .storage.writer import take_write_lock, write_lock

log = logging.getLogger(__name__)

MAX_TRACES_PER_CALL = 1000
LEASE_NS = 60 * 1_000_000_000  # a claim older than this belongs to a collector that died
_IN_CHUNK = 1000

_counters = {"finalized": 0, "refinalized": 0, "failed": 0, "late_dropped": 0, "leases_lost": 0}


def counters() -> dict[str, int]:
    """Traces finalized, re-finalized, failed (assembly raised), late spans of dropped traces and traces whose
    leases another collector took over before this one wrote them, in this process."""
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
    SpanFigures(new_spans).write(conn)


class SpanFigures:
    """What :func:`on_spans_stored` writes for a list of spans, computed ahead (outside the write lock).

    The consumer computes it for all spans of a batch before its transaction
    and writes it when every span turned out new (the usual case); otherwise
    it calls :func:`on_spans_stored` with the spans that were.
    """

    __slots__ = ("acc", "usage", "module")

    def __init__(self, spans: list[dict]) -> None:
        self.acc = stats.Accumulator()
        self.acc.add_spans("span", spans)
        self.module = _llm_usage_module()
        self.usage = self.module.aggregate_usage(spans) if self.module is not None and spans else []

    def write(self, conn: Connection) -> None:
        self.acc.flush(conn)
        if self.usage:
            self.module.write_usage(conn, self.usage)


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
    with write_lock(engine), engine.begin() as conn:
        return _claim(conn, consumer_name, now_ns, quiet_cutoff_ns, limit)


def _claim(conn: Connection, consumer_name: str, now_ns: int, quiet_cutoff_ns: int,
           limit: int = MAX_TRACES_PER_CALL) -> list[tuple[str, int]]:
    """:func:`claim` inside the caller's write transaction."""
    until = now_ns + LEASE_NS
    m = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    ready = f"last_seen_ns <= {m} AND (claimed_until_ns IS NULL OR claimed_until_ns < {m})"
    lock = " FOR UPDATE SKIP LOCKED" if conn.dialect.name == "postgresql" else ""
    sql = (f"UPDATE {schema.pending_traces.name} SET claimed_by = {m}, claimed_until_ns = {m} "
           f"WHERE trace_id IN (SELECT trace_id FROM {schema.pending_traces.name} WHERE {ready} "
           f"ORDER BY last_seen_ns LIMIT {m}{lock}) AND {ready} "
           f"RETURNING trace_id, last_seen_ns")
    params = (consumer_name, until, quiet_cutoff_ns, now_ns, int(limit), quiet_cutoff_ns, now_ns)
    rows = conn.exec_driver_sql(sql, params).fetchall()
    return sorted((r[0], int(r[1])) for r in rows)


def next_ready_ns(engine: Engine, quiet_period_ns: int, now_ns: int | None = None) -> int | None:
    """When the next unleased pending trace becomes quiet (unix ns; in the past if one is ready), or None."""
    now_ns = time.time_ns() if now_ns is None else int(now_ns)
    m = "?" if engine.dialect.paramstyle == "qmark" else "%s"
    sql = (f"SELECT min(last_seen_ns) FROM {schema.pending_traces.name} "
           f"WHERE claimed_until_ns IS NULL OR claimed_until_ns < {m}")
    with engine.connect() as conn:
        oldest = conn.exec_driver_sql(sql, (now_ns,)).scalar()
    return None if oldest is None else int(oldest) + int(quiet_period_ns)


def release(engine: Engine, consumer_name: str, trace_ids: list[str]) -> None:
    """Give leases back (after a failed batch) so another pass can retry at once."""
    p = schema.pending_traces
    with write_lock(engine), engine.begin() as conn:
        for chunk in _chunks(trace_ids):
            conn.execute(update(p).where(p.c.trace_id.in_(chunk), p.c.claimed_by == consumer_name)
                         .values(claimed_by=None, claimed_until_ns=None))


def release_own(engine: Engine, consumer_name: str) -> int:
    """Give back every lease held under ``consumer_name``; how many.

    A collector calls it as it starts: leases under its own name belong to an
    earlier process of that name that died (consumer names are unique among
    live collectors, as the stream's pending entries require), so they are
    finalized now instead of after :data:`LEASE_NS`.
    """
    p, m = schema.pending_traces.name, "?" if engine.dialect.paramstyle == "qmark" else "%s"
    with write_lock(engine), engine.begin() as conn:
        result = conn.exec_driver_sql(f"UPDATE {p} SET claimed_by = NULL, claimed_until_ns = NULL "
                                      f"WHERE claimed_by = {m}", (consumer_name,))
        return max(result.rowcount or 0, 0)


class ClaimAhead:
    """Leases a finalizer thread took for its next passes inside the write transaction of the last one.

    On SQLite the ingest and finalizer threads take turns at one write lock.
    Leasing the next two batches in the transaction that writes the current
    one saves a wait for that lock per batch, and lets a pass that finds the
    lock taken (the ingest thread is writing) assemble the second batch
    meanwhile instead of waiting idle. Held leases are used by the next
    :func:`finalize_ready` given this object, or given back with :meth:`release`.
    """

    __slots__ = ("claimed", "claimed_ns")

    def __init__(self) -> None:
        self.claimed: list[tuple[str, int]] = []
        self.claimed_ns = 0

    def __bool__(self) -> bool:
        return bool(self.claimed)

    def take(self, now_ns: int, limit: int = MAX_TRACES_PER_CALL) -> list[tuple[str, int]] | None:
        """Up to ``limit`` held leases (the rest stay held), or None when they are too old to trust.

        Leases older than half their lifetime are kept for :meth:`release`
        rather than used: another collector may take them once they expire.
        """
        if not self.claimed or now_ns - self.claimed_ns >= LEASE_NS // 2:
            return None
        taken, self.claimed = self.claimed[:limit], self.claimed[limit:]
        return taken

    def release(self, engine: Engine, consumer_name: str) -> None:
        claimed, self.claimed = self.claimed, []
        if claimed:
            release(engine, consumer_name, [t for t, _ in claimed])

    def hold(self, claimed: list[tuple[str, int]], leased_ns: int) -> None:
        """Hold ``claimed`` (leased at ``leased_ns``) again, beside what is held (the caller serializes)."""
        if not claimed:
            return
        self.claimed_ns = min(self.claimed_ns, leased_ns) if self.claimed else leased_ns
        self.claimed = sorted(self.claimed + claimed)


def give_back(engine: Engine, consumer_name: str, claimed: list[tuple[str, int]], leased_ns: int,
              ahead: ClaimAhead | None = None, lock: Any = None) -> None:
    """Give back the leases of a batch that failed; when the database refuses that too, hold them in ``ahead``.

    A failed write leaves its leases as they were (the transaction rolled back), so they are still this
    collector's; held, they are retried by the next pass (or given back once too old) instead of waiting
    :data:`LEASE_NS` for another pass to take them. ``lock`` guards ``ahead`` when two threads share it.
    """
    if not claimed:
        return
    try:
        release(engine, consumer_name, [t for t, _ in claimed])
    except Exception as exc:
        if ahead is None:
            raise
        log.warning("giving back %d finalizer leases failed, holding them for the next pass: %s", len(claimed),
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        with lock if lock is not None else contextlib.nullcontext():
            ahead.hold(claimed, leased_ns)


_TRANSIENT = (OperationalError, InterfaceError, DisconnectionError)  # the database, not the batch: retried whole


def _left_to_another(lost: "LeaseLost", claimed: list[tuple[str, int]] = ()) -> list[tuple[str, int]]:
    """Log traces whose leases another collector took over; the rest of ``claimed``, to write without them."""
    _counters["leases_lost"] += len(lost.trace_ids)
    log.warning("a finalize pass outlived its leases: %d traces were taken over by another collector and are "
                "left to it", len(lost.trace_ids))
    gone = set(lost.trace_ids)
    return [lease for lease in claimed if lease[0] not in gone]


def _one_by_one(engine: Engine, settings: Any, consumer_name: str, claimed: list[tuple[str, int]],
                ahead: ClaimAhead | None = None, lock: Any = None) -> int:
    """Finalize the traces of a batch whose write the database refused, each in a transaction of its own.

    A refusal that depends on the data (a value out of range, say) would otherwise come back with the same
    oldest traces on every pass and stop all finalization. A trace refused on its own is left unassembled,
    as one whose assembly fails (its pending row goes; a late span queues it again). A database error meanwhile
    gives back (or holds) the leases not yet done and raises. Returns how many traces were written.
    """
    done = 0
    for index, lease in enumerate(claimed):
        try:
            batch = _prepare(engine, settings, [lease], time.time_ns(), None)
            with write_lock(engine), engine.begin() as conn:
                batch.write(conn, consumer_name)
            done += 1
        except _TRANSIENT:
            give_back(engine, consumer_name, claimed[index:], time.time_ns() - LEASE_NS // 2, ahead, lock)
            raise
        except LeaseLost as exc:
            _left_to_another(exc)
        except Exception:
            _counters["failed"] += 1
            log.exception("cannot write the finalized trace %s; its spans stay stored unassembled", lease[0])
            try:
                with write_lock(engine), engine.begin() as conn:
                    _check_leases(conn, consumer_name, [lease])
                    _settle_pending(conn, [lease])
            except LeaseLost as exc:
                _left_to_another(exc)
            except Exception:
                give_back(engine, consumer_name, claimed[index:], time.time_ns() - LEASE_NS // 2, ahead, lock)
                raise
    return done


def _lease_batch(engine: Engine, consumer_name: str, ahead: ClaimAhead | None, now_ns: int, quiet_ns: int,
                 lock: Any = None) -> tuple[list[tuple[str, int]], int]:
    """This pass's leases and when they were taken: those held in ``ahead``, topped up by a claim to a batch.

    Held leases too old to trust are given back first. If the claim fails, what was taken from ``ahead``
    is held there again (still leased: the next pass uses it). ``lock`` guards ``ahead`` when two threads
    share it.
    """
    guard = lock if lock is not None else contextlib.nullcontext()
    stale: list[tuple[str, int]] = []
    with guard:
        leased_ns = min(ahead.claimed_ns, now_ns) if ahead is not None and ahead.claimed else now_ns
        claimed = ahead.take(now_ns) if ahead is not None else None
        if claimed is None:
            if ahead is not None:
                stale, ahead.claimed = ahead.claimed, []
            claimed, leased_ns = [], now_ns
    if stale:
        release(engine, consumer_name, [t for t, _ in stale])
    if len(claimed) < MAX_TRACES_PER_CALL:  # none held, or a partial batch: top it up
        try:
            more = claim(engine, consumer_name, now_ns, now_ns - quiet_ns, limit=MAX_TRACES_PER_CALL - len(claimed))
        except Exception:
            if ahead is not None:
                with guard:
                    ahead.hold(claimed, leased_ns)
            raise
        claimed = sorted(claimed + more) if claimed else more
    return claimed, leased_ns


def finalize_ready(engine: Engine, settings: Any, consumer_name: str, now_ns: int | None = None,
                   recent: RecentSpans | None = None, ahead: ClaimAhead | None = None) -> int:
    """Finalize up to :data:`MAX_TRACES_PER_CALL` traces quiet for ``settings.quiet_period``.

    Three steps: lease the traces (a short write transaction); read what
    assembly needs and assemble (no write lock held, so ingest in another
    thread keeps writing meanwhile); write every result in one transaction.
    ``recent`` holds spans this process stored lately: a trace whose spans are
    all there is assembled without reading them back (see :class:`RecentSpans`).
    A failure gives the leases back. Returns how many traces were finalized
    (or dropped by tail sampling).

    With ``ahead`` (SQLite only; see :class:`ClaimAhead`) leases it holds are
    finalized first (topped up by a claim when fewer than a batch); when the
    write lock is taken once the batch is assembled, a second held batch is
    assembled meanwhile and written in the same transaction (up to twice
    :data:`MAX_TRACES_PER_CALL` traces then); and the write transaction leases
    the next two batches into ``ahead``.
    """
    explicit_now = now_ns is not None
    now_ns = time.time_ns() if now_ns is None else int(now_ns)
    quiet_ns = int(float(settings.quiet_period) * 1e9)
    if ahead is not None and engine.dialect.name != "sqlite":
        ahead = None  # other databases have no shared write lock to save waits on
    claimed, leased_ns = _lease_batch(engine, consumer_name, ahead, now_ns, quiet_ns)
    if not claimed:
        return 0
    taken = [claimed]
    kept = None  # leases held ahead past this call, once known
    try:
        batches = [_prepare(engine, settings, claimed, now_ns, recent)]

        def assemble_next() -> None:  # the ingest thread is writing: assemble the next held batch meanwhile
            spare = ahead.take(now_ns)
            if spare:
                taken.append(spare)
                batches.append(_prepare(engine, settings, spare, now_ns, recent))

        lock = write_lock(engine)
        take_write_lock(lock, assemble_next if ahead is not None and ahead.claimed else None)
        kept = ahead.claimed if ahead is not None else []
        try:
            with engine.begin() as conn:
                for batch in batches:
                    batch.write(conn, consumer_name)
                if ahead is not None:
                    next_ns = now_ns if explicit_now else time.time_ns()
                    ahead.claimed = kept + _claim(conn, consumer_name, next_ns, next_ns - quiet_ns,
                                                  limit=2 * MAX_TRACES_PER_CALL - len(kept))
                    ahead.claimed_ns = min(ahead.claimed_ns, next_ns) if kept else next_ns
        finally:
            lock.__exit__(None, None, None)
    except Exception as exc:
        if ahead is not None and kept is not None:
            ahead.claimed = kept  # leases taken by the transaction that failed were rolled back with it
        leases = [lease for part in taken for lease in part]
        if kept is None or isinstance(exc, _TRANSIENT):  # not written yet, or the database's trouble
            give_back(engine, consumer_name, leases, min(leased_ns, now_ns), ahead)
            raise
        if isinstance(exc, LeaseLost):  # the rest is still this collector's: written without the lost ones
            leases = _left_to_another(exc, leases)
        else:
            log.warning("writing %d finalized traces failed, writing them one by one: %s", len(leases), exc)
        return _one_by_one(engine, settings, consumer_name, sorted(leases), ahead)
    return sum(len(part) for part in taken)


class WritePipeline:
    """Finalization on SQLite with the writes on a thread of their own (``contrail-finalizer-write``).

    :meth:`step` leases a batch (from ``ahead`` when it holds leases, see
    :class:`ClaimAhead`), reads and assembles it, waits for the previous
    batch's write to finish and hands this one over; so one batch is assembled
    while the previous is written (SQLite works outside the interpreter lock).
    Each write transaction leases up to two batches ahead; they are put in
    ``ahead`` only after it commits, so a batch is never assembled from a
    snapshot that misses the write that re-queued one of its traces. A failed
    write gives its leases back; ``on_written(n)`` is called after each
    committed batch. Batches are disjoint (a lease is held by one batch at a
    time), so assembling one while another is written reads nothing the write
    changes.
    """

    def __init__(self, engine: Engine, settings: Any, consumer_name: str, recent: RecentSpans | None,
                 ahead: ClaimAhead, on_written: Any = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.engine, self.settings, self.name, self.recent, self.ahead = engine, settings, consumer_name, recent, ahead
        self.on_written = on_written
        self._lock = threading.Lock()  # guards ``ahead`` between the two threads
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="contrail-finalizer-write")
        self._pending: Any = None

    def step(self) -> int:
        """One batch leased, assembled and handed to the writer; how many traces (0: none was quiet)."""
        now_ns = time.time_ns()
        quiet_ns = int(float(self.settings.quiet_period) * 1e9)
        if self._pending is not None and not self.ahead.claimed:
            self.wait()  # its transaction leases what this pass finalizes
        claimed, leased_ns = _lease_batch(self.engine, self.name, self.ahead, now_ns, quiet_ns, self._lock)
        if not claimed:
            return 0
        try:
            batch = _prepare(self.engine, self.settings, claimed, now_ns, self.recent)
        except Exception:
            give_back(self.engine, self.name, claimed, leased_ns, self.ahead, self._lock)
            raise
        self.wait()
        self._pending = self._pool.submit(self._write, batch, claimed, quiet_ns, leased_ns)
        return len(claimed)

    def _write(self, batch: "FinalizedBatch", claimed: list[tuple[str, int]], quiet_ns: int,
               leased_ns: int | None = None) -> int:
        try:
            with write_lock(self.engine), self.engine.begin() as conn:
                batch.write(conn, self.name)
                with self._lock:
                    room = 2 * MAX_TRACES_PER_CALL - len(self.ahead.claimed)
                next_ns = time.time_ns()
                leased = _claim(conn, self.name, next_ns, next_ns - quiet_ns, limit=room) if room > 0 else []
        except _TRANSIENT:
            # The rolled-back transaction left the leases as they were: give them back, or hold them for the
            # next pass when the database refuses that too (so they are not stuck until they expire).
            give_back(self.engine, self.name, claimed, time.time_ns() - LEASE_NS if leased_ns is None else leased_ns,
                      self.ahead, self._lock)
            raise
        except Exception as exc:  # refused for what the batch holds (or leases lost): the traces one by one
            if isinstance(exc, LeaseLost):
                claimed = _left_to_another(exc, claimed)
            else:
                log.warning("writing %d finalized traces failed, writing them one by one: %s", len(claimed), exc)
            done = _one_by_one(self.engine, self.settings, self.name, claimed, self.ahead, self._lock)
            if self.on_written is not None:
                self.on_written(done)
            return done
        if leased:
            with self._lock:
                if self.ahead.claimed:
                    self.ahead.claimed = self.ahead.claimed + leased
                else:
                    self.ahead.claimed, self.ahead.claimed_ns = leased, next_ns
        if self.on_written is not None:
            self.on_written(len(claimed))
        return len(claimed)

    def wait(self) -> None:
        """Wait for the batch being written; a failed write is logged (its leases were given back)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        try:
            pending.result()
        except Exception as exc:  # the traces stay pending; a later pass retries them
            log.warning("writing finalized traces failed, will retry: %s", exc)

    def close(self) -> None:
        self.wait()
        self._pool.shutdown(wait=True)


def _prepare(engine: Engine, settings: Any, claimed: list[tuple[str, int]], now_ns: int,
             recent: RecentSpans | None) -> "FinalizedBatch":
    with engine.connect() as conn:
        batch = prepare_batch(conn, settings, claimed, now_ns, recent)
        conn.rollback()  # end the read transaction before writing on another connection
    return batch


# Staging columns read back for assembly and the block (``writer.SPAN_COLUMNS`` without duration).
_SPAN_COLUMNS = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns",
                 "status_code", "attributes", "resource", "status_message", "events", "links", "scope",
                 "received_ns")
_PREVIOUS_COLUMNS = ("trace_id", "root_service", "root_operation", "start_ns", "duration_ns", "error_count",
                     "version", "trace_no")
_TRACE_COLUMNS = ("trace_id", "root_span_id", "root_service", "root_operation", "start_ns", "end_ns",
                  "duration_ns", "span_count", "error_count", "services", "service_count", "incomplete",
                  "clock_skew_ns", "warnings", "finalized_ns", "version")
_TOMBSTONE_COLUMNS = ("trace_id", "start_ns", "dropped_ns")

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
    """Staging rows of every claimed trace, a few IN-list queries for the whole batch; attributes parsed once."""
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
            span["depth"] = None
            by_trace[row[0]].append(span)  # resource stays JSON text; the assembler parses it lazily
    return by_trace


def _load_previous(conn: Connection, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
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


def _trace_row(trace_id: str, s: dict[str, Any], version: int, now_ns: int) -> tuple:
    """The ``traces`` row of an assembly summary, in ``_TRACE_COLUMNS`` order."""
    return (
        trace_id, s["root_span_id"], s["root_service"][:255], s["root_operation"][:512], s["start_ns"],
        s["end_ns"], s["duration_ns"], s["span_count"], s["error_count"], _dumps(s["services"]),
        s["service_count"], bool(s["incomplete"]), int(s["clock_skew_ns"]), _dumps(s["warnings"]), now_ns,
        version,
    )


def _span_counts(conn: Connection, trace_ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for chunk in _chunks(trace_ids):
        sql = (f"SELECT trace_id, count(*) FROM {schema.spans.name} WHERE trace_id IN {_in_list(conn, len(chunk))} "
               f"GROUP BY trace_id")
        counts.update((r[0], int(r[1])) for r in _rows(conn, sql, tuple(chunk)))
    return counts


def prepare_batch(conn: Connection, settings: Any, claimed: list[tuple[str, int]], now_ns: int,
                  recent: RecentSpans | None = None) -> "FinalizedBatch":
    """Read the claimed traces (from ``recent`` where exact, else the database) and assemble them.

    A trace finalized before is its block's spans merged with its staging rows (a span id already in
    the block keeps the block's copy, so a redelivered span never appears twice).
    """
    trace_ids = sorted(t for t, _ in claimed)
    previous = _load_previous(conn, trace_ids)
    staged: dict[str, list[dict[str, Any]]] = {}
    if recent is not None:
        held = recent.take(trace_ids)
        candidates = [t for t in trace_ids if t in held and t not in previous]
        if candidates:
            counts = _span_counts(conn, candidates)
            for trace_id in candidates:
                if counts.get(trace_id) == len(held[trace_id]):
                    staged[trace_id] = held[trace_id]
        recent.hits += len(staged)
        recent.misses += len(trace_ids) - len(staged)
    missing = [t for t in trace_ids if t not in staged]
    if missing:
        staged.update(_load_spans(conn, missing))
    old_blocks = block_store.read_blocks(conn, [int(p["trace_no"]) for p in previous.values()
                                                 if p.get("trace_no") is not None])
    spans_by_trace: dict[str, list[dict[str, Any]]] = {}
    old_postings: dict[str, Any] = {}
    for trace_id in trace_ids:
        old = previous.get(trace_id)
        data = old_blocks.get(int(old["trace_no"])) if old is not None and old.get("trace_no") is not None else None
        if data is None:
            spans_by_trace[trace_id] = staged.get(trace_id, [])
            continue
        old_spans = blocks.decode(data)
        old_postings[trace_id] = block_store.postings_of(conn, old_spans)
        spans_by_trace[trace_id] = blocks.merge(old_spans, staged.get(trace_id, []))
    batch = assemble_batch(settings, claimed, trace_ids, spans_by_trace, previous, now_ns)
    batch.staged = [(t, s["span_id"]) for t in trace_ids if t not in batch.kept for s in staged.get(t, ())]
    batch.old_postings = old_postings
    batch.old_numbers = {t: int(p["trace_no"]) for t, p in previous.items() if p.get("trace_no") is not None}
    batch.dictionary = block_dictionary.for_encoding(conn)
    batch.encode(search_keys.lookup(conn, batch._names()))
    if batch.samples:  # no dictionary yet: these blocks are what one is trained on
        block_dictionary.add_samples(conn.engine, batch.samples)
        batch.samples = []
    return batch


class FinalizedBatch:
    """Everything one finalization batch writes, computed before the write transaction.

    :meth:`encode` turns the assemblies into blocks and postings once their names have ids (read before
    the write; names new to the database are added by :meth:`write`, which encodes those traces then).
    """

    __slots__ = ("claimed", "replaced", "trace_rows", "assembled", "dropped", "acc", "edges", "tombstones",
                 "staged", "old_postings", "old_numbers", "kept", "blocks", "postings", "dictionary", "samples")

    def _names(self) -> set[str]:
        wanted: set[str] = set()
        for _, _, a in self.assembled:
            wanted |= search_keys.names_in(a.operations, search_keys.search_tags(a))
        return wanted

    def encode(self, ids: dict[str, int]) -> None:
        """Each assembled trace whose names all have ids: its postings and its block (the rest wait)."""
        waiting = []
        for trace_id, spans, a in self.assembled:
            try:
                self.postings[trace_id] = search_keys.postings(a.operations, search_keys.search_tags(a), ids)
            except KeyError:  # a name never seen: added by the write transaction
                waiting.append((trace_id, spans, a))
                continue
            body = blocks.pack(spans, a.depth, a.self_time_ns, a.critical_path)
            self.blocks[trace_id] = blocks.compress(body, self.dictionary)
            if self.dictionary is None:
                self.samples.append(body)
        self.assembled = waiting

    def write(self, conn: Connection, consumer_name: str) -> None:
        """Write the batch in ``conn``'s transaction, first checking ``consumer_name`` still holds every lease."""
        _check_leases(conn, consumer_name, self.claimed)
        if self.assembled:  # traces with names new to the database: add them, in this transaction
            self.encode(search_keys.add_names(conn, self._names()))
        if self.blocks:
            block_dictionary.store(conn, self.dictionary)
        _write(conn, self)
        _insert_many(conn, schema.dropped_traces, _TOMBSTONE_COLUMNS, self.tombstones)
        self.acc.flush(conn)
        dependencies.record_edges(conn, self.edges)
        _settle_pending(conn, self.claimed)
        forwarding.on_finalized(conn, self)  # forward_mode=kept: the kept spans, once this transaction commits


def assemble_batch(settings: Any, claimed: list[tuple[str, int]], trace_ids: list[str],
                   spans_by_trace: dict[str, list[dict[str, Any]]], previous: dict[str, dict[str, Any]],
                   now_ns: int) -> FinalizedBatch:
    """Assemble every claimed trace and gather the rows to write (no database access)."""
    acc = stats.Accumulator()
    edges: dict = defaultdict(lambda: [0, 0, 0])
    trace_rows, assembled, dropped, tombstones, kept = [], [], [], [], set()
    for trace_id in trace_ids:
        spans = spans_by_trace.get(trace_id)
        old = previous.get(trace_id)
        if old is not None and old.get("dropped"):
            # Tail sampling dropped this trace when it was finalized; its trace-scope figures are counted.
            # A late span goes the same way (its span-scope figures were counted at ingest).
            dropped.append(trace_id)
            _counters["late_dropped"] += 1
            continue
        if not spans:  # spans deleted meanwhile (retention); nothing to assemble
            if old is not None:
                dropped.append(trace_id)
            continue
        try:
            a = assemble(spans)
        except Exception:  # never let one malformed trace block the others
            _counters["failed"] += 1
            log.exception("cannot assemble trace %s; its spans stay stored unassembled", trace_id)
            kept.add(trace_id)
            continue
        summary = a.summary
        cap = getattr(settings, "trace_span_limit", None)
        if cap and len(spans) >= cap:  # ingest stops storing spans of the trace there (writer.store_spans)
            summary["warnings"] = [*summary["warnings"], {
                "code": "truncated", "message": f"the trace reached trace_span_limit ({cap} spans); "
                "later spans of it were dropped"}]
        if old is not None:
            acc.add("trace", old["root_service"], old["root_operation"], int(old["start_ns"]),
                    int(old["duration_ns"]), int(old["error_count"]) > 0, weight=-1)
            _counters["refinalized"] += 1
        acc.add("trace", summary["root_service"], summary["root_operation"], summary["start_ns"],
                summary["duration_ns"], summary["error_count"] > 0)
        assembled_before = [s for s in spans if s.get("depth") is not None]  # from the block
        dependencies.edge_difference(assembled_before, spans, into=edges)
        _counters["finalized"] += 1

        if not sampling.decide(settings, trace_id, summary):
            dropped.append(trace_id)
            tombstones.append((trace_id, summary["start_ns"], now_ns))
            continue
        trace_rows.append(_trace_row(trace_id, summary, int(old["version"]) + 1 if old else 1, now_ns))
        assembled.append((trace_id, spans, a))

    batch = FinalizedBatch()
    batch.claimed, batch.replaced, batch.trace_rows = claimed, sorted(previous), trace_rows
    batch.assembled, batch.dropped, batch.acc, batch.edges = assembled, dropped, acc, edges
    batch.tombstones, batch.kept = tombstones, kept
    batch.staged, batch.old_postings, batch.old_numbers, batch.blocks, batch.postings = [], {}, {}, {}, {}
    batch.dictionary, batch.samples = None, []
    return batch


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


def _write(conn: Connection, batch: FinalizedBatch) -> None:
    """Replace the finalizer's rows of the batch; only traces finalized before have rows to delete.

    Old postings are deleted by their exact keys (kept in the old block), the old block and summary by
    trace number; staging rows by the exact (trace, span) keys merged into the new blocks, so a span
    staged after the batch was read stays staged for the next pass.
    """
    block_store.delete_finalized(conn, [(no, batch.old_postings.get(t)) for t, no in batch.old_numbers.items()])
    periods.retire(conn, batch.old_numbers.values())  # SQLite: hide old copies sealed into period files
    _delete_traces(conn, (schema.traces,), batch.replaced)
    _delete_traces(conn, (schema.spans,), batch.dropped)
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


class LeaseLost(Exception):
    """A batch's write found leases it no longer holds: another collector took those traces over."""

    def __init__(self, trace_ids: list[str]) -> None:
        super().__init__(f"{len(trace_ids)} finalizer leases were taken over by another collector")
        self.trace_ids = trace_ids


def _check_leases(conn: Connection, consumer_name: str, claimed: list[tuple[str, int]]) -> None:
    """Raise :class:`LeaseLost` unless ``consumer_name`` still holds the lease of every claimed trace.

    A pass that outlives :data:`LEASE_NS` (a stalled process, a huge batch)
    may find its traces claimed by another collector, which assembles and
    writes them too: their statistics would be counted twice. The check is an
    UPDATE that changes nothing, first in the write transaction, so it takes
    the locks a claim needs (the rows on PostgreSQL, the database's write
    lock on SQLite) and no claim can take a checked trace before the commit.
    """
    if not claimed:
        return
    p, m = schema.pending_traces.name, _mark(conn)
    held: set[str] = set()
    for chunk in _chunks(sorted(t for t, _ in claimed)):
        sql = (f"UPDATE {p} SET claimed_by = claimed_by WHERE claimed_by = {m} "
               f"AND trace_id IN {_in_list(conn, len(chunk))} RETURNING trace_id")
        held.update(r[0] for r in conn.exec_driver_sql(sql, (consumer_name, *chunk)))
    lost = sorted(t for t, _ in claimed if t not in held)
    if lost:
        raise LeaseLost(lost)


def _settle_pending(conn: Connection, claimed: list[tuple[str, int]]) -> None:
    """Delete pending rows no span touched since the claim; a late span leaves its row to re-queue."""
    p, m = schema.pending_traces.name, _mark(conn)
    for chunk in _chunks(list(claimed)):  # one statement per chunk: the interpreter lock is released once
        conn.exec_driver_sql(f"DELETE FROM {p} WHERE trace_id IN {_in_list(conn, len(chunk))} "
                             f"AND (trace_id, last_seen_ns) IN (VALUES {','.join([f'({m},{m})'] * len(chunk))})",
                             (*(t for t, _ in chunk), *itertools.chain.from_iterable(chunk)))
    for chunk in _chunks([t for t, _ in claimed]):
        conn.exec_driver_sql(f"UPDATE {p} SET claimed_by = NULL, claimed_until_ns = NULL "
                             f"WHERE trace_id IN {_in_list(conn, len(chunk))}", tuple(chunk))
