"""Finished spans → batches → one Redis stream entry per batch.

The application thread only appends a finished span to a bounded deque
(:meth:`ContrailSpanProcessor.on_end`); it never blocks and never sees an
export error. Work that ending a span can wait for (the Celery handlers'
attributes and ``end()``) can be handed to the same thread with
:meth:`ContrailSpanProcessor.defer`: it runs just before the next export. A daemon thread turns spans into codec rows, encodes a batch
per entry and pushes entries with pipelined ``XADD``. While Redis is
unreachable entries go to the disk spool and the exporter backs off; when
Redis answers again the spool is replayed in order before any new batch.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Sequence

from redis.backoff import NoBackoff
from redis.retry import Retry
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import SpanKind, StatusCode

from . import codec, otel_internals, reporting, shards
from .redis_client import connect
from .settings import TracerSettings
from .spool import DiskSpool

logger = logging.getLogger(__name__)

KIND_NAMES = {
    SpanKind.INTERNAL: "internal",
    SpanKind.SERVER: "server",
    SpanKind.CLIENT: "client",
    SpanKind.PRODUCER: "producer",
    SpanKind.CONSUMER: "consumer",
}
STATUS_NAMES = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}
ENTRIES_PER_PUSH = 16  # stream entries per pipelined round trip
DEFERRED_PER_SLICE = 16  # deferred items run between two releases of the interpreter lock
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0


# --------------------------------------------------------------------------- conversion


_attributes = otel_internals.attribute_dict  # BoundedAttributes keeps a plain dict; frozen once the span ended


def _events(events: Sequence[Any]) -> list:
    return [[e.name, e.timestamp, _attributes(e.attributes)] for e in events]


def _links(links: Sequence[Any]) -> list:
    return [[format(link.context.trace_id, "032x"), format(link.context.span_id, "016x"), _attributes(link.attributes)]
            for link in links]


def encode_sdk_spans(spans: Sequence[ReadableSpan], pid_override: int | None = None,
                 encoding: str = "msgpack") -> dict[bytes, bytes]:
    """Encode finished SDK spans as the fields of one stream entry (see :mod:`tracer.codec`)."""
    resources: list[tuple[str, dict]] = []
    resource_index: dict[int, int] = {}
    rows = []
    append = rows.append
    kinds, statuses = KIND_NAMES, STATUS_NAMES
    read = otel_internals.span_fields
    for span in spans:
        try:
            (ctx, parent, resource, status, scope, name, kind, start_time, end_time, attributes, events,
             links) = read(span)
            index = resource_index.get(id(resource))
            if index is None:
                index = resource_index[id(resource)] = len(resources)
                attrs = dict(resource.attributes)
                if pid_override is not None and "process.pid" in attrs:
                    attrs["process.pid"] = pid_override
                resources.append((str(attrs.get("service.name", "unknown_service")), attrs))
            append([
                format(ctx.trace_id, "032x"),
                format(ctx.span_id, "016x"),
                format(parent.span_id, "016x") if parent is not None else None,
                name,
                kinds.get(kind, "internal"),
                start_time,
                end_time,
                statuses.get(status.status_code, "unset"),
                status.description,
                index,
                _attributes(attributes),
                _events(events) if events else [],
                _links(links) if links else [],
                scope.name if scope is not None else None,
            ])
        except AttributeError:  # not an SDK span: go through the public interface
            append(_public_row(span, resources, resource_index))
    return codec.encode_batch(rows, resources, encoding)


def _public_row(span: Any, resources: list, resource_index: dict) -> list:
    resource = span.resource
    index = resource_index.get(id(resource))
    if index is None:
        index = resource_index[id(resource)] = len(resources)
        attrs = dict(resource.attributes)
        resources.append((str(attrs.get("service.name", "unknown_service")), attrs))
    ctx, parent, status = span.context, span.parent, span.status
    scope = getattr(span, "instrumentation_scope", None)
    return codec.span_row(
        format(ctx.trace_id, "032x"), format(ctx.span_id, "016x"),
        format(parent.span_id, "016x") if parent is not None else None,
        span.name, KIND_NAMES.get(span.kind, "internal"), span.start_time, span.end_time,
        STATUS_NAMES.get(status.status_code, "unset"), status.description, index, dict(span.attributes or {}),
        _events(span.events), _links(span.links), scope.name if scope is not None else None,
    )


# --------------------------------------------------------------------------- Redis


class RedisStreamExporter:
    """Pushes encoded entries to the span stream (each to its shard); raises when Redis is unreachable."""

    def __init__(self, settings: TracerSettings):
        self.url = settings.redis_url
        self.stream = settings.stream
        self.shards = settings.stream_shards if shards.is_sharded(settings) else 0  # 0: the one plain stream
        self.timeout = settings.export_timeout
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            self._client = connect(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=min(self.timeout, 2.0),
                retry=Retry(NoBackoff(), 0),  # the exporter has its own backoff and spool
            )
        return self._client

    def stream_of(self, fields: dict) -> str:
        """The stream (shard) an entry goes to (see tracer.shards)."""
        if not self.shards:
            return self.stream
        return shards.shard_stream(self.stream, shards.entry_shard(fields, self.shards))

    def push(self, entries: Sequence[dict]) -> None:
        client = self.client()
        try:
            if len(entries) == 1:
                client.xadd(self.stream_of(entries[0]), entries[0])
                return
            pipe = client.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(self.stream_of(fields), fields)
            pipe.execute()
        except Exception:
            self.reset()  # drop a half-broken connection; the next attempt reconnects
            raise

    def report(self, key: str, field: str, value: str) -> None:
        """Store this process's counters (tracer.reporting) in the stream's report hash."""
        try:
            self.client().hset(key, field, value)
        except Exception:
            self.reset()
            raise

    def reset(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def shutdown(self) -> None:
        self.reset()

    def forget(self) -> None:
        """In a forked child: drop the parent's client without closing it. A parent thread may have held its
        connection pool's lock at the fork; that thread does not exist here, so closing would wait forever."""
        self._client = None


