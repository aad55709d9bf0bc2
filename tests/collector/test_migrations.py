"""The schema migration runner: fresh databases, reruns, newer schemas and several starters at once."""

from __future__ import annotations

import multiprocessing

import pytest
from sqlalchemy import create_engine, inspect, update

from collector_worker.storage import schema
from collector_worker.storage.engine import open_engine
from collector_worker.storage.migrations import LATEST, current_version, migrate


def _migrate_at_once(url: str, barrier, results) -> None:
    engine = open_engine(url, migrate=False)
    barrier.wait(30)
    try:
        results.put(("ok", migrate(engine)))
    except Exception as exc:  # reported to the test, which names it
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


def test_fresh_database_gets_every_table_and_the_latest_version(database_url):
    engine = open_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(schema.metadata.tables) <= tables
        with engine.connect() as conn:
            assert current_version(conn) == LATEST
        assert migrate(engine) == LATEST  # a rerun changes nothing and does not fail
    finally:
        engine.dispose()


def test_a_schema_newer_than_this_contrail_is_refused(sqlite_url):
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(update(schema.schema_version).values(version=LATEST + 1))
    with pytest.raises(RuntimeError, match="newer than this Contrail"):
        migrate(engine)
    engine.dispose()


def test_collectors_starting_together_migrate_once(database_url):
    """Four processes migrate one empty database at the same moment; none sees 'table already exists'."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_migrate_at_once, args=(database_url, barrier, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    assert outcomes == [("ok", LATEST)] * 4
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(schema.schema_version.select()).all()[0].version == LATEST
    engine.dispose()


def test_a_version_1_database_gains_the_tombstone_table(database_url):
    """Databases written before tail-sampling tombstones existed are upgraded in place, data kept."""
    engine = open_engine(database_url)
    try:
        with engine.begin() as conn:
            schema.dropped_traces.drop(conn)
            conn.execute(update(schema.schema_version).values(version=1))
            conn.execute(schema.pending_traces.insert().values(trace_id="a" * 32, first_seen_ns=1, last_seen_ns=2))
        assert "dropped_traces" not in inspect(engine).get_table_names()
        assert migrate(engine) == LATEST == 2
        assert "dropped_traces" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert current_version(conn) == 2
            assert conn.execute(schema.pending_traces.select()).all()[0].trace_id == "a" * 32
    finally:
        engine.dispose()
