"""A database written by the release before Alembic (schema version 2, real traces) is upgraded with its data.

Done when (issue 19): "An Alembic upgrade test starts from a database created by the schema of
today's release, holding real traces, and finds them all after the upgrade."
"""

from __future__ import annotations

import time

from sqlalchemy import text

from collector_worker import finalizer
from collector_worker.llm_usage import query_usage
from collector_worker.settings import CollectorSettings
from collector_worker.storage import open_engine
from collector_worker.storage.migrations import LEGACY_FENCE, VERSION_TABLE, head_revision, schema_status
from collector_worker.storage.queries import TraceQuery, get_trace, search_traces
from tests.collector.v2_database import load_v2_database

HOUR = 3600 * 10**9


def _found(conn) -> dict[str, dict]:
    page = search_traces(conn, TraceQuery(start_ns=0, end_ns=time.time_ns() + HOUR, limit=100))
    return {t["trace_id"]: t for t in page["traces"]}


def test_every_trace_of_a_v2_database_is_found_after_the_upgrade(database_url):
    expected = load_v2_database(database_url)
    assert len(expected) == 7 and any(not t["finalized"] for t in expected.values())

    before = open_engine(database_url, migrate=False)
    with before.connect() as conn:
        assert schema_status(conn).current == "v2"
        rows_before = {table: conn.execute(text(f"SELECT count(*) FROM {table}")).scalar()
                       for table in ("spans", "traces", "stats", "stats_histogram", "dependencies", "llm_usage")}
        stats_before = sorted(conn.execute(text("SELECT * FROM stats WHERE count != 0")).all())
    before.dispose()

    engine = open_engine(database_url)  # what a collector of this release does at start
    try:
        with engine.connect() as conn:
            assert schema_status(conn).state == "current"
            assert conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == head_revision()
            assert conn.execute(text("SELECT version FROM contrail_schema")).scalar() == LEGACY_FENCE
            for table, count in rows_before.items():  # staging holds a row per trace and batch since revision 0008
                what = "sum(span_count)" if table == "spans" else "count(*)"
                assert conn.execute(text(f"SELECT {what} FROM {table}")).scalar() == count, table
            searched = _found(conn)
            for trace_id, want in expected.items():
                trace = get_trace(conn, trace_id)
                assert trace is not None, trace_id
                assert sorted(s["span_id"] for s in trace["spans"]) == want["spans"]
                assert (trace_id in searched) == want["finalized"]
            usage = query_usage(conn, 0, time.time_ns() + HOUR)
        assert usage["totals"]["calls"] == 2 and usage["totals"]["input_tokens"] == 120 + 121

        # The pending work the old collector left (a late span, a new trace) is finalized by this one.
        settings = CollectorSettings(quiet_period=0.1)
        while finalizer.finalize_ready(engine, settings, "upgraded", now_ns=time.time_ns() + HOUR):
            pass
        with engine.connect() as conn:
            searched = _found(conn)
            assert set(searched) == set(expected)
            for trace_id, want in expected.items():
                assert searched[trace_id]["span_count"] == len(want["spans"]), trace_id
                assert sorted(s["span_id"] for s in get_trace(conn, trace_id)["spans"]) == want["spans"]
                # re-finalized into the new layout: in a block, and found by a service filter
                service = searched[trace_id]["root_service"]
                assert trace_id in {t["trace_id"] for t in search_traces(
                    conn, TraceQuery(service=service, start_ns=0, limit=100))["traces"]}
            assert conn.execute(text("SELECT count(*) FROM spans")).scalar() == 0
            assert conn.execute(text("SELECT count(*) FROM trace_blocks")).scalar() == len(expected)
            # trace statistics of traces finalized before the upgrade are not counted twice
            stats_after = sorted(conn.execute(text("SELECT * FROM stats WHERE count != 0")).all())
        old_traces = {t for t, want in expected.items() if want["finalized"]}
        assert len(old_traces) < len(expected)
        assert [r for r in stats_after if r[0] == "span"] == [r for r in stats_before if r[0] == "span"]
    finally:
        engine.dispose()
