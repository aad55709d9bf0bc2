"""`contrail up --demo` end to end: real bundled Redis, collector, gunicorn web app, demo services, Celery.

Starts the stack in a temporary data directory, waits for the dashboard and
the API, finds demo traces that cross three services and include Celery
tasks, stops it with SIGINT, checks that no child process is left, starts it
again and finds the same traces and the same Redis data.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import urllib.request

import psutil
import pytest

from tests.support.servers import free_port, wait_until

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent.parent


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, json.loads(response.read())


def get_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


class Stack:
    """One `contrail up` process and its collected output."""

    def __init__(self, data_dir, port: int, env: dict):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "contrail_cli", "up", "--data-dir", str(data_dir), "--port", str(port),
             "--demo"], env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for raw in iter(self.process.stdout.readline, b""):
            self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def descendants(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children(recursive=True)

    def interrupt(self, timeout: float = 60) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout)
        self.reader.join(5)
        return code

    def kill(self):
        if self.process.poll() is None:
            for child in self.descendants():
                child.kill()
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(process)
        except psutil.NoSuchProcess:
            pass
    return left


def celery_demo_traces(base: str) -> list[dict]:
    """Finished demo traces touching gateway, retrieval and the Celery worker, with their spans."""
    _status, found = get_json(f"{base}/api/v1/traces?service=retrieval-worker&limit=20")
    out = []
    for summary in found["traces"]:
        if len(summary["services"]) < 3:
            continue
        _status, trace = get_json(f"{base}/api/v1/traces/{summary['trace_id']}")
        runs = [s for s in trace["spans"] if s["service"] == "retrieval-worker" and s["kind"] == "consumer"]
        if runs and {"gateway", "retrieval", "retrieval-worker"} <= set(summary["services"]):
            out.append(trace)
    return out


@pytest.fixture
def stack_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTRAIL_", "DEMO_"))}
    env.update({"CONTRAIL_QUIET_PERIOD": "1s", "PYTHONPATH": str(ROOT), "CONTRAIL_OTLP_GRPC_PORT": "0"})
    return env


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_up_demo_serves_cross_service_traces_stops_cleanly_and_restarts(tmp_path, stack_env):
    data_dir = tmp_path / "data"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stacks: list[Stack] = []
    try:
        first = Stack(data_dir, port, stack_env)
        stacks.append(first)
        wait_until(lambda: "Contrail is up: dashboard" in first.output or first.process.poll() is not None,
                   timeout=120, interval=0.5, message="the stack to be up")
        assert first.process.poll() is None, first.output
        assert f"dashboard {base}/" in first.output
        assert get_status(f"{base}/") == 200
        assert get_json(f"{base}/api/v1/traces")[0] == 200
        redis_port = int((data_dir / "redis.port").read_text())
        assert redis_port != 6379
        # The user is told how to point a traced service at this Redis (its default is 6379).
        assert f"export CONTRAIL_REDIS_URL=redis://127.0.0.1:{redis_port}/0" in first.output

        traces = wait_until(lambda: celery_demo_traces(base), timeout=120, interval=1.0,
                            message="a finished demo trace across gateway, retrieval and the Celery worker")
        trace = traces[0]
        names = {s["name"] for s in trace["spans"]}
        assert any(name.startswith("run demo.") for name in names), names
        assert any(name.startswith("execute_tool ") for name in names), names
        assert "invoke_agent research-agent" in names

        # `contrail demo` finds the gateway of this data directory by itself.
        demo = subprocess.run([sys.executable, "-m", "contrail_cli", "demo", "--requests", "3", "--json"],
                              env={**stack_env, "CONTRAIL_DATA_DIR": str(data_dir)}, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert demo.returncode == 0, demo.stderr
        assert json.loads(demo.stdout)["ok"] == 3
        # So does `contrail doctor`: it checks this stack's Redis, not whatever listens on 6379.
        doctor = subprocess.run([sys.executable, "-m", "contrail_cli", "doctor", "--json"],
                                env={**stack_env, "CONTRAIL_DATA_DIR": str(data_dir)}, cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["redis"]["detail"].startswith(f"reachable at redis://127.0.0.1:{redis_port}/0"), doctor.stdout
        assert "consumer group" not in checks, doctor.stdout  # reported only when the group is missing
        assert checks["consumers"]["status"] == "OK", doctor.stdout

        import redis

        marker = redis.Redis(port=redis_port)
        marker.set("contrail-test:marker", "kept")
        marker.close()

        children = first.descendants()
        names_running = " ".join(" ".join(c.cmdline()) for c in alive(children))
        for part in ("redis-server", "collector", "gunicorn", "celery", "contrail_demo.loadgen"):
            assert part in names_running, part
        # the demo's simulated vector-db timeouts are traced as errors but not logged as worker tracebacks
        assert "raised unexpected: TimeoutError" not in first.output
        assert first.interrupt() == 0, first.output[-3000:]
        wait_until(lambda: not alive(children), timeout=20, message="every child to be gone")
        assert "stopped" in first.lines[-1]

        second = Stack(data_dir, port, stack_env)
        stacks.append(second)
        wait_until(lambda: "Contrail is up: dashboard" in second.output or second.process.poll() is not None,
                   timeout=120, interval=0.5, message="the stack to be up again")
        assert second.process.poll() is None, second.output
        assert int((data_dir / "redis.port").read_text()) == redis_port
        status, again = get_json(f"{base}/api/v1/traces/{trace['trace_id']}")
        assert status == 200 and len(again["spans"]) == len(trace["spans"])
        marker = redis.Redis(port=redis_port)
        assert marker.get("contrail-test:marker") == b"kept"  # AOF brought the Redis data back
        marker.close()
        children = second.descendants()
        assert second.interrupt() == 0
        wait_until(lambda: not alive(children), timeout=20, message="every child to be gone")
    finally:
        for stack in stacks:
            stack.kill()
