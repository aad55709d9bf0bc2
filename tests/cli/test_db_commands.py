"""``contrail db current`` and ``contrail db upgrade`` on empty, pre-Alembic and newer databases."""

from __future__ import annotations

import json

from sqlalchemy import text

from collector_worker.storage import open_engine
from collector_worker.storage.migrations import VERSION_TABLE, head_revision
from tests.collector.v2_database import load_v2_database


def test_upgrade_creates_the_schema_then_reports_it_current(run_cli, sqlite_url):
    assert run_cli("db", "current", "--database-url", sqlite_url).exit_code == 1  # no file: nothing created
    first = run_cli("db", "upgrade", "--database-url", sqlite_url)
    assert first.exit_code == 0 and f"upgraded from revision - (empty) to {head_revision()}" in first.stdout
    again = run_cli("db", "upgrade", "--database-url", sqlite_url)
    assert again.exit_code == 0 and f"already at revision {head_revision()}" in again.stdout
    shown = json.loads(run_cli("db", "current", "--json", "--database-url", sqlite_url).stdout)
    assert shown == {"revision": head_revision(), "head": head_revision(), "state": "current"}


def test_upgrade_adopts_a_database_of_the_release_before_alembic(run_cli, database_url):
    load_v2_database(database_url)
    before = run_cli("db", "current", "--database-url", database_url)
    assert before.exit_code == 0 and before.stdout.startswith("revision v2 ") and "older than" in before.stdout
    upgraded = run_cli("db", "upgrade", "--database-url", database_url)
    assert upgraded.exit_code == 0 and f"from revision v2 to {head_revision()}" in upgraded.stdout
    listed = run_cli("traces", "list", "--json", "--lookback", "3650d", "--limit", "100",
                     "--database-url", database_url)
    assert len(json.loads(listed.stdout)["traces"]) == 6  # the finalized traces of the fixture


def test_a_newer_database_is_reported_and_not_touched(run_cli, sqlite_url):
    engine = open_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    shown = run_cli("db", "current", "--database-url", sqlite_url)
    assert shown.exit_code == 0 and "newer than this Contrail" in shown.stdout
    refused = run_cli("db", "upgrade", "--database-url", sqlite_url)
    assert refused.exit_code == 1 and "revision 9999 is newer than this Contrail" in refused.stderr
