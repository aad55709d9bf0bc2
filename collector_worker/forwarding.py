"""Forwarding spans to an OTLP/HTTP endpoint, so Contrail can sit in front of an existing backend.

Two modes (``forward_mode``):

* ``stored``: every span is queued as soon as its ingest transaction committed.
* ``kept``: only spans of traces tail sampling kept. The finalizer calls :func:`on_finalized` inside its
  write transaction; the trace blocks it wrote are queued when that transaction commits, and the forwarder
  thread sends of each block the spans that were merged into it from staging this time. The first
  finalization of a trace sends all of its spans; a re-finalization (a late span) sends only the late
  spans, since the spans already in the block were sent when the block was written. A dropped trace has
  no block and sends nothing. Spans the finalizer did not read yet stay staged for its next pass, so
  nothing is skipped. The queueing happens on SQLAlchemy's commit event, just before the database's
  COMMIT: should that COMMIT itself fail, the trace is finalized (and sent) again -- at least once, never
  lost.

Ingest never waits for the endpoint: spans go into a bounded queue (full -> dropped and counted) and one
background thread sends them in batches (binary OTLP protobuf, ``exporters.otlp_proto``, the encoding every
OTLP/HTTP receiver reads) with ``forward_headers``,
retrying 429/5xx and connection errors with back-off a few times before the batch is dropped and counted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import weakref
from typing import Any

import requests
from sqlalchemy import event

from .exporters import otlp_proto
from .storage import blocks

log = logging.getLogger(__name__)

QUEUE_SIZE = 20_000  # spans waiting to be sent; beyond it new spans are dropped (forward_dropped)
BATCH_SIZE = 512
BATCH_DELAY = 1.0  # seconds a partial batch waits for more spans
ATTEMPTS = 4
TIMEOUT = 10.0
RETRY_STATUSES = {429, 500, 502, 503, 504}

_counters = {"forwarded_spans": 0, "forward_dropped": 0, "forward_errors": 0}
_lock = threading.Lock()

# Forwarders in ``kept`` mode by the engine their collector finalizes with (see :func:`on_finalized`).
_kept: "weakref.WeakKeyDictionary[Any, Forwarder]" = weakref.WeakKeyDictionary()


def _count(name: str, amount: int = 1) -> None:
    with _lock:
        _counters[name] += amount


def counters() -> dict[str, int]:
    """This process's forwarding counters, for the collector report."""
    with _lock:
        return dict(_counters)


def start(settings: Any, engine: Any) -> "Forwarder | None":
    """The collector's forwarder (None without ``forward_endpoint``); in kept mode the finalizer of
    ``engine`` feeds it."""
    if not settings.forward_endpoint:
        return None
    forwarder = Forwarder(settings.forward_endpoint, headers=settings.forward_headers, mode=settings.forward_mode)
    if forwarder.mode == "kept":
        _kept[engine] = forwarder
    return forwarder


def stop(engine: Any, forwarder: "Forwarder | None") -> None:
    """Unhook ``forwarder`` from ``engine``'s finalizer and send what it holds."""
    if forwarder is None:
        return
    if _kept.get(engine) is forwarder:
        del _kept[engine]
    forwarder.close()


def on_finalized(conn: Any, batch: Any) -> None:
    """In kept mode, queue the spans ``batch`` (a ``finalizer.FinalizedBatch``) merged into the blocks of
    kept traces, once ``conn``'s transaction commits. Called by the finalizer inside that transaction."""
    forwarder = _kept.get(conn.engine)
    if forwarder is None or not batch.blocks:
        return
    # kept trace -> span ids moved from staging into its block by this batch
    jobs = [(batch.blocks[trace_id], set(span_ids)) for trace_id, span_ids in batch.moved.items()
            if span_ids and trace_id in batch.blocks]
    if jobs:
        event.listen(conn, "commit", lambda _conn: forwarder.put_blocks(jobs), once=True)


