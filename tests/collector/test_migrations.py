"""Alembic migrations: fresh databases, reruns, newer schemas, pre-Alembic databases and several starters at once."""

from __future__ import annotations

import multiprocessing

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text

from collector_worker.storage import schema
from collector_worker.storage.engine import open_engine
from collector_worker.storage.migrations import (
    BASELINE,
    LEGACY_FENCE,
    LEGACY_LATEST,
    VERSION_TABLE,
    NewerSchemaError,
    alembic_config,
    head_revision,
    migrate,
    schema_status,
)
from tests.collector.v2_database import load_v2_database


def _migrate_at_once(url: str, barrier, results) -> None:
    engine = open_engine(url, migrate=False)
    barrier.wait(30)
    try:
        results.put(("ok", migrate(engine)))
    except Exception as exc:  # reported to the test, which names it
        results.put(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        engine.dispose()


def _structure(url: str) -> dict:
    """Tables with their columns (type, nullability), primary keys and indexes, as the database reports them."""
    engine = create_engine(url)
    found = inspect(engine)
    tables = {}
    for name in sorted(set(found.get_table_names()) - {VERSION_TABLE}):
        tables[name] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(name)],
            "primary_key": found.get_pk_constraint(name)["constrained_columns"],
            "indexes": sorted((i["name"], tuple(i["column_names"])) for i in found.get_indexes(name)),
        }
    engine.dispose()
    return tables


def test_fresh_database_gets_every_table_and_the_head_revision(database_url):
    engine = open_engine(database_url)
    try:
        tables = set(inspect(engine).get_table_names())
        assert {t.name for t in schema.tables_of(engine.dialect.name)} | {VERSION_TABLE} <= tables
        with engine.connect() as conn:
            assert schema_status(conn).state == "current"
            assert schema_status(conn).current == head_revision()
            # A release from before Alembic reads a version above its own (2) and refuses to start.
            assert conn.execute(text("SELECT version FROM contrail_schema")).scalar() == LEGACY_FENCE > LEGACY_LATEST
        assert migrate(engine) == head_revision()  # a rerun changes nothing and does not fail
    finally:
        engine.dispose()


def test_revision_0001_is_the_schema_of_the_release_before_alembic(database_url, tmp_path):
    """Created from empty by 0001 or left by the hand-written runner: the same tables, columns and indexes."""
    if database_url.startswith("sqlite"):
        old_url = f"sqlite:///{tmp_path / 'v2.db'}"
    else:
        from tests.support.servers import create_postgres_database

        old_url, drop = create_postgres_database("contrail_v2")
    try:
        load_v2_database(old_url)
        engine = open_engine(database_url, migrate=False)
        with engine.begin() as conn:  # 0001 only, whatever later revisions add
            command.upgrade(alembic_config(conn), BASELINE)
        engine.dispose()
        assert _structure(database_url) == _structure(old_url)
    finally:
        if not database_url.startswith("sqlite"):
            drop()


def test_a_schema_newer_than_this_contrail_is_refused(sqlite_url):
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:  # as a later release's migration leaves it: a revision this code lacks
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with pytest.raises(NewerSchemaError, match="revision 9999 is newer than this Contrail"):
        migrate(engine)
    engine.dispose()


def _migrate_concurrently(database_url, processes: int) -> list:
    """Start ``processes`` spawned processes that migrate ``database_url`` at the same moment; their outcomes."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_migrate_at_once, args=(database_url, barrier, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(30)
    return outcomes


def test_collectors_starting_together_migrate_once(database_url):
    """Four processes migrate one empty database at the same moment; none sees 'table already exists'."""
    outcomes = _migrate_concurrently(database_url, 4)
    assert outcomes == [("ok", head_revision())] * 4
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [head_revision()]
        assert conn.execute(text("SELECT version FROM contrail_schema")).scalars().all() == [LEGACY_FENCE]
    engine.dispose()


def test_collectors_starting_together_on_a_v2_database_adopt_it_once(database_url):
    """A rolling upgrade: several new collectors find the old runner's database at once; it is stamped once."""
    load_v2_database(database_url)
    outcomes = _migrate_concurrently(database_url, 3)
    assert outcomes == [("ok", head_revision())] * 3
    engine = create_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all() == [head_revision()]
        assert conn.execute(text("SELECT sum(span_count) FROM spans")).scalar() == 44  # staged spans kept
    engine.dispose()


