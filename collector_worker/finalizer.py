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
assembled last time (the spans of its block, which hold their depth) and the spans present now.

The SQL lives in ``storage/`` (``finalized``, ``leases``, ``staging``), the leases a collector holds between
passes in ``leases``, the SQLite write thread in ``write_pipeline``.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError

from . import dependencies, forwarding, llm_usage, sampling, stats
from .assembler import assemble
from .leases import MAX_TRACES_PER_CALL, ClaimAhead, give_back, lease_batch
from .recent_spans import RecentSpans
from .storage import block_dictionary, block_store, blocks, finalized, search_keys, staging
from .storage import leases as lease_store
from .storage.leases import LEASE_NS, LeaseLost, claim, next_ready_ns, release, release_own  # noqa: F401
from .storage.writer import take_write_lock, write_lock

log = logging.getLogger(__name__)


RECENT_STALE_NS = 5 * 1_000_000_000  # held spans received this long before a batch's oldest are dropped

_counters = {"finalized": 0, "refinalized": 0, "failed": 0, "late_dropped": 0, "leases_lost": 0}


def counters() -> dict[str, int]:
    """Traces finalized, re-finalized, failed (assembly raised), late spans of dropped traces and traces whose
    leases another collector took over before this one wrote them, in this process."""
    return dict(_counters)


# --------------------------------------------------------------------------- ingest side


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

    __slots__ = ("acc", "usage")

    def __init__(self, spans: list[dict], sort_usage: bool = False) -> None:
        """Statistics of ``spans`` (their order does not matter) and their LLM usage, summed in their order or,
        with ``sort_usage``, in (trace id, span id) order: float sums depend on the order, and sorting only the
        spans that may be LLM calls spares visiting every span in an order unrelated to where it lies."""
        self.acc = stats.Accumulator()
        self.acc.add_spans("span", spans)
        if sort_usage:
            keys = llm_usage.TRIGGER_KEYS.isdisjoint  # a dict holding none of them is no LLM call
            spans = sorted([s for s in spans if type(a := s.get("attributes")) is not dict or not keys(a)],
                           key=lambda s: (s["trace_id"], s["span_id"]))
        self.usage = llm_usage.aggregate_usage(spans) if spans else []

    def write(self, conn: Connection) -> None:
        self.acc.flush(conn)
        if self.usage:
            llm_usage.write_usage(conn, self.usage)


# --------------------------------------------------------------------------- finalizer side



TRANSIENT_ERRORS = (OperationalError, InterfaceError, DisconnectionError)  # the database, not the batch: retried whole


def left_to_another(lost: "LeaseLost", claimed: list[tuple[str, int]] = ()) -> list[tuple[str, int]]:
    """Log traces whose leases another collector took over; the rest of ``claimed``, to write without them."""
    _counters["leases_lost"] += len(lost.trace_ids)
    log.warning("a finalize pass outlived its leases: %d traces were taken over by another collector and are "
                "left to it", len(lost.trace_ids))
    gone = set(lost.trace_ids)
    return [lease for lease in claimed if lease[0] not in gone]


