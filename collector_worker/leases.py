"""The finalizer's leases in this process: those held ahead for the next passes, and giving them back.

The SQL of the protocol is ``storage.leases``; this module keeps what a
collector holds between passes (:class:`ClaimAhead`), tops a pass up to a full
batch (:func:`lease_batch`) and gives leases back after a failure
(:func:`give_back`), holding them when the database refuses that too.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from sqlalchemy.engine import Engine

from .storage import leases as lease_store

log = logging.getLogger("collector_worker.finalizer")

MAX_TRACES_PER_CALL = 1000  # traces one finalize pass leases and writes


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
        if not self.claimed or now_ns - self.claimed_ns >= lease_store.LEASE_NS // 2:
            return None
        taken, self.claimed = self.claimed[:limit], self.claimed[limit:]
        return taken

    def release(self, engine: Engine, consumer_name: str) -> None:
        claimed, self.claimed = self.claimed, []
        if claimed:
            lease_store.release(engine, consumer_name, [t for t, _ in claimed])

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
    :data:`storage.leases.LEASE_NS` for another pass to take them. ``lock`` guards ``ahead`` when two threads share it.
    """
    if not claimed:
        return
    try:
        lease_store.release(engine, consumer_name, [t for t, _ in claimed])
    except Exception as exc:
        if ahead is None:
            raise
        log.warning("giving back %d finalizer leases failed, holding them for the next pass: %s", len(claimed),
                    str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        with lock if lock is not None else contextlib.nullcontext():
            ahead.hold(claimed, leased_ns)


def lease_batch(engine: Engine, consumer_name: str, ahead: ClaimAhead | None, now_ns: int, quiet_ns: int,
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
        lease_store.release(engine, consumer_name, [t for t, _ in stale])
    if len(claimed) < MAX_TRACES_PER_CALL:  # none held, or a partial batch: top it up
        try:
            more = lease_store.claim(engine, consumer_name, now_ns, now_ns - quiet_ns, limit=MAX_TRACES_PER_CALL - len(claimed))
        except Exception:
            if ahead is not None:
                with guard:
                    ahead.hold(claimed, leased_ns)
            raise
        claimed = sorted(claimed + more) if claimed else more
    return claimed, leased_ns