def test_a_version_1_database_gains_the_tombstone_table(database_url):
    """Databases of the hand-written runner's version 1 (before tail-sampling tombstones) are adopted, data kept."""
    expected = load_v2_database(database_url)
    engine = open_engine(database_url, migrate=False)
    try:
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE dropped_traces"))
            conn.execute(text("UPDATE contrail_schema SET version = 1"))
        with engine.connect() as conn:
            assert schema_status(conn).current == "v1"
        assert migrate(engine) == head_revision()
        assert "dropped_traces" in inspect(engine).get_table_names()
        with engine.connect() as conn:
            assert schema_status(conn).state == "current"
            # every span kept, every trace queued to be finalized into the block layout (revision 0002)
            assert conn.execute(text("SELECT sum(span_count) FROM spans")).scalar() == \
                sum(len(t["spans"]) for t in expected.values())
            assert conn.execute(text("SELECT count(*) FROM pending_traces")).scalar() == len(expected)
            conn.execute(schema.dropped_traces.insert().values(trace_id="a" * 32, start_ns=1, dropped_ns=2))
            assert conn.execute(text("SELECT trace_id FROM dropped_traces")).scalars().all() == ["a" * 32]
    finally:
        engine.dispose()


def test_a_pre_alembic_version_newer_than_the_last_one_is_refused(sqlite_url):
    """A database the hand-written runner marked with a version it never had is not adopted blindly."""
    load_v2_database(sqlite_url)
    engine = open_engine(sqlite_url, migrate=False)
    with engine.begin() as conn:
        conn.execute(text("UPDATE contrail_schema SET version = 7"))
    with pytest.raises(NewerSchemaError, match="revision v7 is newer than this Contrail"):
        migrate(engine)
    engine.dispose()


def test_revision_0003_numbers_finalized_traces_by_their_day_and_keeps_their_postings(database_url):
    """A database at 0002 holding finalized traces: after 0003 every row of a trace carries its day's number."""
    from collector_worker.storage import partitions

    day_ns = 86_400 * 1_000_000_000
    starts = {1: 20_000 * day_ns + 5, 2: 20_003 * day_ns + 7}  # two traces, three days apart
    engine = open_engine(database_url, migrate=False)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002")
        for no, start in starts.items():
            conn.execute(text(
                "INSERT INTO traces (trace_no, trace_id, root_service, root_operation, start_ns, end_ns, duration_ns, "
                "span_count, error_count, services, service_count, incomplete, clock_skew_ns, warnings, "
                "finalized_ns, version) VALUES (:no, :tid, 'api', 'GET', :start, :start, 0, 1, 0, '[]', 1, false, 0, "
                "'[]', 0, 1)"), {"no": no, "tid": f"{no:032x}", "start": start})
            conn.execute(text("INSERT INTO trace_blocks (trace_no, data) VALUES (:no, :data)"),
                         {"no": no, "data": b"block"})
            conn.execute(text("INSERT INTO trace_operations (service_id, trace_no, operation_id, error) "
                              "VALUES (1, :no, 2, false)"), {"no": no})
            conn.execute(text("INSERT INTO trace_tags (key_id, value_hash, trace_no) VALUES (3, 4, :no)"), {"no": no})
            conn.execute(text("INSERT INTO trace_tag_numbers (key_id, value_num, trace_no) VALUES (3, 1.5, :no)"),
                         {"no": no})
        conn.execute(text("INSERT INTO trace_tags (key_id, value_hash, trace_no) VALUES (3, 4, 99)"))  # orphan
        command.upgrade(alembic_config(conn), "0003")
    try:
        expected = {f"{no:032x}": partitions.first_no(partitions.day_of(start)) | no for no, start in starts.items()}
        with engine.begin() as conn:
            assert dict(conn.execute(text("SELECT trace_id, trace_no FROM traces")).all()) == expected
            for table in ("trace_blocks", "trace_operations", "trace_tags", "trace_tag_numbers"):
                assert sorted(conn.execute(text(f"SELECT trace_no FROM {table}")).scalars()) == sorted(expected.values())
            # the sequence goes on after the largest number so far, into the day of the new trace
            assert partitions.allocate(conn, [starts[2]]) == [partitions.first_no(20_003) | 3]
            if engine.dialect.name == "postgresql":
                assert conn.execute(text("SELECT to_regclass('trace_tags_20241007')")).scalar() is not None
    finally:
        engine.dispose()
