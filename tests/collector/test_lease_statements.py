"""The lease statements against what the protocol says they do, row by row, on both databases.

``claim_in`` leases the oldest quiet traces whose lease is free or expired (SQLite picks them by rowid);
``settle_pending`` deletes the rows no span touched since the claim and clears the lease of the rest.
"""

from __future__ import annotations

import random

from sqlalchemy import select

from collector_worker.storage import leases, schema

NOW = 1_700_000_000_000_000_000
P = schema.pending_traces


def _rows(engine) -> dict[str, tuple]:
    with engine.connect() as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            select(P.c.trace_id, P.c.last_seen_ns, P.c.claimed_by, P.c.claimed_until_ns))}


def _fill(engine, rng: random.Random, n: int) -> None:
    rows = []
    for i in range(n):
        seen = NOW - rng.randrange(0, 20) * 1_000_000_000  # many ties in last_seen_ns
        state = rng.randrange(4)
        claimed_by, until = {0: (None, None), 1: ("other", NOW + 5), 2: ("other", NOW - 5),
                             3: ("me", NOW)}[state]
        rows.append({"trace_id": f"{i:032x}", "first_seen_ns": seen, "last_seen_ns": seen,
                     "claimed_by": claimed_by, "claimed_until_ns": until})
    with engine.begin() as conn:
        conn.execute(P.insert(), rows)


def test_claim_takes_the_oldest_free_or_expired_quiet_traces(engine):
    _fill(engine, random.Random(3), 600)
    before = _rows(engine)
    cutoff = NOW - 5_000_000_000
    ready = sorted((seen, t) for t, (seen, _, until) in before.items()
                   if seen <= cutoff and (until is None or until < NOW))
    with engine.begin() as conn:
        got = leases.claim_in(conn, "me", NOW, cutoff, limit=100)
    assert len(got) == 100
    assert max(seen for _, seen in got) == ready[99][0]  # the oldest hundred (ties broken either way)
    assert {t for t, _ in got} <= {t for _, t in ready if _ <= ready[99][0]}
    assert {t for t, _ in got} >= {t for seen, t in ready if seen < ready[99][0]}
    after = _rows(engine)
    for t, row in after.items():
        if t in dict(got):
            assert row == (before[t][0], "me", NOW + leases.LEASE_NS)
        else:
            assert row == before[t]
    assert sorted(got) == got and all(before[t][0] == seen for t, seen in got)


def test_settle_deletes_untouched_rows_and_frees_the_rest(engine):
    _fill(engine, random.Random(5), 300)
    with engine.begin() as conn:
        claimed = leases.claim_in(conn, "me", NOW, NOW, limit=120)
    late = {t for t, _ in claimed[::7]}
    with engine.begin() as conn:  # a span arrives for some: last_seen_ns moves on
        for t in late:
            conn.execute(P.update().where(P.c.trace_id == t).values(last_seen_ns=NOW + 1))
    before = _rows(engine)
    with engine.begin() as conn:
        leases.settle_pending(conn, claimed)
    after = _rows(engine)
    settled = {t for t, _ in claimed}
    assert set(after) == set(before) - (settled - late)
    for t in late:
        assert after[t] == (NOW + 1, None, None)
    for t in set(after) - settled:
        assert after[t] == before[t]


def test_checking_leases_on_sqlite_takes_the_write_lock_first(sqlite_engine, sqlite_url):
    """No claim can slip in between the check and the commit: another connection cannot start writing."""
    import sqlite3

    import pytest

    _fill(sqlite_engine, random.Random(7), 50)
    with sqlite_engine.begin() as conn:
        claimed = leases.claim_in(conn, "me", NOW, NOW, limit=10)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), timeout=0)
    try:
        with sqlite_engine.begin() as conn:
            leases.check_leases(conn, "me", claimed)
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once the transaction ends
        other.rollback()
    finally:
        other.close()


def test_a_lease_taken_over_is_reported_lost(engine):
    _fill(engine, random.Random(9), 80)
    with engine.begin() as conn:
        claimed = leases.claim_in(conn, "me", NOW, NOW, limit=20)
    taken = sorted(t for t, _ in claimed[::3])
    with engine.begin() as conn:
        conn.execute(P.update().where(P.c.trace_id.in_(taken)).values(claimed_by="other"))
    with engine.begin() as conn:
        try:
            leases.check_leases(conn, "me", claimed)
        except leases.LeaseLost as lost:
            assert lost.trace_ids == taken
        else:
            raise AssertionError("no lease reported lost")
        leases.check_leases(conn, "me", [c for c in claimed if c[0] not in taken])
