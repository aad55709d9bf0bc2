"""Forwarding stored spans to an OTLP/HTTP endpoint, so Contrail can sit in front of an existing backend.

Ingest never waits for the endpoint: spans go into a bounded queue (full -> dropped and counted) and one
background thread sends them in batches (OTLP/JSON, ``exporters.otlp_json``), retrying 429/5xx and
connection errors with back-off a few times before the batch is dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

import requests

from .exporters import otlp_json

log = logging.getLogger(__name__)

QUEUE_SIZE = 20_000  # spans waiting to be sent; beyond it new spans are dropped (forward_dropped)
BATCH_SIZE = 512
BATCH_DELAY = 1.0  # seconds a partial batch waits for more spans
ATTEMPTS = 4
TIMEOUT = 10.0
RETRY_STATUSES = {429, 500, 502, 503, 504}

_counters = {"forwarded_spans": 0, "forward_dropped": 0, "forward_errors": 0}
_lock = threading.Lock()


def _count(name: str, amount: int = 1) -> None:
    with _lock:
        _counters[name] += amount


def counters() -> dict[str, int]:
    """This process's forwarding counters, for the collector report."""
    with _lock:
        return dict(_counters)


class Forwarder:
    """A bounded queue of spans and the thread that posts them to ``endpoint``."""

    def __init__(self, endpoint: str, queue_size: int = QUEUE_SIZE, backoff: float = 0.5) -> None:
        self.endpoint = endpoint
        self.backoff = backoff
        self.queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=queue_size)
        self.stop = threading.Event()
        self.session = requests.Session()
        self.thread = threading.Thread(target=self._run, name="contrail-forwarder", daemon=True)
        self.thread.start()

    def put(self, spans: list[dict[str, Any]]) -> None:
        """Queue spans without waiting; what does not fit is dropped and counted."""
        for i, span in enumerate(spans):
            try:
                self.queue.put_nowait(span)
            except queue.Full:
                _count("forward_dropped", len(spans) - i)
                return

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``) and stop the thread."""
        self.stop.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not (self.stop.is_set() and self.queue.empty()):
            batch = self._next_batch()
            if batch:
                self._send(batch)

    def _next_batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        deadline = time.monotonic() + BATCH_DELAY
        while len(batch) < BATCH_SIZE:
            wait = deadline - time.monotonic()
            if wait <= 0 or (self.stop.is_set() and self.queue.empty()):
                break
            try:
                batch.append(self.queue.get(timeout=min(wait, 0.2)))
            except queue.Empty:
                continue
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> None:
        body = otlp_json.render({"trace_id": None, "spans": batch})
        delay = self.backoff
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self.session.post(self.endpoint, data=body.encode(), timeout=TIMEOUT,
                                             headers={"Content-Type": "application/json"})
                if response.status_code < 300:
                    _count("forwarded_spans", len(batch))
                    return
                retry = response.status_code in RETRY_STATUSES
                reason = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                retry, reason = True, type(exc).__name__
            _count("forward_errors")
            if not retry or attempt == ATTEMPTS or self.stop.wait(delay):
                break
            delay *= 2
        log.warning("forwarding %d spans to %s failed (%s); dropped", len(batch), self.endpoint, reason)
        _count("forward_dropped", len(batch))
