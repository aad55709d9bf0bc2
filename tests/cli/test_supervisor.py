"""The `contrail up` supervisor, with real child processes: output, deaths, restarts, clean stops."""

from __future__ import annotations

import fcntl
import os
import sys
import textwrap

import psutil
import pytest
from click.testing import CliRunner

from tests.support.servers import wait_until
from contrail_cli.up import ChildSpec, Supervisor, redis_port, with_db_number


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.fixture
def supervisor():
    lines: list[str] = []
    sup = Supervisor(max_restarts=2, backoff=0.1, stop_timeout=2.0, echo=lines.append)
    sup.lines = lines  # type: ignore[attr-defined]
    yield sup
    sup.stop_all()


def test_child_output_is_prefixed_with_its_name(supervisor):
    supervisor.add(ChildSpec("talker", _python("print('hello from the child'); import time; time.sleep(30)")))
    wait_until(lambda: any("hello from the child" in line for line in supervisor.lines), timeout=10)
    line = next(line for line in supervisor.lines if "hello from the child" in line)
    assert line.startswith("talker")
    assert "| hello from the child" in line


def test_dead_child_is_reported_restarted_then_everything_gives_up(supervisor, tmp_path):
    starts = tmp_path / "starts"
    supervisor.add(ChildSpec("flaky", _python(f"open({str(starts)!r}, 'a').write('x'); raise SystemExit(3)")))
    wait_until(lambda: not supervisor.poll(), timeout=20, message="supervisor to give up")
    reports = [line for line in supervisor.lines if "exited unexpectedly" in line]
    assert reports and all("flaky exited unexpectedly with code 3" in line for line in reports)
    assert len(reports) == 3  # first run + max_restarts restarts
    assert starts.read_text() == "xxx"
    assert "flaky kept failing" in supervisor.failed


def test_stable_child_is_left_running(supervisor):
    supervisor.add(ChildSpec("steady", _python("import time; time.sleep(60)")))
    for _ in range(5):
        assert supervisor.poll()
    assert supervisor.child("steady").process.poll() is None
    assert not any("exited" in line for line in supervisor.lines)


def test_stop_all_kills_grandchildren_too(supervisor, tmp_path):
    pid_file = tmp_path / "grandchild.pid"
    supervisor.add(ChildSpec("parent", _python(f"""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(grandchild.pid))
        time.sleep(120)
    """)))
    wait_until(lambda: pid_file.exists() and pid_file.read_text(), timeout=10)
    parent_pid = supervisor.child("parent").process.pid
    grandchild_pid = int(pid_file.read_text())
    assert psutil.pid_exists(grandchild_pid)
    supervisor.stop_all()
    for pid in (parent_pid, grandchild_pid):
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_child_ignoring_sigterm_is_killed_after_the_timeout(supervisor, tmp_path):
    ready = tmp_path / "ready"
    supervisor.add(ChildSpec("stubborn", _python(f"""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open({str(ready)!r}, "w").write("1")
        time.sleep(120)
    """)))
    wait_until(ready.exists, timeout=10)
    pid = supervisor.child("stubborn").process.pid
    supervisor.stop_all()
    assert not psutil.pid_exists(pid)
    assert any("ignored SIGTERM" in line for line in supervisor.lines)


def test_orphaned_grandchild_of_a_dead_child_is_cleaned_up(supervisor, tmp_path):
    pid_file = tmp_path / "orphan.pid"
    supervisor.max_restarts = 0
    supervisor.add(ChildSpec("leaver", _python(f"""
        import subprocess, sys
        orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        open({str(pid_file)!r}, "w").write(str(orphan.pid))
        raise SystemExit(5)
    """)))
    wait_until(lambda: not supervisor.poll(), timeout=10)
    orphan = int(pid_file.read_text())
    wait_until(lambda: not psutil.pid_exists(orphan) or psutil.Process(orphan).status() == psutil.STATUS_ZOMBIE,
               timeout=10, message="orphan to be killed")
    assert any("leaver exited unexpectedly with code 5" in line for line in supervisor.lines)


def test_redis_port_is_remembered_and_never_6379(tmp_path):
    port, note = redis_port(tmp_path)
    assert note is None and port != 6379
    assert (tmp_path / "redis.port").read_text().strip() == str(port)
    again, note = redis_port(tmp_path)
    assert again == port and note is None


def test_redis_port_moves_when_the_remembered_port_is_taken(tmp_path):
    import socket

    port, _ = redis_port(tmp_path)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        moved, note = redis_port(tmp_path)
    assert moved != port and str(port) in note
    assert (tmp_path / "redis.port").read_text().strip() == str(moved)


def test_broker_url_uses_another_database_of_the_same_redis():
    assert with_db_number("redis://:pw@127.0.0.1:7000/0", 1) == "redis://:pw@127.0.0.1:7000/1"
    assert with_db_number("redis://h:1", 2) == "redis://h:1/2"


def test_second_up_on_a_locked_data_dir_is_refused(tmp_path):
    from contrail_cli.main import cli

    with open(tmp_path / "up.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = CliRunner().invoke(cli, ["up", "--data-dir", str(tmp_path)], env={"CONTRAIL_REDIS_URL": ""})
    assert result.exit_code == 1
    assert "another 'contrail up' is running" in result.output
    assert "Traceback" not in result.output


def test_up_rejects_bad_port_as_usage_error(tmp_path):
    from contrail_cli.main import cli

    result = CliRunner().invoke(cli, ["up", "--data-dir", str(tmp_path), "--port", "0"])
    assert result.exit_code == 2
    assert os.listdir(tmp_path) == []
