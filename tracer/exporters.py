"""Exporters besides the Redis stream: console, JSON-lines file, OTLP/HTTP.

Each runs behind its own OpenTelemetry ``BatchSpanProcessor`` (a thread and a
bounded queue of its own), so a slow terminal, disk or endpoint never blocks
the application nor the Redis export. Every exporter is wrapped in
:class:`CountingExporter`, whose counters appear in ``get_tracer_info()``
under ``exporters``: spans handed to the exporter, exported, failed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from typing import IO, Any, Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from .private_files import create_private_file, make_private_dir
from .settings import TracerSettings

OTLP_DEFAULT_ENDPOINT = "http://localhost:4318/v1/traces"
_KINDS = {SpanKind.INTERNAL: "internal", SpanKind.SERVER: "server", SpanKind.CLIENT: "client",
          SpanKind.PRODUCER: "producer", SpanKind.CONSUMER: "consumer"}
_STATUSES = {StatusCode.UNSET: "unset", StatusCode.OK: "ok", StatusCode.ERROR: "error"}


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """A finished span as a plain JSON-ready dict (W3C hex ids, unix-nanosecond times)."""
    ctx = span.context
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "trace_id": format(ctx.trace_id, "032x"),
        "span_id": format(ctx.span_id, "016x"),
        "parent_span_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
        "name": span.name,
        "kind": _KINDS.get(span.kind, "internal"),
        "service": str(span.resource.attributes.get("service.name", "unknown_service")),
        "start_unix_nano": start,
        "end_unix_nano": end,
        "duration_ms": (end - start) / 1e6,
        "status": _STATUSES.get(span.status.status_code, "unset"),
        "status_message": span.status.description,
        "attributes": dict(span.attributes or {}),
        "events": [{"name": e.name, "time_unix_nano": e.timestamp, "attributes": dict(e.attributes or {})}
                   for e in span.events],
        "links": [{"trace_id": format(link.context.trace_id, "032x"), "span_id": format(link.context.span_id, "016x"),
                   "attributes": dict(link.attributes or {})} for link in span.links],
    }


def _json_default(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else str(value)


def console_line(span: ReadableSpan) -> str:
    """One compact line: start time, service, name, duration, status, ids, attributes."""
    record = span_record(span)
    started = time.strftime("%H:%M:%S", time.localtime(record["start_unix_nano"] / 1e9))
    millis = (record["start_unix_nano"] // 1_000_000) % 1000
    parts = [f"{started}.{millis:03d}", record["service"], record["name"], f"{record['duration_ms']:.2f}ms",
             record["status"].upper(), f"trace={record['trace_id']}", f"span={record['span_id']}"]
    if record["parent_span_id"]:
        parts.append(f"parent={record['parent_span_id']}")
    if record["status_message"]:
        parts.append(f"status_message={json.dumps(record['status_message'])}")
    parts.extend(f"{key}={json.dumps(value, default=_json_default)}" for key, value in record["attributes"].items())
    if record["events"]:
        parts.append(f"events={len(record['events'])}")
    return " ".join(parts)


class ConsoleExporter(SpanExporter):
    """One line per span (see :func:`console_line`) on ``stream`` (stderr by default), for local development."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        text = "".join(console_line(span) + "\n" for span in spans)
        with self._lock:
            out = self.stream or sys.stderr
            out.write(text)
            out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class JsonLinesFileExporter(SpanExporter):
    """Spans as JSON lines (:func:`span_record`) appended to a private (0600) file, rotated by size.

    When a batch would take the file past ``max_bytes`` it is renamed ``<path>.1`` (older ones shift to
    ``.2`` ...; beyond ``backups`` they are deleted) and a new file is started. The file is opened per
    batch in append mode, so a forked child or a second process appends whole lines to the same file.
    """

    def __init__(self, path: str, max_bytes: int, backups: int):
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.rotations = 0
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(span_record(span), default=_json_default, separators=(",", ":")) + "\n"
                       for span in spans).encode()
        with self._lock:
            make_private_dir(os.path.dirname(os.path.abspath(self.path)))
            try:
                size = os.path.getsize(self.path)
            except OSError:
                size = 0
            if size and size + len(data) > self.max_bytes:
                self._rotate()
            create_private_file(self.path)
            with open(self.path, "ab") as f:
                f.write(data)
        return SpanExportResult.SUCCESS

    def _rotate(self) -> None:
        for index in range(self.backups, 0, -1):
            older = f"{self.path}.{index}"
            if not os.path.exists(older):
                continue
            if index == self.backups:
                os.remove(older)
            else:
                os.replace(older, f"{self.path}.{index + 1}")
        os.replace(self.path, f"{self.path}.1")
        self.rotations += 1

    def shutdown(self) -> None:
        pass