class Forwarder:
    """A bounded queue of spans and the thread that posts them to ``endpoint``.

    The queue holds parts: lists of spans, or (kept mode) trace blocks with the ids of the spans to send,
    decoded on the forwarder thread so the finalizer's write lock is not held for it.
    """

    def __init__(self, endpoint: str, queue_size: int = QUEUE_SIZE, backoff: float = 0.5,
                 headers: Any = (), mode: str = "stored") -> None:
        self.endpoint = endpoint
        self.backoff = backoff
        self.mode = mode
        self.queue_size = queue_size
        self.headers = {**dict(headers), "Content-Type": otlp_proto.CONTENT_TYPE}
        self.queue: queue.SimpleQueue[tuple[str, Any, int]] = queue.SimpleQueue()
        self.queued = 0  # spans in ``queue``
        self._room = threading.Lock()
        self._carry: list[dict[str, Any]] = []  # spans taken from the queue beyond the last batch
        self.stop = threading.Event()
        self.session = requests.Session()
        self.thread = threading.Thread(target=self._run, name="contrail-forwarder", daemon=True)
        self.thread.start()

    def _reserve(self, wanted: int, partial: bool) -> int:
        """Room for ``wanted`` spans: as many as fit when ``partial``, else all of them while the queue is not
        full (a trace's spans go whole, even past the bound, so no trace is too big to forward); what is
        refused is counted dropped."""
        with self._room:
            room = max(0, self.queue_size - self.queued)
            granted = min(wanted, room) if partial else (wanted if room > 0 else 0)
            self.queued += granted
        if granted < wanted:
            _count("forward_dropped", wanted - granted)
        return granted

    def put(self, spans: list[dict[str, Any]]) -> None:
        """Queue spans without waiting; what does not fit is dropped and counted."""
        granted = self._reserve(len(spans), partial=True) if spans else 0
        if granted:
            self.queue.put(("spans", spans[:granted], granted))

    def put_blocks(self, jobs: list[tuple[bytes, set[str]]]) -> None:
        """Queue (block, span ids) pairs without waiting: those spans of each block are sent."""
        for block, span_ids in jobs:
            if self._reserve(len(span_ids), partial=False):
                self.queue.put(("block", (block, span_ids), len(span_ids)))

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued (within ``timeout``) and stop the thread."""
        self.stop.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        while not (self.stop.is_set() and self.queue.empty() and not self._carry):
            batch = self._next_batch()
            if batch:
                self._send(batch)

    def _take(self, timeout: float) -> list[dict[str, Any]]:
        kind, part, size = self.queue.get(timeout=timeout)
        with self._room:
            self.queued -= size
        if kind == "spans":
            return part
        block, span_ids = part
        try:
            return [span for span in blocks.decode(block) if span["span_id"] in span_ids]
        except Exception as exc:  # one unreadable block costs only its spans
            log.warning("cannot read a finalized trace block to forward (%s); %d spans dropped", exc, size)
            _count("forward_dropped", size)
            return []

    def _next_batch(self) -> list[dict[str, Any]]:
        batch, self._carry = self._carry, []
        deadline = time.monotonic() + BATCH_DELAY
        while len(batch) < BATCH_SIZE:
            wait = deadline - time.monotonic()
            if wait <= 0 or (self.stop.is_set() and self.queue.empty()):
                break
            try:
                batch.extend(self._take(min(wait, 0.2)))
            except queue.Empty:
                continue
        if len(batch) > BATCH_SIZE:
            batch, self._carry = batch[:BATCH_SIZE], batch[BATCH_SIZE:]
        return batch

    def _send(self, batch: list[dict[str, Any]]) -> None:
        body = otlp_proto.render(batch)  # stored spans: status_code is the span's status
        delay = self.backoff
        for attempt in range(1, ATTEMPTS + 1):
            try:
                response = self.session.post(self.endpoint, data=body, timeout=TIMEOUT,
                                             headers=self.headers)
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
        log.warning("forwarding %d spans to %s failed (%s); dropped", len(batch), _shown(self.endpoint), reason)
        _count("forward_dropped", len(batch))


def _shown(endpoint: str) -> str:
    from tracer.settings_base import mask_url

    return mask_url(endpoint) or ""
