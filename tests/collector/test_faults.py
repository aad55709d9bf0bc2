"""Collector processes under faults: SIGKILL mid-stream, SIGTERM, dying children; the cleanup command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import func, select, text

from contrail_cli.main import cli
from collector_worker.storage import block_store, open_engine, schema
from collector_worker.storage.writer import store_spans
from tests.collector.test_consumer import make_batches, make_trace, publish
from tests.support.servers import free_port, wait_until
from tracer.codec import encode_span_dicts

ROOT = Path(__file__).resolve().parents[2]
STREAM, GROUP = "contrail:spans", "contrail-collectors"


class Collectors:
    """Collector subprocesses of one test; every one is killed in teardown."""

    def __init__(self, tmp_path: Path, redis_url: str, database_url: str):
        self.tmp_path, self.redis_url, self.database_url = tmp_path, redis_url, database_url
        self.processes: list[subprocess.Popen] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"collector-{len(self.processes)}.log", "wb")
        environment = dict(os.environ, CONTRAIL_CLAIM_IDLE="1s", CONTRAIL_BLOCK="200ms",
                           CONTRAIL_QUIET_PERIOD="500ms", PYTHONPATH=str(ROOT))
        environment.update(env)
        environment.pop("CONTRAIL_CONSUMER_NAME", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "collector_worker", "--redis-url", self.redis_url,
             "--database-url", self.database_url, *args],
            stdout=log, stderr=subprocess.STDOUT, env=environment, cwd=ROOT)
        process.log_path = log.name  # type: ignore[attr-defined]
        log.close()
        self.processes.append(process)
        return process

    def wait_until(self, predicate, process: subprocess.Popen, timeout: float, message: str):
        """wait_until that shows the collector's own output when it times out."""
        try:
            return wait_until(predicate, timeout=timeout, message=message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\ncollector exit code: {process.poll()}\ncollector output:\n"
                                 f"{self.log(process)[-4000:]}") from None

    def log(self, process: subprocess.Popen) -> str:
        return Path(process.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def kill_all(self) -> None:
        """SIGKILL every collector and its children (a later test must not meet a leftover consumer)."""
        for process in self.processes:
            if process.poll() is None:
                try:
                    children = psutil.Process(process.pid).children(recursive=True)
                except psutil.NoSuchProcess:
                    children = []
                process.kill()
                process.wait(10)
                for child in children:
                    try:
                        child.kill()
                        child.wait(10)
                    except psutil.NoSuchProcess:
                        pass


@pytest.fixture
def sqlite_collectors(tmp_path, redis_url, sqlite_url):
    collectors = Collectors(tmp_path, redis_url, sqlite_url)
    yield collectors
    collectors.kill_all()


def span_count(engine) -> int:
    with engine.connect() as conn:
        return len(block_store.all_spans(conn))


def span_total(engine) -> int:
    """Spans stored (staged and in blocks) from the row counts alone: cheap enough to poll a run with."""
    with engine.connect() as conn:
        return sum(int(conn.execute(text(f"SELECT coalesce(sum(span_count), 0) FROM {table}")).scalar_one())
                   for table in ("spans", "traces"))


def pending(client) -> int:
    return client.xpending(STREAM, GROUP)["pending"]


def consumer_pids(client) -> dict[str, int]:
    """Consumer name -> pid (names are host-pid by default)."""
    try:
        consumers = client.xinfo_consumers(STREAM, GROUP)
    except redis.ResponseError:
        return {}
    return {c["name"].decode(): int(c["name"].decode().rsplit("-", 1)[1]) for c in consumers}


def test_sigkill_mid_stream_then_restart_loses_and_duplicates_nothing(client, sqlite_collectors, sqlite_engine):
    publish(client, make_batches(60, traces_per_entry=5, spans_per_trace=10))
    victim = sqlite_collectors.start(CONTRAIL_READ_COUNT="4")
    wait_until(lambda: span_count(sqlite_engine) >= 200, timeout=60, message="the first collector storing")
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    stored_at_kill = span_count(sqlite_engine)
    publish(client, make_batches(60, traces_per_entry=5, spans_per_trace=10))

    survivor = sqlite_collectors.start(CONTRAIL_READ_COUNT="4")
    wait_until(lambda: span_count(sqlite_engine) == 6000 and pending(client) == 0, timeout=120,
               message="all 6000 spans stored and acknowledged")
    assert stored_at_kill < 6000
    time.sleep(1.0)  # anything redelivered late would show up as extra rows or dead letters
    assert span_count(sqlite_engine) == 6000
    assert client.xlen(f"{STREAM}:dead") == 0
    assert survivor.poll() is None


def test_sigterm_finishes_the_batch_in_hand_and_exits_zero(client, sqlite_collectors, sqlite_engine):
    publish(client, make_batches(80, traces_per_entry=5, spans_per_trace=10))
    collector = sqlite_collectors.start(CONTRAIL_READ_COUNT="2")
    wait_until(lambda: span_count(sqlite_engine) >= 100, timeout=60, message="collector storing")
    collector.send_signal(signal.SIGTERM)
    assert collector.wait(30) == 0, sqlite_collectors.log(collector)
    assert "stopped" in sqlite_collectors.log(collector)
    # Whatever it read it stored and acknowledged before leaving.
    assert pending(client) == 0
    stored = span_count(sqlite_engine)
    assert stored % 50 == 0  # whole entries only
    successor = sqlite_collectors.start()
    wait_until(lambda: span_count(sqlite_engine) == 4000, timeout=120, message="the rest stored by a successor")
    successor.send_signal(signal.SIGINT)
    assert successor.wait(30) == 0


def test_supervisor_reports_a_dead_child_and_exits_nonzero(client, sqlite_collectors):
    parent = sqlite_collectors.start("--processes", "2")
    pids = sqlite_collectors.wait_until(lambda: len(consumer_pids(client)) == 2 and consumer_pids(client), parent,
                                        timeout=60, message="two consumers in the group")
    victim = sorted(pids.values())[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: "killed by signal 9" in sqlite_collectors.log(parent), timeout=30,
               message="the parent reporting the dead child")
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(30) == 1
    survivor = sorted(pids.values())[1]
    with pytest.raises(ProcessLookupError):
        os.kill(survivor, 0)


def test_children_stop_when_the_supervisor_is_killed(client, sqlite_collectors):
    parent = sqlite_collectors.start("--processes", "2")
    pids = sqlite_collectors.wait_until(lambda: len(consumer_pids(client)) == 2 and consumer_pids(client), parent,
                                        timeout=60, message="two consumers in the group")
    children = [psutil.Process(pid) for pid in pids.values()]
    parent.kill()
    parent.wait(10)
    gone, alive = psutil.wait_procs(children, timeout=60)
    assert not alive, f"consumers left running without their supervisor: {[p.pid for p in alive]}"
    assert "supervisor" in sqlite_collectors.log(parent) and "is gone" in sqlite_collectors.log(parent)


def test_supervisor_stops_all_children_on_sigterm(client, sqlite_collectors, sqlite_engine):
    publish(client, make_batches(10))
    parent = sqlite_collectors.start("--processes", "2")
    sqlite_collectors.wait_until(lambda: span_count(sqlite_engine) == 500, parent, timeout=60, message="spans stored")
    pids = sqlite_collectors.wait_until(lambda: len(consumer_pids(client)) == 2 and consumer_pids(client), parent,
                                        timeout=60, message="both consumers in the group")
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(30) == 0, sqlite_collectors.log(parent)
    for pid in pids.values():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
@pytest.mark.postgres
def test_three_collectors_on_postgres_two_killed_every_span_once(client, tmp_path, redis_url, postgres_url):
    """Issue 4's fault test: 100k spans, three collectors, two SIGKILLed mid-run."""
    engine = open_engine(postgres_url)
    collectors = Collectors(tmp_path, redis_url, postgres_url)
    try:
        pipe = client.pipeline(transaction=False)
        for _ in range(200):
            pipe.xadd(STREAM, encode_span_dicts([s for _ in range(50) for s in make_trace(10)]))
        pipe.execute()
        workers = [collectors.start(CONTRAIL_READ_COUNT="4") for _ in range(3)]
        wait_until(lambda: span_total(engine) >= 15_000, timeout=120, interval=0.05, message="collectors storing")
        for victim in workers[:2]:
            victim.send_signal(signal.SIGKILL)
        for victim in workers[:2]:
            victim.wait(10)
        assert span_total(engine) < 100_000
        wait_until(lambda: span_count(engine) == 100_000 and pending(client) == 0, timeout=150, interval=0.5,
                   message="every span stored and every entry acknowledged")
        time.sleep(1.0)
        assert span_count(engine) == 100_000
        with engine.connect() as conn:
            distinct = len({(s["trace_id"], s["span_id"]) for s in block_store.all_spans(conn)})
        assert distinct == 100_000
        assert client.xlen(f"{STREAM}:dead") == 0
        assert workers[2].poll() is None
    finally:
        collectors.kill_all()
        engine.dispose()


def test_collector_refuses_an_unreadable_price_table_with_exit_2(sqlite_url, tmp_path, monkeypatch):
    broken = tmp_path / "prices.json"
    broken.write_text("{not json")
    monkeypatch.setenv("CONTRAIL_PRICE_TABLE", str(broken))
    result = CliRunner().invoke(cli, ["collector", "--database-url", sqlite_url])
    assert result.exit_code == 2
    assert "CONTRAIL_PRICE_TABLE" in result.output and str(broken) in result.output
    assert "Traceback" not in result.output


# --------------------------------------------------------------------------- contrail cleanup


def test_cleanup_rejects_a_bad_duration_with_exit_2(sqlite_url):
    result = CliRunner().invoke(cli, ["cleanup", "--retention", "soon", "--database-url", sqlite_url])
    assert result.exit_code == 2
    assert "invalid duration 'soon'" in result.output
    assert "Traceback" not in result.output


def test_cleanup_reports_an_unreachable_database_with_exit_1():
    url = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/contrail"
    result = CliRunner().invoke(cli, ["cleanup", "--retention", "7d", "--database-url", url])
    assert result.exit_code == 1
    assert "error: cannot clean up postgresql+psycopg://nobody@127.0.0.1" in result.output
    assert "Traceback" not in result.output


def test_cleanup_of_a_missing_sqlite_file_fails_without_creating_it(tmp_path):
    path = tmp_path / "typo.db"
    for extra in ([], ["--dry-run"]):
        result = CliRunner().invoke(cli, ["cleanup", "--retention", "7d", "--database-url", f"sqlite:///{path}",
                                          *extra])
        assert result.exit_code == 1
        assert f"error: no database at {path}" in result.output
        assert not path.exists()


def test_cleanup_deletes_old_data_only(sqlite_url, sqlite_engine):
    now = time.time_ns()
    old, recent = make_trace(4), make_trace(3)
    for span in old:
        span["start_ns"], span["end_ns"] = now - 10 * 86400 * 10**9, now - 10 * 86400 * 10**9 + 1000
    for span in recent:
        span["start_ns"], span["end_ns"] = now - 3600 * 10**9, now - 3600 * 10**9 + 1000
    with sqlite_engine.begin() as conn:
        store_spans(conn, old + recent, received_ns=now)

    dry = CliRunner().invoke(cli, ["cleanup", "--retention", "7d", "--database-url", sqlite_url, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would delete" in dry.output
    assert span_count(sqlite_engine) == 7

    result = CliRunner().invoke(cli, ["cleanup", "--retention", "7d", "--database-url", sqlite_url,
                                      "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert "deleted" in result.output and "older than 7d" in result.output
    with sqlite_engine.connect() as conn:
        left = {s["span_id"] for s in block_store.all_spans(conn)}
    assert left == {s["span_id"] for s in recent}
