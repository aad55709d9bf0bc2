"""`contrail cleanup --all`: asks first (--yes skips), --dry-run only counts, then every trace table is empty."""

from __future__ import annotations

from click.testing import CliRunner

from contrail_cli.main import cli
from collector_worker.storage import open_engine
from collector_worker.storage.wipe import count_all
from tests.web.seed import standard_dataset, store


def counts(url):
    engine = open_engine(url)
    try:
        return count_all(engine)
    finally:
        engine.dispose()


def test_cleanup_all_confirms_then_wipes(sqlite_url):
    store(sqlite_url, standard_dataset().all_spans)
    stored = counts(sqlite_url)
    runner = CliRunner()

    refused = runner.invoke(cli, ["cleanup", "--all", "--database-url", sqlite_url], input="n\n")
    assert refused.exit_code == 1 and "Delete ALL trace data" in refused.output and "Aborted" in refused.output
    assert counts(sqlite_url) == stored

    dry = runner.invoke(cli, ["cleanup", "--all", "--dry-run", "--database-url", sqlite_url])
    assert dry.exit_code == 0 and f"would delete {sum(stored.values())} rows" in dry.output
    assert counts(sqlite_url) == stored

    confirmed = runner.invoke(cli, ["cleanup", "--all", "--database-url", sqlite_url], input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert f"deleted {sum(stored.values())} rows" in confirmed.output and "trace_blocks" in confirmed.output
    assert set(counts(sqlite_url).values()) == {0}

    store(sqlite_url, standard_dataset().all_spans)
    assert runner.invoke(cli, ["cleanup", "--all", "--yes", "--database-url", sqlite_url]).exit_code == 0
    assert set(counts(sqlite_url).values()) == {0}


def test_cleanup_all_refuses_a_retention(sqlite_url):
    result = CliRunner().invoke(cli, ["cleanup", "--all", "--yes", "--retention", "1d", "--database-url", sqlite_url])
    assert result.exit_code == 2 and "--retention" in result.output