# --------------------------------------------------------------------------- processor

_PROCESSORS: "weakref.WeakSet[ContrailSpanProcessor]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for processor in list(_PROCESSORS):
        processor.after_fork()


def _at_exit() -> None:
    for processor in list(_PROCESSORS):
        processor.shutdown()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_at_exit)


class ContrailSpanProcessor(SpanProcessor):
    """Bounded queue + background exporter thread + disk spool; see the module docstring."""

    def __init__(self, settings: TracerSettings, exporter: Any = None, spool: DiskSpool | None = None):
        self.settings = settings
        self.exporter = exporter if exporter is not None else RedisStreamExporter(settings)
        self.spool = spool if spool is not None else DiskSpool(settings.resolved_spool_dir, settings.spool_max_bytes)
        self._max_queue = settings.max_queue_size
        self._batch_size = settings.max_export_batch_size
        self._delay = settings.schedule_delay
        self._pid_override: int | None = None
        self._shutdown = False
        self.report_source: Callable[[], dict[str, Any]] | None = None  # set by TracingManager
        self._report_baseline: dict[str, Any] | None = None  # counters inherited from a parent process
        self._reset_state()
        _PROCESSORS.add(self)
        self._start_thread()

    def _reset_state(self) -> None:
        self._next_report = 0.0
        self._queue: deque = deque()
        self._deferred: deque = deque()  # (function, item) pairs run by the export thread; see defer()
        self._wake = threading.Event()
        self._export_lock = threading.Lock()
        self._waiters: list[threading.Event] = []
        self._waiters_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self.spans_started = 0
        self.spans_exported = 0
        self.spans_dropped = 0
        self.batches_exported = 0
        self.export_errors = 0
        self.last_export_error: str | None = None

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="contrail-export", daemon=True)
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: a fresh queue, lock, thread and connection; the parent keeps its own spans."""
        self._reset_state()
        self._pid_override = os.getpid()
        try:
            getattr(self.exporter, "forget", self.exporter.reset)()
        except Exception:
            pass
        self.spool.after_fork()
        if self.report_source is not None:
            try:  # counters not reset above (head sampling) are the parent's to report, not this child's
                self._report_baseline = self.report_source()
            except Exception:
                self._report_baseline = None
        if not self._shutdown:
            self._start_thread()

    # ------------------------------------------------------------ application thread
    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.spans_started += 1

    def on_end(self, span: ReadableSpan) -> None:
        if not span.context.trace_flags.sampled:
            return
        queue = self._queue
        if self._shutdown or len(queue) >= self._max_queue:
            self.spans_dropped += 1
            return
        queue.append(span)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def defer(self, finish: Callable[[Any], Any], item: Any) -> None:
        """Run ``finish(item)`` on the export thread, before its next export (or at flush/shutdown).

        For work the application thread should not wait for, such as building
        and ending a span whose end time is already known. Bounded like the
        queue: past ``max_queue_size`` waiting items, ``finish`` runs here, now.
        """
        deferred = self._deferred
        if self._shutdown or self._thread is None or len(deferred) >= self._max_queue:
            self._finish(finish, item)
            return
        deferred.append((finish, item))
        if len(deferred) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    @staticmethod
    def _finish(finish: Callable[[Any], Any], item: Any) -> None:
        try:
            finish(item)
        except Exception:  # a deferred span must not stop the export thread
            logger.exception("contrail: deferred span work failed")

    def _run_deferred(self) -> None:
        """Run the deferred work in slices, giving the interpreter lock back between them."""
        deferred, finish_one = self._deferred, self._finish
        done = 0
        while True:
            try:
                finish, item = deferred.popleft()
            except IndexError:
                return
            finish_one(finish, item)
            done += 1
            if done % DEFERRED_PER_SLICE == 0:
                time.sleep(0)  # an application thread waiting for the lock gets it now, not in 5 ms

    # ------------------------------------------------------------ export thread
    def _run(self) -> None:
        while True:
            self._wake.wait(self._delay)
            self._wake.clear()
            stopping = self._shutdown
            try:
                self._export_pending()
            except Exception:  # the export thread must survive anything
                logger.exception("contrail: export loop error")
            self._maybe_report(force=stopping)
            if stopping:
                return

    def _maybe_report(self, force: bool = False) -> None:
        """Leave this process's counters next to the stream (see tracer.reporting); never raises."""
        interval = self.settings.report_interval
        report = getattr(self.exporter, "report", None)
        if self.report_source is None or report is None or interval <= 0 or time.monotonic() < self._retry_at:
            return
        now = time.monotonic()
        if not force and now < self._next_report:
            return
        self._next_report = now + interval
        try:
            info = self.report_source()
            report(reporting.reports_key(self.settings.stream), reporting.report_field(info["service_name"]),
                   reporting.build_report(info, baseline=self._report_baseline))
        except Exception:  # Redis down: counters are cumulative, the next report says it all
            pass

    def _export_pending(self) -> None:
        with self._export_lock:
            with self._waiters_lock:
                waiters, self._waiters = self._waiters, []
            # after taking the waiters: a flush is answered only once the work deferred before it ran
            self._run_deferred()
            queue = self._queue
            entries: list[tuple[dict, int]] = []
            sharded = self.settings.stream_shards
            while queue:
                count = min(len(queue), self._batch_size * sharded)
                batch = [queue.popleft() for _ in range(count)]
                for part in (self._by_shard(batch) if sharded > 1 else (batch,)):
                    try:
                        fields = encode_sdk_spans(part, self._pid_override)
                        if sharded > 1:
                            shards.routed(fields, part[0].context.trace_id)
                        entries.append((fields, len(part)))
                    except Exception as exc:
                        self.spans_dropped += len(part)
                        self._note_error(exc)
                if len(entries) >= ENTRIES_PER_PUSH:
                    self._deliver(entries)
                    entries = []
            if entries or self.spool.pending():
                self._deliver(entries)
            for waiter in waiters:
                waiter.set()

    def _by_shard(self, batch: list) -> list[list]:
        """``batch`` split by the shard of each span's trace, in batches of at most ``max_export_batch_size``."""
        count, size = self.settings.stream_shards, self._batch_size
        groups: list[list] = [[] for _ in range(count)]
        for span in batch:
            groups[shards.trace_shard(span.context.trace_id, count)].append(span)
        return [group[i:i + size] for group in groups for i in range(0, len(group), size)]

    def _deliver(self, entries: list[tuple[dict, int]]) -> None:
        if time.monotonic() < self._retry_at:
            self._to_spool(entries)
            return
        try:
            if self.spool.pending():
                self.spool.replay(self._push_counted)
            if entries:
                self._push_counted([fields for fields, _ in entries])
        except Exception as exc:
            self._note_error(exc)
            self._backoff = min(max(self._backoff * 2, BACKOFF_FIRST), BACKOFF_MAX)
            self._retry_at = time.monotonic() + self._backoff
            self._to_spool(entries)
        else:
            self._backoff = 0.0
            self._retry_at = 0.0

    def _push_counted(self, fields_list: Sequence[dict]) -> None:
        self.exporter.push(fields_list)
        self.batches_exported += len(fields_list)
        for fields in fields_list:
            count = fields.get(b"n") or fields.get("n") or b"0"
            self.spans_exported += int(count)

    def _to_spool(self, entries: list[tuple[dict, int]]) -> None:
        for fields, count in entries:
            self.spool.append(fields, count)

    def _note_error(self, exc: BaseException) -> None:
        self.export_errors += 1
        self.last_export_error = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------ control
    def force_flush(self, timeout_millis: float = 30000) -> bool:
        """Export everything finished so far; True when it all reached Redis within the timeout."""
        timeout = timeout_millis / 1000.0
        if self._thread is None or not self._thread.is_alive():
            if not self._export_lock.acquire(timeout=max(timeout, 0)):
                return False
            self._export_lock.release()
            self._export_pending()
            return not self._queue and not self._deferred and not self.spool.pending()
        waiter = threading.Event()
        with self._waiters_lock:
            self._waiters.append(waiter)
        self._wake.set()
        done = waiter.wait(timeout)
        return done and not self._queue and not self._deferred and not self.spool.pending()

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop accepting spans, export (or spool) what is queued, stop the thread. Idempotent."""
        if self._shutdown:
            return
        self._run_deferred()  # its spans end into the queue, which stops taking spans below
        self._shutdown = True
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else self.settings.export_timeout + 2.0)
        if thread is None or not thread.is_alive():
            self._export_pending()  # anything that raced in after the last loop
            self.spool.close()
            try:
                self.exporter.shutdown()
            except Exception:
                pass
        _PROCESSORS.discard(self)

    # ------------------------------------------------------------ counters
    def info(self) -> dict[str, Any]:
        return {
            "spans_started": self.spans_started,
            "spans_exported": self.spans_exported,
            "spans_dropped": self.spans_dropped + self.spool.spans_dropped,
            "spans_dropped_queue_full": self.spans_dropped,
            "spans_dropped_spool_full": self.spool.spans_dropped_full,
            "spans_dropped_spool_error": self.spool.spans_dropped_error,
            "spans_queued": len(self._queue) + len(self._deferred),
            "spans_spooled": self.spool.spans_spooled,
            "batches_exported": self.batches_exported,
            "spool_bytes": self.spool.bytes,
            "spool_pending": self.spool.pending(),
            "spool_records_corrupt": self.spool.records_corrupt,
            "last_spool_error": self.spool.last_error,
            "export_errors": self.export_errors,
            "last_export_error": self.last_export_error,
        }