def otlp_exporter(endpoint: str | None, timeout: float, headers: Any = ()) -> SpanExporter:
    """The official OTLP/HTTP (protobuf) exporter; without ``headers`` (name, value pairs) it reads
    OTEL_EXPORTER_OTLP_HEADERS itself, and it honours the other OTEL_EXPORTER_OTLP_* variables."""
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise RuntimeError("the otlp exporter needs the OTLP/HTTP exporter package: "
                           "pip install 'contrail-tracing[otlp]'") from None
    return OTLPSpanExporter(endpoint=endpoint or OTLP_DEFAULT_ENDPOINT, timeout=timeout,
                            headers=dict(headers) or None)


class CountingExporter(SpanExporter):
    """Counts what reaches ``inner`` and how it went; an exporter's exception counts as a failed batch."""

    def __init__(self, name: str, inner: SpanExporter):
        self.name = name
        self.inner = inner
        self.exported = 0
        self.failed = 0
        self.last_error: str | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            self.failed += len(spans)
            self.last_error = f"{type(exc).__name__}: {exc}"
            return SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            self.failed += len(spans)
            self.last_error = "export failed"
        return result

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.inner.shutdown()


class ExporterProcessor(SpanProcessor):
    """A ``BatchSpanProcessor`` for one exporter, counting the sampled spans handed to it."""

    def __init__(self, exporter: CountingExporter, settings: TracerSettings):
        self.exporter = exporter
        self.received = 0
        self._shut = False
        self.batch = BatchSpanProcessor(
            exporter, max_queue_size=settings.max_queue_size, schedule_delay_millis=settings.schedule_delay * 1000,
            max_export_batch_size=settings.max_export_batch_size, export_timeout_millis=settings.export_timeout * 1000)

    def on_start(self, span, parent_context=None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled:
            self.received += 1
            self.batch.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export what is queued; False if that takes longer than ``timeout_millis`` (the SDK's own flush
        ignores its timeout, and a hanging endpoint must not hold up the caller)."""
        return _bounded(lambda: self.batch.force_flush(timeout_millis), timeout_millis)

    def shutdown(self, timeout_millis: int = 5000) -> None:
        """Export what is left within ``timeout_millis``, then stop; an export still hanging is abandoned."""
        if self._shut:
            return
        self._shut = True
        _bounded(lambda: self.batch.shutdown() or True, timeout_millis)

    def info(self) -> dict[str, Any]:
        """received - exported - failed = spans still queued or dropped because the queue was full."""
        return {"received": self.received, "exported": self.exporter.exported, "failed": self.exporter.failed,
                "last_error": self.exporter.last_error}


def _bounded(work: Callable[[], bool], timeout_millis: float) -> bool:
    """Run ``work`` in a daemon thread; True when it returned True within the timeout."""
    done = threading.Event()

    def run() -> None:
        if work():
            done.set()

    threading.Thread(target=run, name="contrail-exporter-wait", daemon=True).start()
    return done.wait(timeout_millis / 1000)


def build_exporter(name: str, settings: TracerSettings) -> SpanExporter:
    if name == "console":
        return ConsoleExporter()
    if name == "file":
        path = settings.export_file or os.path.join(settings.data_dir, "spans.jsonl")
        return JsonLinesFileExporter(path, settings.export_file_max_bytes, settings.export_file_backups)
    if name == "otlp":
        return otlp_exporter(settings.otlp_endpoint, settings.export_timeout, settings.otlp_headers)
    raise ValueError(f"unknown exporter {name!r}")


def exporter_processors(settings: TracerSettings,
                        extra: dict[str, SpanExporter] | None = None) -> dict[str, ExporterProcessor]:
    """name -> processor for every configured exporter except redis (which has its own processor), plus
    ``extra`` ready-made exporters (the Jaeger export of the original API)."""
    exporters = {name: build_exporter(name, settings) for name in settings.exporters if name != "redis"}
    exporters.update(extra or {})
    return {name: ExporterProcessor(CountingExporter(name, exporter), settings) for name, exporter in exporters.items()}
