"""The finalizer's lease protocol in SQL: who may assemble which pending trace, and for how long.

A trace with new spans has a ``pending_traces`` row. A finalizer leases quiet
traces (``claimed_by``, ``claimed_until_ns``) before assembling them, checks in
its write transaction that it still holds every lease, and settles the rows in
the same transaction: deleted unless a span arrived since the claim, the
lease cleared either way. A lease older than :data:`LEASE_NS` belongs to a
collector that died and may be taken by any other. The in-process side (leases
held ahead, giving back after a failure) is ``collector_worker.leases``.
"""

from __future__ import annotations

import itertools
import time
from typing import Iterable

from sqlalchemy import update
from sqlalchemy.engine import Connection, Engine

from . import schema
from .writer import write_lock
from .sql_text import chunks, in_list as _in_list, mark as _mark

LEASE_NS = 60 * 1_000_000_000  # a claim older than this belongs to a collector that died
_IN_CHUNK = 1000


def _chunks(items: list, size: int = _IN_CHUNK) -> Iterable[list]:
    return chunks(items, size)


def claim(engine: Engine, consumer_name: str, now_ns: int, quiet_cutoff_ns: int,
          limit: int = 1000) -> list[tuple[str, int]]:
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
        return claim_in(conn, consumer_name, now_ns, quiet_cutoff_ns, limit)


def claim_in(conn: Connection, consumer_name: str, now_ns: int, quiet_cutoff_ns: int,
           limit: int = 1000) -> list[tuple[str, int]]:
    """:func:`claim` inside the caller's write transaction.

    SQLite picks the rows by rowid (the subquery reads it from the ``last_seen_ns`` index), which spares
    a search of the ``trace_id`` index per row: a third less work for the statement.
    """
    until = now_ns + LEASE_NS
    m = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    ready = f"last_seen_ns <= {m} AND (claimed_until_ns IS NULL OR claimed_until_ns < {m})"
    postgres = conn.dialect.name == "postgresql"
    lock = " FOR UPDATE SKIP LOCKED" if postgres else ""
    key = "trace_id" if postgres else "rowid"
    sql = (f"UPDATE {schema.pending_traces.name} SET claimed_by = {m}, claimed_until_ns = {m} "
           f"WHERE {key} IN (SELECT {key} FROM {schema.pending_traces.name} WHERE {ready} "
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


class LeaseLost(Exception):
    """A batch's write found leases it no longer holds: another collector took those traces over."""

    def __init__(self, trace_ids: list[str]) -> None:
        super().__init__(f"{len(trace_ids)} finalizer leases were taken over by another collector")
        self.trace_ids = trace_ids


def check_leases(conn: Connection, consumer_name: str, claimed: list[tuple[str, int]]) -> None:
    """Raise :class:`LeaseLost` unless ``consumer_name`` still holds the lease of every claimed trace.

    A pass that outlives :data:`LEASE_NS` (a stalled process, a huge batch)
    may find its traces claimed by another collector, which assembles and
    writes them too: their statistics would be counted twice. The check comes
    first in the write transaction and takes the locks a claim needs, so no
    claim can take a checked trace before the commit: on PostgreSQL an UPDATE
    that changes nothing locks the rows; on SQLite a write statement that
    matches no row takes the database's write lock, then a SELECT reads the
    leases (rewriting every row would cost a third more).
    """
    if not claimed:
        return
    p, m = schema.pending_traces.name, _mark(conn)
    postgres = conn.dialect.name == "postgresql"
    if not postgres:
        conn.exec_driver_sql(f"UPDATE {p} SET claimed_by = claimed_by WHERE 0")  # the write lock, first
    held: set[str] = set()
    for chunk in _chunks(sorted(t for t, _ in claimed)):
        where = f"WHERE claimed_by = {m} AND trace_id IN {_in_list(conn, len(chunk))}"
        sql = (f"UPDATE {p} SET claimed_by = claimed_by {where} RETURNING trace_id" if postgres
               else f"SELECT trace_id FROM {p} {where}")
        held.update(r[0] for r in conn.exec_driver_sql(sql, (consumer_name, *chunk)))
    lost = sorted(t for t, _ in claimed if t not in held)
    if lost:
        raise LeaseLost(lost)


def settle_pending(conn: Connection, claimed: list[tuple[str, int]]) -> None:
    """Delete pending rows no span touched since the claim; a late span leaves its row to re-queue."""
    p, m = schema.pending_traces.name, _mark(conn)
    for chunk in _chunks(list(claimed)):  # one statement per chunk: the interpreter lock is released once
        conn.exec_driver_sql(f"DELETE FROM {p} WHERE trace_id IN {_in_list(conn, len(chunk))} "
                             f"AND (trace_id, last_seen_ns) IN (VALUES {','.join([f'({m},{m})'] * len(chunk))})",
                             (*(t for t, _ in chunk), *itertools.chain.from_iterable(chunk)))
    for chunk in _chunks([t for t, _ in claimed]):
        conn.exec_driver_sql(f"UPDATE {p} SET claimed_by = NULL, claimed_until_ns = NULL "
                             f"WHERE trace_id IN {_in_list(conn, len(chunk))}", tuple(chunk))