def finalize_one_by_one(engine: Engine, settings: Any, consumer_name: str, claimed: list[tuple[str, int]],
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
            batch = read_and_assemble(engine, settings, [lease], time.time_ns(), None)
            with write_lock(engine), engine.begin() as conn:
                batch.write(conn, consumer_name)
            done += 1
        except TRANSIENT_ERRORS:
            give_back(engine, consumer_name, claimed[index:], time.time_ns() - lease_store.LEASE_NS // 2, ahead, lock)
            raise
        except LeaseLost as exc:
            left_to_another(exc)
        except Exception:
            _counters["failed"] += 1
            log.exception("cannot write the finalized trace %s; its spans stay stored unassembled", lease[0])
            try:
                with write_lock(engine), engine.begin() as conn:
                    lease_store.check_leases(conn, consumer_name, [lease])
                    lease_store.settle_pending(conn, [lease])
            except LeaseLost as exc:
                left_to_another(exc)
            except Exception:
                give_back(engine, consumer_name, claimed[index:], time.time_ns() - lease_store.LEASE_NS // 2, ahead, lock)
                raise
    return done


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
    claimed, leased_ns = lease_batch(engine, consumer_name, ahead, now_ns, quiet_ns)
    if not claimed:
        return 0
    taken = [claimed]
    kept = None  # leases held ahead past this call, once known
    try:
        batches = [read_and_assemble(engine, settings, claimed, now_ns, recent)]

        def assemble_next() -> None:  # the ingest thread is writing: assemble the next held batch meanwhile
            spare = ahead.take(now_ns)
            if spare:
                taken.append(spare)
                batches.append(read_and_assemble(engine, settings, spare, now_ns, recent))

        lock = write_lock(engine)
        take_write_lock(lock, assemble_next if ahead is not None and ahead.claimed else None)
        kept = ahead.claimed if ahead is not None else []
        try:
            with engine.begin() as conn:
                for batch in batches:
                    batch.write(conn, consumer_name)
                if ahead is not None:
                    next_ns = now_ns if explicit_now else time.time_ns()
                    ahead.claimed = kept + lease_store.claim_in(conn, consumer_name, next_ns, next_ns - quiet_ns,
                                                  limit=2 * MAX_TRACES_PER_CALL - len(kept))
                    ahead.claimed_ns = min(ahead.claimed_ns, next_ns) if kept else next_ns
        finally:
            lock.__exit__(None, None, None)
    except Exception as exc:
        if ahead is not None and kept is not None:
            ahead.claimed = kept  # leases taken by the transaction that failed were rolled back with it
        leases = [lease for part in taken for lease in part]
        if kept is None or isinstance(exc, TRANSIENT_ERRORS):  # not written yet, or the database's trouble
            give_back(engine, consumer_name, leases, min(leased_ns, now_ns), ahead)
            raise
        if isinstance(exc, LeaseLost):  # the rest is still this collector's: written without the lost ones
            leases = left_to_another(exc, leases)
        else:
            log.warning("writing %d finalized traces failed, writing them one by one: %s", len(leases), exc)
        return finalize_one_by_one(engine, settings, consumer_name, sorted(leases), ahead)
    return sum(len(part) for part in taken)


def read_and_assemble(engine: Engine, settings: Any, claimed: list[tuple[str, int]], now_ns: int,
                      recent: RecentSpans | None) -> "FinalizedBatch":
    """Read the claimed traces and assemble them on a connection of its own (no write transaction held)."""
    with engine.connect() as conn:
        batch = prepare_batch(conn, settings, claimed, now_ns, recent)
        conn.rollback()  # end the read transaction before writing on another connection
    return batch




def prepare_batch(conn: Connection, settings: Any, claimed: list[tuple[str, int]], now_ns: int,
                  recent: RecentSpans | None = None) -> "FinalizedBatch":
    """Read the claimed traces (staged rows from ``recent`` where held, else the database) and assemble them.

    Which rows are staged is read first (keys only); a held row is used when its key is among them, the
    others are read back. A trace finalized before is its block's spans merged with its staged spans (a
    span id already in the block keeps the block's copy, so a redelivered span never appears twice).
    """
    trace_ids = sorted(t for t, _ in claimed)
    previous = finalized.load_previous(conn, trace_ids)
    staged_keys = staging.keys(conn, trace_ids)
    # Leases go oldest pending first: what is held from well before the oldest of this batch was finalized by
    # another collector (or is pending again later) and would only take the cache's room.
    held = recent.take(trace_ids, min(seen for _, seen in claimed) - RECENT_STALE_NS) if recent is not None else {}
    missing = {(t, b) for t, rows in staged_keys.items() for b in rows if b not in held.get(t, ())}
    if recent is not None:
        misses = len({t for t, _ in missing})
        recent.hits += len(staged_keys) - misses
        recent.misses += misses
    read_back = staging.read(conn, sorted({t for t, _ in missing}), wanted=missing) if missing else {}
    staged: dict[str, list[dict[str, Any]]] = {}
    for trace_id, rows in staged_keys.items():
        mine, theirs = held.get(trace_id, {}), read_back.get(trace_id, {})
        staged[trace_id] = [span for b in sorted(rows) for span in (mine[b] if b in mine else theirs.get(b, ()))]
    old_blocks = block_store.read_blocks(conn, [int(p["trace_no"]) for p in previous.values()
                                                 if p.get("trace_no") is not None])
    spans_by_trace: dict[str, list[dict[str, Any]]] = {}
    old_postings: dict[str, Any] = {}
    for trace_id in trace_ids:
        old = previous.get(trace_id)
        data = old_blocks.get(int(old["trace_no"])) if old is not None and old.get("trace_no") is not None else None
        if data is None:
            spans_by_trace[trace_id] = blocks.merge((), staged.get(trace_id, ()))
            continue
        old_spans = blocks.decode(data)
        old_postings[trace_id] = block_store.postings_of(conn, old_spans)
        spans_by_trace[trace_id] = blocks.merge(old_spans, staged.get(trace_id, ()))
    batch = assemble_batch(settings, claimed, trace_ids, spans_by_trace, previous, now_ns)
    batch.staged = [(t, b) for t in trace_ids if t not in batch.kept for b in staged_keys.get(t, ())]
    batch.moved = {t: [span["span_id"] for span in staged.get(t, ())] for t in trace_ids if t not in batch.kept}
    batch.old_postings = old_postings
    batch.old_numbers = {t: int(p["trace_no"]) for t, p in previous.items() if p.get("trace_no") is not None}
    batch.dictionary = block_dictionary.for_encoding(conn)
    batch.encode(search_keys.known(conn.engine))  # the usual case: every name has an id cached
    if batch.assembled:  # names not cached here yet: read their ids (those new to the database wait)
        batch.encode(search_keys.lookup(conn, batch.names()))
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
                 "staged", "moved", "old_postings", "old_numbers", "kept", "blocks", "postings", "dictionary", "samples",
                 "tags_of")

    def names(self) -> set[str]:
        wanted: set[str] = set()
        tags_of = self.tags_of
        for trace_id, _, a in self.assembled:
            tags = tags_of.get(trace_id)
            if tags is None:
                tags = tags_of[trace_id] = search_keys.search_tags(a)
            wanted |= search_keys.names_in(a.operations, tags)
        return wanted

    def encode(self, ids: dict[str, int]) -> None:
        """Each assembled trace whose names all have ids: its postings and its block (the rest wait)."""
        waiting = []
        tags_of, postings, packed = self.tags_of, self.postings, self.blocks
        compress = blocks.compressor(self.dictionary)
        samples = self.samples if self.dictionary is None else None
        for trace_id, spans, a in self.assembled:
            try:
                tags = tags_of.get(trace_id)
                if tags is None:
                    tags = search_keys.search_tags(a)
                postings[trace_id] = search_keys.postings(a.operations, tags, ids)
            except KeyError:  # a name never seen: added by the write transaction
                waiting.append((trace_id, spans, a))
                continue
            body = blocks.pack(spans, a.depth, a.self_time_ns, a.critical_path)
            packed[trace_id] = compress(body)
            if samples is not None:
                samples.append(body)
        self.assembled = waiting

    def write(self, conn: Connection, consumer_name: str) -> None:
        """Write the batch in ``conn``'s transaction, first checking ``consumer_name`` still holds every lease."""
        lease_store.check_leases(conn, consumer_name, self.claimed)
        if self.assembled:  # traces with names new to the database: add them, in this transaction
            self.encode(search_keys.add_names(conn, self.names()))
        if self.blocks:
            block_dictionary.store(conn, self.dictionary)
        finalized.write_batch(conn, self)
        finalized.write_tombstones(conn, self.tombstones)
        self.acc.flush(conn)
        dependencies.record_edges(conn, self.edges)
        lease_store.settle_pending(conn, self.claimed)
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
        trace_rows.append(finalized.trace_row(trace_id, summary, int(old["version"]) + 1 if old else 1, now_ns))
        assembled.append((trace_id, spans, a))

    batch = FinalizedBatch()
    batch.claimed, batch.replaced, batch.trace_rows = claimed, sorted(previous), trace_rows
    batch.assembled, batch.dropped, batch.acc, batch.edges = assembled, dropped, acc, edges
    batch.tombstones, batch.kept = tombstones, kept
    batch.staged, batch.old_postings, batch.old_numbers, batch.blocks, batch.postings = [], {}, {}, {}, {}
    batch.moved = {}
    batch.dictionary, batch.samples = None, []
    batch.tags_of = {}  # trace id -> its search tags, derived once for both names and postings
    return batch


