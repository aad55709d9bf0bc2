"""The collector's settings: the tracer's (the stream it reads) plus the ingest limits, database and consumer.

The web app's settings (``web/settings.py``) extend these: the web app reads
the same database and applies the same ingest limits in its receivers. How
values are read is :mod:`tracer.settings_base`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tracer.settings import TracerSettings
from tracer.settings_base import boolean, headers, optional_str, positive_int, ratio, seconds, setting
from tracer.units import parse_size

GROUP_DEFAULT = "contrail-collectors"
FORWARD_MODES = ("stored", "kept")


def _forward_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in FORWARD_MODES:
        raise ValueError(f"invalid forward mode {value!r}: use {' or '.join(FORWARD_MODES)}")
    return text


@dataclass(repr=False)
class CollectorSettings(TracerSettings):
    """What a collector process is configured with: the tracer's settings, then its own."""

    GROUP_STARTS = TracerSettings.GROUP_STARTS + (("limits", "span_event_count_limit"),
                                                  ("collector", "database_url"))

    # --- ingest limits (collector and receivers; OpenTelemetry's span limits as the reference) ---------
    span_event_count_limit: int = field(default=128, metadata=setting(
        "CONTRAIL_SPAN_EVENT_COUNT_LIMIT", positive_int, "Events kept per span at ingest; the rest are dropped "
        "and counted.", ("OTEL_SPAN_EVENT_COUNT_LIMIT", positive_int)))
    span_link_count_limit: int = field(default=128, metadata=setting(
        "CONTRAIL_SPAN_LINK_COUNT_LIMIT", positive_int, "Links kept per span at ingest; the rest are dropped "
        "and counted.", ("OTEL_SPAN_LINK_COUNT_LIMIT", positive_int)))
    span_attribute_count_limit: int = field(default=128, metadata=setting(
        "CONTRAIL_SPAN_ATTRIBUTE_COUNT_LIMIT", positive_int, "Attributes kept per span, event, link and resource "
        "at ingest; the rest are dropped and counted.", ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", positive_int),
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", positive_int)))
    attribute_value_length_limit: int = field(default=16384, metadata=setting(
        "CONTRAIL_ATTRIBUTE_VALUE_LENGTH_LIMIT", positive_int, "Longer string values (attributes, names, status "
        "messages) are truncated at ingest and counted.", ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", positive_int)))
    trace_span_limit: int = field(default=50000, metadata=setting(
        "CONTRAIL_TRACE_SPAN_LIMIT", positive_int, "Spans stored per trace; later spans of a trace past it are "
        "dropped and counted, and the trace is marked truncated."))


    # --- collector ----------------------------------------------------------
    database_url: str | None = field(default=None, metadata=setting(
        "CONTRAIL_DATABASE_URL", optional_str, "SQLAlchemy URL (default sqlite:///<data_dir>/contrail.db)."))
    db_pool_size: int = field(default=5, metadata=setting(
        "CONTRAIL_DB_POOL", positive_int, "PostgreSQL connections each process keeps open (SQLAlchemy pool_size)."))
    consumer_group: str = field(default=GROUP_DEFAULT, metadata=setting(
        "CONTRAIL_CONSUMER_GROUP", str, "Redis consumer group of the collectors."))
    consumer_name: str | None = field(default=None, metadata=setting(
        "CONTRAIL_CONSUMER_NAME", optional_str, "This collector's consumer name (default host-pid)."))
    read_count: int = field(default=64, metadata=setting(
        "CONTRAIL_READ_COUNT", positive_int, "Stream entries read per XREADGROUP."))
    block: float = field(default=1.0, metadata=setting(
        "CONTRAIL_BLOCK", seconds, "How long one XREADGROUP waits for new entries."))
    claim_idle: float = field(default=30.0, metadata=setting(
        "CONTRAIL_CLAIM_IDLE", seconds, "Pending entries idle this long are claimed from dead consumers."))
    max_deliveries: int = field(default=5, metadata=setting(
        "CONTRAIL_MAX_DELIVERIES", positive_int, "Deliveries before an entry goes to the dead-letter stream."))
    quiet_period: float = field(default=3.0, metadata=setting(
        "CONTRAIL_QUIET_PERIOD", seconds, "A trace is finalized after this long without new spans."))
    recent_spans_memory: int = field(default=64 * 1024 * 1024, metadata=setting(
        "CONTRAIL_RECENT_SPANS_MEMORY", parse_size, "Memory (estimated) a collector process keeps spans it just "
        "stored in, so finalizing their traces needs no read back; spans stored beyond it are read back instead. "
        "0 turns the cache off."))
    retention: float = field(default=7 * 86400.0, metadata=setting(
        "CONTRAIL_RETENTION", seconds, "Data older than this is deleted (e.g. 7d)."))
    retention_interval: float = field(default=300.0, metadata=setting(
        "CONTRAIL_RETENTION_INTERVAL", seconds, "How often the automatic retention pass runs."))
    tail_sampling: bool = field(default=False, metadata=setting(
        "CONTRAIL_TAIL_SAMPLING", boolean, "Keep errors, slow traces and a ratio of the rest."))
    tail_keep_ratio: float = field(default=0.1, metadata=setting(
        "CONTRAIL_TAIL_KEEP_RATIO", ratio, "With tail sampling: share of ordinary traces kept."))
    tail_slow_threshold: float = field(default=1.0, metadata=setting(
        "CONTRAIL_TAIL_SLOW_THRESHOLD", seconds, "With tail sampling: traces at least this slow are kept."))
    forward_endpoint: str | None = field(default=None, metadata=setting(
        "CONTRAIL_FORWARD_ENDPOINT", optional_str, "OTLP/HTTP traces URL (e.g. http://backend:4318/v1/traces) every "
        "stored span is also sent to, batched and retried, never blocking ingest (default: off)."))
    forward_mode: str = field(default="stored", metadata=setting(
        "CONTRAIL_FORWARD_MODE", _forward_mode, "What a forwarding collector sends: stored (every span as it is "
        "stored) or kept (the spans of traces tail sampling kept, once the finalizer has written them; a late span "
        "of a kept trace follows when the trace is finalized again)."))
    forward_headers: tuple = field(default=(), metadata=setting(
        "CONTRAIL_FORWARD_HEADERS", headers, "Extra HTTP headers of every forwarded request, as "
        "OTEL_EXPORTER_OTLP_HEADERS writes them: 'key=value,key2=value2', values percent-encoded (e.g. "
        "'authorization=Bearer%20abc'); in the config file also a table. Values are never shown."))
    price_table: str | None = field(default=None, metadata=setting(
        "CONTRAIL_PRICE_TABLE", optional_str, "JSON file of LLM prices per 1k tokens, by model."))

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(Path(self.data_dir) / "contrail.db")

    @property
    def resolved_consumer_name(self) -> str:
        if self.consumer_name:
            return self.consumer_name
        import socket

        return f"{socket.gethostname()}-{os.getpid()}"
