"""Helpers for the Celery tests: real worker subprocesses and spans read back from the stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import redis

from tests.support.servers import wait_until
from tracer.codec import decode_entry

ROOT = Path(__file__).resolve().parents[2]
CELERY = str(Path(sys.executable).with_name("celery"))
STREAM = "contrail:spans"


class Worker:
    """A `celery worker` subprocess; its log is kept for failure messages."""

    def __init__(self, env: dict[str, str], queue: str, pool: str = "prefork", concurrency: int = 2,
                 extra: Iterable[str] = (), log_dir: Path | None = None, name: str | None = None):
        self.queue = queue
        self.name = name or f"{queue}@%h"
        self.log_path = Path(log_dir or "/tmp") / f"worker-{queue}-{os.getpid()}-{time.monotonic_ns()}.log"
        self.env = {**os.environ, **env, "CONTRAIL_TEST_QUEUE": queue}
        self.cmd = [CELERY, "-A", "tests.celery.apps.tasks", "worker", f"--pool={pool}", "-c", str(concurrency),
                    "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", queue, "-n", self.name,
                    "-l", "info", *extra]
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60) -> "Worker":
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self._check_alive() and " ready." in self.log(), timeout=timeout,
                   message=f"celery worker on {self.queue}")
        return self

    def _check_alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-3000:]}")
        return True

    def log(self) -> str:
        try:
            return self.log_path.read_text()
        except OSError:
            return ""

    def stop(self) -> None:
        """Warm shutdown (flushes spans), then kill the whole process group if it lingers."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        self._log.close()
        self.process = None


def read_spans(client: redis.Redis, stream: str = STREAM) -> list[dict[str, Any]]:
    spans = []
    for _, fields in client.xrange(stream):
        spans.extend(decode_entry(fields).spans)
    return spans


def trace_spans(client: redis.Redis, trace_id: str) -> list[dict[str, Any]]:
    return [s for s in read_spans(client) if s["trace_id"] == trace_id]


def wait_for_spans(client: redis.Redis, trace_id: str, done: Callable[[list[dict]], bool], timeout: float = 30,
                   message: str = "spans") -> list[dict[str, Any]]:
    """Poll the stream until ``done(spans of the trace)`` holds; return those spans."""
    result: list[dict] = []

    def check() -> bool:
        nonlocal result
        result = trace_spans(client, trace_id)
        return done(result)

    try:
        wait_until(check, timeout=timeout, message=message)
    except AssertionError as exc:
        names = sorted((s["name"], s["span_id"], s["parent_span_id"]) for s in result)
        raise AssertionError(f"{exc}; spans so far: {names}") from None
    return result


def named(spans: list[dict], name: str) -> list[dict]:
    return [s for s in spans if s["name"] == name]


def one(spans: list[dict], name: str) -> dict:
    found = named(spans, name)
    assert len(found) == 1, f"expected one span {name!r}, found {len(found)}: {[s['name'] for s in spans]}"
    return found[0]


def count(name: str, n: int) -> Callable[[list[dict]], bool]:
    return lambda spans: len(named(spans, name)) >= n


def hex_trace(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


def hex_span(span: Any) -> str:
    return format(span.get_span_context().span_id, "016x")
