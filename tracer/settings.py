"""The tracer's settings: what a traced service reads (service, sampling, Redis stream, exporters, spool).

The collector's settings (``collector_worker/settings.py``) and the web
app's (``web/settings.py``) extend these, since they read the same stream;
nothing here concerns them. How values are read (keyword, ``CONTRAIL_*``,
``OTEL_*``, config file, default) is :mod:`tracer.settings_base`. Every
field is documented in ``docs/configuration.md``, generated from the fields.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from .settings_base import (RoleSettings, boolean, headers, millis_as_seconds, optional_str, positive_int,
                            positive_seconds, ratio, seconds, setting)
from .units import parse_size

STREAM_DEFAULT = "contrail:spans"
EXPORTER_NAMES = ("redis", "console", "file", "otlp")


def _exporters(value: Any) -> tuple:
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    names = tuple(dict.fromkeys(str(item).strip().lower() for item in items if str(item).strip()))
    unknown = [name for name in names if name not in EXPORTER_NAMES]
    if unknown:
        raise ValueError(f"unknown exporter(s) {', '.join(unknown)}: use {', '.join(EXPORTER_NAMES)}")
    return names


def _otlp_base(value: Any) -> str | None:
    """OTEL_EXPORTER_OTLP_ENDPOINT is a base URL; the traces path is added, as the specification says."""
    text = optional_str(value)
    return None if text is None else text.rstrip("/") + "/v1/traces"


def _log_level(value: Any) -> str | None:
    text = optional_str(value)
    if text is None:
        return None
    name = text.upper()
    if not isinstance(logging.getLevelName(name), int):
        raise ValueError(f"invalid log level {value!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return name


def _default_data_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".local", "share", "contrail")


@dataclass(repr=False)
class TracerSettings(RoleSettings):
    """What a traced service (``TracingManager``) is configured with; every other role reads these too."""

    GROUP_STARTS = (("tracer", "service_name"),)

    service_name: str = field(default="unknown_service", metadata=setting(
        "CONTRAIL_SERVICE_NAME", str, "Service name on every span.", ("OTEL_SERVICE_NAME", str),
        ("SERVICE_NAME", str)))
    enabled: bool = field(default=True, metadata=setting(
        "CONTRAIL_ENABLED", boolean, "false makes every tracer call a no-op.",
        ("OTEL_SDK_DISABLED", lambda v: not boolean(v)), ("JAEGER_ENABLE_TRACING", boolean)))
    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=setting(
        "CONTRAIL_REDIS_URL", str, "Redis server holding the span stream; redis+cluster://host:port[,host:port...] "
        "(rediss+cluster:// with TLS) uses a Redis Cluster."))
    stream: str = field(default=STREAM_DEFAULT, metadata=setting(
        "CONTRAIL_STREAM", str, "Name of the span stream; the dead-letter stream is '<stream>:dead'."))
    stream_shards: int = field(default=1, metadata=setting(
        "CONTRAIL_STREAM_SHARDS", positive_int, "Stream shards spans are spread over by trace id: above 1 the "
        "streams are '<stream>:{0}' .. '<stream>:{N-1}' (hash tags: each shard on one Redis Cluster node), each with "
        "its consumer group and dead-letter stream '<stream>:{i}:dead'. Tracers, receivers and collectors must "
        "agree; collectors also drain the unsharded stream."))
    sample_rate: float = field(default=1.0, metadata=setting(
        "CONTRAIL_SAMPLE_RATE", ratio, "Head sampling ratio for new traces (parent-based).",
        ("OTEL_TRACES_SAMPLER_ARG", ratio)))
    max_queue_size: int = field(default=20000, metadata=setting(
        "CONTRAIL_MAX_QUEUE_SIZE", positive_int, "Finished spans held in memory before dropping.",
        ("OTEL_BSP_MAX_QUEUE_SIZE", positive_int)))
    max_export_batch_size: int = field(default=512, metadata=setting(
        "CONTRAIL_MAX_EXPORT_BATCH_SIZE", positive_int, "Spans per stream entry.",
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", positive_int)))
    schedule_delay: float = field(default=0.5, metadata=setting(
        "CONTRAIL_SCHEDULE_DELAY", seconds, "Longest a finished span waits before export.",
        ("OTEL_BSP_SCHEDULE_DELAY", millis_as_seconds)))
    export_timeout: float = field(default=5.0, metadata=setting(
        "CONTRAIL_EXPORT_TIMEOUT", seconds, "Socket timeout of one export to Redis.",
        ("OTEL_BSP_EXPORT_TIMEOUT", millis_as_seconds)))
    data_dir: str = field(default_factory=_default_data_dir, metadata=setting(
        "CONTRAIL_DATA_DIR", str, "Where the embedded Redis, SQLite database and spool live."))
    spool_dir: str | None = field(default=None, metadata=setting(
        "CONTRAIL_SPOOL_DIR", optional_str, "Disk spool for batches while Redis is down (default <data_dir>/spool)."))
    spool_max_bytes: int = field(default=256 * 1024 * 1024, metadata=setting(
        "CONTRAIL_SPOOL_MAX_BYTES", parse_size, "Spool size bound for the whole spool directory (every process "
        "sharing it counts); beyond it batches are dropped and counted."))
    report_interval: float = field(default=10.0, metadata=setting(
        "CONTRAIL_REPORT_INTERVAL", seconds, "How often a tracing process (or collector) writes its counters "
        "(exported, dropped, sampled out; stored, tail-sampled) to '<stream>:tracers' ('<stream>:collectors') "
        "for the dashboard and /metrics; 0 turns reports off."))
    max_attribute_length: int = field(default=1024, metadata=setting(
        "CONTRAIL_MAX_ATTRIBUTE_LENGTH", positive_int, "Longer string attributes are truncated."))
    record_arguments: bool = field(default=True, metadata=setting(
        "CONTRAIL_RECORD_ARGUMENTS", boolean, "Record function arguments in with_tracing (redacted, truncated)."))
    record_content: bool = field(default=False, metadata=setting(
        "CONTRAIL_RECORD_CONTENT", boolean, "Record prompts and tool inputs/outputs on AI spans."))
    record_return_value: bool = field(default=False, metadata=setting(
        "CONTRAIL_RECORD_RETURN_VALUE", boolean, "Record the return value in with_tracing as function.return_value "
        "(redacted, truncated); the decorator's record_result argument overrides it."))
    exporters: tuple = field(default=("redis",), metadata=setting(
        "CONTRAIL_EXPORTERS", _exporters, "Where spans go, comma-separated, several at once: redis (the stream the "
        "collectors read), console (one line per span on stderr), file (JSON lines), otlp (OTLP/HTTP to "
        "otlp_endpoint; needs the 'otlp' extra). Exporters other than redis each run in their own batch thread."))
    otlp_endpoint: str | None = field(default=None, metadata=setting(
        "CONTRAIL_OTLP_ENDPOINT", optional_str, "URL the otlp exporter posts spans to (default "
        "http://localhost:4318/v1/traces); OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/traces appended.",
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", optional_str), ("OTEL_EXPORTER_OTLP_ENDPOINT", _otlp_base)))
    otlp_headers: tuple = field(default=(), metadata=setting(
        "CONTRAIL_OTLP_HEADERS", headers, "Extra HTTP headers of the otlp exporter's requests (e.g. "
        "'authorization=Bearer%20<token>' for a Contrail with an ingest token, or a hosted backend's API key), "
        "written like OTEL_EXPORTER_OTLP_HEADERS (which the exporter reads itself when this is unset); in the "
        "config file also a table. Values are never shown."))
    export_file: str | None = field(default=None, metadata=setting(
        "CONTRAIL_EXPORT_FILE", optional_str, "JSON-lines file of the file exporter (default "
        "<data_dir>/spans.jsonl); created 0600."))
    export_file_max_bytes: int = field(default=64 * 1024 * 1024, metadata=setting(
        "CONTRAIL_EXPORT_FILE_MAX_BYTES", parse_size, "The export file is rotated (file.1, file.2, ...) when a "
        "batch would take it past this size."))
    export_file_backups: int = field(default=3, metadata=setting(
        "CONTRAIL_EXPORT_FILE_BACKUPS", positive_int, "Rotated export files kept; older ones are deleted."))
    jaeger_host: str | None = field(default=None, metadata=setting(
        "CONTRAIL_JAEGER_HOST", optional_str, "The original notes' Jaeger host: spans are also exported over "
        "OTLP/HTTP to http://<jaeger_host>:<jaeger_port>/v1/traces (prefer exporters=otlp and otlp_endpoint).",
        ("JAEGER_AGENT_HOST", optional_str)))
    jaeger_port: int = field(default=4318, metadata=setting(
        "CONTRAIL_JAEGER_PORT", positive_int, "Jaeger's OTLP/HTTP port; the agent's UDP ports 6831/6832 of the "
        "original notes are read as 4318.", ("JAEGER_AGENT_PORT", positive_int)))
    log_events_level: str | None = field(default=None, metadata=setting(
        "CONTRAIL_LOG_EVENTS_LEVEL", _log_level, "With tracer.log_context installed: log records at or above this "
        "level (e.g. WARNING) also become events on the current span; unset: none do."))
    metrics_interval: float = field(default=10.0, metadata=setting(
        "CONTRAIL_METRICS_INTERVAL", seconds, "How often the metrics a process records (tracing.metrics) are "
        "exported, in one batch per interval, to the span stream (or the spool while Redis is down).",
        ("OTEL_METRIC_EXPORT_INTERVAL", millis_as_seconds)))
    metrics_cardinality_limit: int = field(default=2000, metadata=setting(
        "CONTRAIL_METRICS_CARDINALITY_LIMIT", positive_int, "Attribute sets (series) one instrument records "
        "in a process; measurements of further attribute sets are dropped and counted "
        "(metric_series_dropped in get_tracer_info)."))
    system_metrics: bool = field(default=False, metadata=setting(
        "CONTRAIL_SYSTEM_METRICS", boolean, "Also record this process's CPU, memory (RSS), GC, threads, open "
        "file descriptors, disk and network I/O as metrics (needs psutil: the 'system' extra)."))
    profile_interval: float = field(default=0.005, metadata=setting(
        "CONTRAIL_PROFILE_INTERVAL", positive_seconds, "How often tracing.profile samples the stack of the code it "
        "profiles (a sampler thread, only while a profile runs)."))
    profile_slow_threshold: float = field(default=0.0, metadata=setting(
        "CONTRAIL_PROFILE_SLOW_THRESHOLD", seconds, "Continuous profiling: the stacks of spans running longer than "
        "this are sampled every profile_slow_interval and stored as the span's profile; 0 (the default) is off."))
    profile_slow_interval: float = field(default=0.05, metadata=setting(
        "CONTRAIL_PROFILE_SLOW_INTERVAL", positive_seconds, "How often continuous profiling samples the stacks of "
        "spans slower than profile_slow_threshold (a low rate: 20 per second by default)."))

    @property
    def dead_stream(self) -> str:
        return f"{self.stream}:dead"

    @property
    def resolved_spool_dir(self) -> str:
        return self.spool_dir or os.path.join(self.data_dir, "spool")


# The name ``import tracer`` has always offered: the tracer's settings (no collector or web fields).
Settings = TracerSettings
