"""Finalization on SQLite with each batch's write on a thread of its own, beside the next batch's assembly."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from sqlalchemy.engine import Engine

from . import finalizer, leases
from .recent_spans import RecentSpans
from .storage import leases as lease_store
from .storage.writer import write_lock

log = logging.getLogger("collector_worker.finalizer")


class WritePipeline:
    """Finalization on SQLite with the writes on a thread of their own (``contrail-finalizer-write``).

    :meth:`step` leases a batch (from ``ahead`` when it holds leases, see
    :class:`leases.ClaimAhead`), reads and assembles it, waits for the previous
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
                 ahead: leases.ClaimAhead, on_written: Any = None) -> None:
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
        claimed, leased_ns = leases.lease_batch(self.engine, self.name, self.ahead, now_ns, quiet_ns, self._lock)
        if not claimed:
            return 0
        try:
            batch = finalizer.read_and_assemble(self.engine, self.settings, claimed, now_ns, self.recent)
        except Exception:
            leases.give_back(self.engine, self.name, claimed, leased_ns, self.ahead, self._lock)
            raise
        self.wait()
        self._pending = self._pool.submit(self._write, batch, claimed, quiet_ns, leased_ns)
        return len(claimed)

    def _write(self, batch: "finalizer.FinalizedBatch", claimed: list[tuple[str, int]], quiet_ns: int,
               leased_ns: int | None = None) -> int:
        try:
            with write_lock(self.engine), self.engine.begin() as conn:
                batch.write(conn, self.name)
                with self._lock:
                    room = 2 * leases.MAX_TRACES_PER_CALL - len(self.ahead.claimed)
                next_ns = time.time_ns()
                leased = lease_store.claim_in(conn, self.name, next_ns, next_ns - quiet_ns, limit=room) if room > 0 else []
        except finalizer.TRANSIENT_ERRORS:
            # The rolled-back transaction left the leases as they were: give them back, or hold them for the
            # next pass when the database refuses that too (so they are not stuck until they expire).
            leases.give_back(self.engine, self.name, claimed, time.time_ns() - lease_store.LEASE_NS if leased_ns is None else leased_ns,
                      self.ahead, self._lock)
            raise
        except Exception as exc:  # refused for what the batch holds (or leases lost): the traces one by one
            if isinstance(exc, lease_store.LeaseLost):
                claimed = finalizer.left_to_another(exc, claimed)
            else:
                log.warning("writing %d finalized traces failed, writing them one by one: %s", len(claimed), exc)
            done = finalizer.finalize_one_by_one(self.engine, self.settings, self.name, claimed, self.ahead, self._lock)
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
