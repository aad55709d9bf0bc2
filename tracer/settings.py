"""One settings object per process.

Values come from keyword arguments, then ``CONTRAIL_*`` environment
variables, then the standard OpenTelemetry variables where one applies (and
the original notes' ``JAEGER_*`` / ``SERVICE_NAME`` names last), then the
config file (``contrail.toml``, see :mod:`tracer.config_file`), then
defaults. Every field is documented in ``docs/configuration.md``; the table
below is the single source of truth for names, types and defaults.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from .units import parse_duration, parse_size

STREAM_DEFAULT = "contrail:spans"
GROUP_DEFAULT = "contrail-collectors"


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"invalid boolean {value!r}: use true or false")


def _ratio(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"invalid ratio {value!r}: must be between 0 and 1")
    return number


def _positive_int(value: Any) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"invalid value {value!r}: must be a positive integer")
    return number


def _port_or_off(value: Any) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"invalid port {value!r}: must be 1-65535, or 0 for off")
    return number


def _seconds(value: Any) -> float:
    return parse_duration(value)


def _positive_seconds(value: Any) -> float:
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be more than 0")
    return seconds


def _millis_as_seconds(value: Any) -> float:
    """OTEL_BSP_* durations are plain milliseconds."""
    return parse_duration(value, default_unit="ms")


def _opt_str(value: Any) -> str | None:
    text = str(value).strip()
    return text or None


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
    text = _opt_str(value)
    return None if text is None else text.rstrip("/") + "/v1/traces"


FORWARD_MODES = ("stored", "kept")


def _forward_mode(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in FORWARD_MODES:
        raise ValueError(f"invalid forward mode {value!r}: use {' or '.join(FORWARD_MODES)}")
    return text


def _headers(value: Any) -> tuple:
    """'k=v,k2=v2' (OTEL_EXPORTER_OTLP_HEADERS' format: values percent-encoded), a mapping or pairs, as pairs."""
    from urllib.parse import unquote

    if isinstance(value, Mapping):
        items = [(str(k), str(v)) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        items = [(str(k), str(v)) for k, v in value]
    else:
        items = []
        for part in str(value).split(","):
            if not part.strip():
                continue
            key, sep, raw = part.partition("=")
            if not sep:
                raise ValueError(f"invalid header {part.strip()!r}: use key=value")
            items.append((unquote(key.strip()), unquote(raw.strip())))
    for key, header_value in items:
        if not key or any(c in key for c in " \t\r\n:") or any(c in header_value for c in "\r\n"):
            raise ValueError(f"invalid header name or value for {key!r}")
    return tuple(items)


def _log_level(value: Any) -> str | None:
    import logging

    text = _opt_str(value)
    if text is None:
        return None
    name = text.upper()
    if not isinstance(logging.getLevelName(name), int):
        raise ValueError(f"invalid log level {value!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return name


def _default_data_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".local", "share", "contrail")


@dataclass(frozen=True)
class Option:
    """How one setting is read: its CONTRAIL_ variable, any OTel aliases, its parser."""

    env: str
    parse: Callable[[Any], Any]
    aliases: tuple[tuple[str, Callable[[Any], Any]], ...] = ()
    help: str = ""


def _opt(env: str, parse: Callable[[Any], Any], help: str, *aliases: tuple[str, Callable[[Any], Any]]):
    return {"option": Option(env=env, parse=parse, aliases=tuple(aliases), help=help)}


@dataclass
class Settings:
    """Everything a Contrail process can be configured with."""

    # --- tracer -----------------------------------------------------------
    service_name: str = field(default="unknown_service", metadata=_opt(
        "CONTRAIL_SERVICE_NAME", str, "Service name on every span.", ("OTEL_SERVICE_NAME", str),
        ("SERVICE_NAME", str)))
    enabled: bool = field(default=True, metadata=_opt(
        "CONTRAIL_ENABLED", _bool, "false makes every tracer call a no-op.",
        ("OTEL_SDK_DISABLED", lambda v: not _bool(v)), ("JAEGER_ENABLE_TRACING", _bool)))
    redis_url: str = field(default="redis://127.0.0.1:6379/0", metadata=_opt(
        "CONTRAIL_REDIS_URL", str, "Redis server holding the span stream; redis+cluster://host:port[,host:port...] "
        "(rediss+cluster:// with TLS) uses a Redis Cluster."))
    stream: str = field(default=STREAM_DEFAULT, metadata=_opt(
        "CONTRAIL_STREAM", str, "Name of the span stream; the dead-letter stream is '<stream>:dead'."))
    stream_shards: int = field(default=1, metadata=_opt(
        "CONTRAIL_STREAM_SHARDS", _positive_int, "Stream shards spans are spread over by trace id: above 1 the "
        "streams are '<stream>:{0}' .. '<stream>:{N-1}' (hash tags: each shard on one Redis Cluster node), each with "
        "its consumer group and dead-letter stream '<stream>:{i}:dead'. Tracers, receivers and collectors must "
        "agree; collectors also drain the unsharded stream."))
    sample_rate: float = field(default=1.0, metadata=_opt(
        "CONTRAIL_SAMPLE_RATE", _ratio, "Head sampling ratio for new traces (parent-based).",
        ("OTEL_TRACES_SAMPLER_ARG", _ratio)))
    max_queue_size: int = field(default=20000, metadata=_opt(
        "CONTRAIL_MAX_QUEUE_SIZE", _positive_int, "Finished spans held in memory before dropping.",
        ("OTEL_BSP_MAX_QUEUE_SIZE", _positive_int)))
    max_export_batch_size: int = field(default=512, metadata=_opt(
        "CONTRAIL_MAX_EXPORT_BATCH_SIZE", _positive_int, "Spans per stream entry.",
        ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", _positive_int)))
    schedule_delay: float = field(default=0.5, metadata=_opt(
        "CONTRAIL_SCHEDULE_DELAY", _seconds, "Longest a finished span waits before export.",
        ("OTEL_BSP_SCHEDULE_DELAY", _millis_as_seconds)))
    export_timeout: float = field(default=5.0, metadata=_opt(
        "CONTRAIL_EXPORT_TIMEOUT", _seconds, "Socket timeout of one export to Redis.",
        ("OTEL_BSP_EXPORT_TIMEOUT", _millis_as_seconds)))
    data_dir: str = field(default_factory=_default_data_dir, metadata=_opt(
        "CONTRAIL_DATA_DIR", str, "Where the embedded Redis, SQLite database and spool live."))
    spool_dir: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_SPOOL_DIR", _opt_str, "Disk spool for batches while Redis is down (default <data_dir>/spool)."))
    spool_max_bytes: int = field(default=256 * 1024 * 1024, metadata=_opt(
        "CONTRAIL_SPOOL_MAX_BYTES", parse_size, "Spool size bound for the whole spool directory (every process "
        "sharing it counts); beyond it batches are dropped and counted."))
    report_interval: float = field(default=10.0, metadata=_opt(
        "CONTRAIL_REPORT_INTERVAL", _seconds, "How often a tracing process (or collector) writes its counters "
        "(exported, dropped, sampled out; stored, tail-sampled) to '<stream>:tracers' ('<stream>:collectors') "
        "for the dashboard and /metrics; 0 turns reports off."))
    max_attribute_length: int = field(default=1024, metadata=_opt(
        "CONTRAIL_MAX_ATTRIBUTE_LENGTH", _positive_int, "Longer string attributes are truncated."))
    record_arguments: bool = field(default=True, metadata=_opt(
        "CONTRAIL_RECORD_ARGUMENTS", _bool, "Record function arguments in with_tracing (redacted, truncated)."))
    record_content: bool = field(default=False, metadata=_opt(
        "CONTRAIL_RECORD_CONTENT", _bool, "Record prompts and tool inputs/outputs on AI spans."))
    record_return_value: bool = field(default=False, metadata=_opt(
        "CONTRAIL_RECORD_RETURN_VALUE", _bool, "Record the return value in with_tracing as function.return_value "
        "(redacted, truncated); the decorator's record_result argument overrides it."))
    exporters: tuple = field(default=("redis",), metadata=_opt(
        "CONTRAIL_EXPORTERS", _exporters, "Where spans go, comma-separated, several at once: redis (the stream the "
        "collectors read), console (one line per span on stderr), file (JSON lines), otlp (OTLP/HTTP to "
        "otlp_endpoint; needs the 'otlp' extra). Exporters other than redis each run in their own batch thread."))
    otlp_endpoint: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_OTLP_ENDPOINT", _opt_str, "URL the otlp exporter posts spans to (default "
        "http://localhost:4318/v1/traces); OTEL_EXPORTER_OTLP_ENDPOINT gets /v1/traces appended.",
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", _opt_str), ("OTEL_EXPORTER_OTLP_ENDPOINT", _otlp_base)))
    otlp_headers: tuple = field(default=(), metadata=_opt(
        "CONTRAIL_OTLP_HEADERS", _headers, "Extra HTTP headers of the otlp exporter's requests (e.g. "
        "'authorization=Bearer%20<token>' for a Contrail with an ingest token, or a hosted backend's API key), "
        "written like OTEL_EXPORTER_OTLP_HEADERS (which the exporter reads itself when this is unset); in the "
        "config file also a table. Values are never shown."))
    export_file: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_EXPORT_FILE", _opt_str, "JSON-lines file of the file exporter (default "
        "<data_dir>/spans.jsonl); created 0600."))
    export_file_max_bytes: int = field(default=64 * 1024 * 1024, metadata=_opt(
        "CONTRAIL_EXPORT_FILE_MAX_BYTES", parse_size, "The export file is rotated (file.1, file.2, ...) when a "
        "batch would take it past this size."))
    export_file_backups: int = field(default=3, metadata=_opt(
        "CONTRAIL_EXPORT_FILE_BACKUPS", _positive_int, "Rotated export files kept; older ones are deleted."))
    jaeger_host: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_JAEGER_HOST", _opt_str, "The original notes' Jaeger host: spans are also exported over "
        "OTLP/HTTP to http://<jaeger_host>:<jaeger_port>/v1/traces (prefer exporters=otlp and otlp_endpoint).",
        ("JAEGER_AGENT_HOST", _opt_str)))
    jaeger_port: int = field(default=4318, metadata=_opt(
        "CONTRAIL_JAEGER_PORT", _positive_int, "Jaeger's OTLP/HTTP port; the agent's UDP ports 6831/6832 of the "
        "original notes are read as 4318.", ("JAEGER_AGENT_PORT", _positive_int)))
    log_events_level: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_LOG_EVENTS_LEVEL", _log_level, "With tracer.log_context installed: log records at or above this "
        "level (e.g. WARNING) also become events on the current span; unset: none do."))
    metrics_interval: float = field(default=10.0, metadata=_opt(
        "CONTRAIL_METRICS_INTERVAL", _seconds, "How often the metrics a process records (tracing.metrics) are "
        "exported, in one batch per interval, to the span stream (or the spool while Redis is down).",
        ("OTEL_METRIC_EXPORT_INTERVAL", _millis_as_seconds)))
    metrics_cardinality_limit: int = field(default=2000, metadata=_opt(
        "CONTRAIL_METRICS_CARDINALITY_LIMIT", _positive_int, "Attribute sets (series) one instrument records "
        "in a process; measurements of further attribute sets are dropped and counted "
        "(metric_series_dropped in get_tracer_info)."))
    system_metrics: bool = field(default=False, metadata=_opt(
        "CONTRAIL_SYSTEM_METRICS", _bool, "Also record this process's CPU, memory (RSS), GC, threads, open "
        "file descriptors, disk and network I/O as metrics (needs psutil: the 'system' extra)."))
    profile_interval: float = field(default=0.005, metadata=_opt(
        "CONTRAIL_PROFILE_INTERVAL", _positive_seconds, "How often tracing.profile samples the stack of the code it "
        "profiles (a sampler thread, only while a profile runs)."))
    profile_slow_threshold: float = field(default=0.0, metadata=_opt(
        "CONTRAIL_PROFILE_SLOW_THRESHOLD", _seconds, "Continuous profiling: the stacks of spans running longer than "
        "this are sampled every profile_slow_interval and stored as the span's profile; 0 (the default) is off."))
    profile_slow_interval: float = field(default=0.05, metadata=_opt(
        "CONTRAIL_PROFILE_SLOW_INTERVAL", _positive_seconds, "How often continuous profiling samples the stacks of "
        "spans slower than profile_slow_threshold (a low rate: 20 per second by default)."))

    # --- ingest limits (collector and receivers; OpenTelemetry's span limits as the reference) ---------
    span_event_count_limit: int = field(default=128, metadata=_opt(
        "CONTRAIL_SPAN_EVENT_COUNT_LIMIT", _positive_int, "Events kept per span at ingest; the rest are dropped "
        "and counted.", ("OTEL_SPAN_EVENT_COUNT_LIMIT", _positive_int)))
    span_link_count_limit: int = field(default=128, metadata=_opt(
        "CONTRAIL_SPAN_LINK_COUNT_LIMIT", _positive_int, "Links kept per span at ingest; the rest are dropped "
        "and counted.", ("OTEL_SPAN_LINK_COUNT_LIMIT", _positive_int)))
    span_attribute_count_limit: int = field(default=128, metadata=_opt(
        "CONTRAIL_SPAN_ATTRIBUTE_COUNT_LIMIT", _positive_int, "Attributes kept per span, event, link and resource "
        "at ingest; the rest are dropped and counted.", ("OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", _positive_int),
        ("OTEL_ATTRIBUTE_COUNT_LIMIT", _positive_int)))
    attribute_value_length_limit: int = field(default=16384, metadata=_opt(
        "CONTRAIL_ATTRIBUTE_VALUE_LENGTH_LIMIT", _positive_int, "Longer string values (attributes, names, status "
        "messages) are truncated at ingest and counted.", ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", _positive_int)))
    trace_span_limit: int = field(default=50000, metadata=_opt(
        "CONTRAIL_TRACE_SPAN_LIMIT", _positive_int, "Spans stored per trace; later spans of a trace past it are "
        "dropped and counted, and the trace is marked truncated."))

    # --- collector ----------------------------------------------------------
    database_url: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_DATABASE_URL", _opt_str, "SQLAlchemy URL (default sqlite:///<data_dir>/contrail.db)."))
    db_pool_size: int = field(default=5, metadata=_opt(
        "CONTRAIL_DB_POOL", _positive_int, "PostgreSQL connections each process keeps open (SQLAlchemy pool_size)."))
    consumer_group: str = field(default=GROUP_DEFAULT, metadata=_opt(
        "CONTRAIL_CONSUMER_GROUP", str, "Redis consumer group of the collectors."))
    consumer_name: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_CONSUMER_NAME", _opt_str, "This collector's consumer name (default host-pid)."))
    read_count: int = field(default=64, metadata=_opt(
        "CONTRAIL_READ_COUNT", _positive_int, "Stream entries read per XREADGROUP."))
    block: float = field(default=1.0, metadata=_opt(
        "CONTRAIL_BLOCK", _seconds, "How long one XREADGROUP waits for new entries."))
    claim_idle: float = field(default=30.0, metadata=_opt(
        "CONTRAIL_CLAIM_IDLE", _seconds, "Pending entries idle this long are claimed from dead consumers."))
    max_deliveries: int = field(default=5, metadata=_opt(
        "CONTRAIL_MAX_DELIVERIES", _positive_int, "Deliveries before an entry goes to the dead-letter stream."))
    quiet_period: float = field(default=3.0, metadata=_opt(
        "CONTRAIL_QUIET_PERIOD", _seconds, "A trace is finalized after this long without new spans."))
    recent_spans_memory: int = field(default=64 * 1024 * 1024, metadata=_opt(
        "CONTRAIL_RECENT_SPANS_MEMORY", parse_size, "Memory (estimated) a collector process keeps spans it just "
        "stored in, so finalizing their traces needs no read back; spans stored beyond it are read back instead. "
        "0 turns the cache off."))
    retention: float = field(default=7 * 86400.0, metadata=_opt(
        "CONTRAIL_RETENTION", _seconds, "Data older than this is deleted (e.g. 7d)."))
    retention_interval: float = field(default=300.0, metadata=_opt(
        "CONTRAIL_RETENTION_INTERVAL", _seconds, "How often the automatic retention pass runs."))
    tail_sampling: bool = field(default=False, metadata=_opt(
        "CONTRAIL_TAIL_SAMPLING", _bool, "Keep errors, slow traces and a ratio of the rest."))
    tail_keep_ratio: float = field(default=0.1, metadata=_opt(
        "CONTRAIL_TAIL_KEEP_RATIO", _ratio, "With tail sampling: share of ordinary traces kept."))
    tail_slow_threshold: float = field(default=1.0, metadata=_opt(
        "CONTRAIL_TAIL_SLOW_THRESHOLD", _seconds, "With tail sampling: traces at least this slow are kept."))
    forward_endpoint: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_FORWARD_ENDPOINT", _opt_str, "OTLP/HTTP traces URL (e.g. http://backend:4318/v1/traces) every "
        "stored span is also sent to, batched and retried, never blocking ingest (default: off)."))
    forward_mode: str = field(default="stored", metadata=_opt(
        "CONTRAIL_FORWARD_MODE", _forward_mode, "What a forwarding collector sends: stored (every span as it is "
        "stored) or kept (the spans of traces tail sampling kept, once the finalizer has written them; a late span "
        "of a kept trace follows when the trace is finalized again)."))
    forward_headers: tuple = field(default=(), metadata=_opt(
        "CONTRAIL_FORWARD_HEADERS", _headers, "Extra HTTP headers of every forwarded request, as "
        "OTEL_EXPORTER_OTLP_HEADERS writes them: 'key=value,key2=value2', values percent-encoded (e.g. "
        "'authorization=Bearer%20abc'); in the config file also a table. Values are never shown."))
    price_table: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_PRICE_TABLE", _opt_str, "JSON file of LLM prices per 1k tokens, by model."))

    # --- web ----------------------------------------------------------------
    web_host: str = field(default="127.0.0.1", metadata=_opt(
        "CONTRAIL_WEB_HOST", str, "Address the web app binds to."))
    web_port: int = field(default=8680, metadata=_opt(
        "CONTRAIL_WEB_PORT", _positive_int, "Port of the web app (API, OTLP receiver, dashboard)."))
    web_workers: int = field(default=2, metadata=_opt(
        "CONTRAIL_WEB_WORKERS", _positive_int, "gunicorn worker processes."))
    otlp_grpc_port: int = field(default=4317, metadata=_opt(
        "CONTRAIL_OTLP_GRPC_PORT", _port_or_off, "Port of the OTLP/gRPC receiver (TraceService/Export) on the web "
        "app's address, served by every web worker; 0 turns it off."))
    prometheus_app_metrics: bool = field(default=False, metadata=_opt(
        "CONTRAIL_PROMETHEUS_APP_METRICS", _bool, "Also expose the stored application metrics (tracing.metrics) "
        "on /metrics, the last complete minute of each series, for an existing Prometheus to scrape."))
    web_threads: int = field(default=4, metadata=_opt(
        "CONTRAIL_WEB_THREADS", _positive_int, "Threads per gunicorn worker (requests each worker serves at once)."))
    api_token: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_API_TOKEN", _opt_str, "Bearer token for the API and receiver (read and ingest)."))
    read_token: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_READ_TOKEN", _opt_str, "Bearer token allowed to read only."))
    ingest_token: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_INGEST_TOKEN", _opt_str, "Bearer token allowed to send spans only."))
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata=_opt(
        "CONTRAIL_MAX_BODY_BYTES", parse_size, "Larger request bodies are refused with 413."))
    body_read_timeout: float = field(default=30.0, metadata=_opt(
        "CONTRAIL_BODY_READ_TIMEOUT", _seconds, "A request body must arrive within this time; a slower one is "
        "refused with 408, so slow clients cannot hold the web threads."))
    web_allowed_hosts: str | None = field(default=None, metadata=_opt(
        "CONTRAIL_WEB_ALLOWED_HOSTS", _opt_str, "Without a token: comma-separated extra Host names the web app "
        "answers (loopback names and IP addresses are always answered; other names are refused against DNS "
        "rebinding)."))

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Build settings from keyword overrides, then the environment, then the config file, then defaults.

        ``None`` overrides count as not given. A bad value raises ``ValueError``
        naming the variable (or file and key) it came from.
        """
        return cls.load_with_sources(env, **overrides)[0]

    @classmethod
    def load_with_sources(cls, env: Mapping[str, str] | None = None,
                          **overrides: Any) -> tuple["Settings", dict[str, str]]:
        """Like :meth:`load`, and where each value came from: ``kwarg``, ``env NAME``, ``file PATH [section]``
        or ``default`` (shown by ``contrail doctor``)."""
        from .config_file import read_config

        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(overrides) - names
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        config = read_config(env, setting_groups())
        for f in dataclasses.fields(cls):
            option: Option = f.metadata["option"]
            given = overrides.get(f.name)
            if given is not None:
                try:
                    values[f.name] = option.parse(given)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"setting {f.name}: {exc}") from None
                sources[f.name] = "kwarg"
                continue
            for var, parse in ((option.env, option.parse),) + option.aliases:
                raw = env.get(var)
                if raw is None or raw == "":
                    continue
                try:
                    values[f.name] = parse(raw)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{var}: {exc}") from None
                sources[f.name] = f"env {var}"
                break
        if "sample_rate" not in values and env.get("OTEL_TRACES_SAMPLER") in ("always_off", "parentbased_always_off"):
            values["sample_rate"] = 0.0
            sources["sample_rate"] = "env OTEL_TRACES_SAMPLER"
        if config is not None:
            for name, (raw, where) in config.values.items():
                if name in values:
                    continue
                try:
                    values[name] = _option(name).parse(raw)
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"{where} {name}: {exc}") from None
                sources[name] = where
        for name in names - set(sources):
            sources[name] = "default"
        return cls(**values), sources

    # --- derived values -------------------------------------------------------
    @property
    def dead_stream(self) -> str:
        return f"{self.stream}:dead"

    @property
    def resolved_spool_dir(self) -> str:
        return self.spool_dir or os.path.join(self.data_dir, "spool")

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return "sqlite:///" + str(Path(self.data_dir) / "contrail.db")

    def __repr__(self) -> str:
        """Like the dataclass repr, with tokens and URL passwords hidden: settings end up in logs and tracebacks."""
        shown = [f"{item.name}={_shown_value(item.name, getattr(self, item.name))!r}" for item in fields(self)]
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def resolved_consumer_name(self) -> str:
        if self.consumer_name:
            return self.consumer_name
        import socket

        return f"{socket.gethostname()}-{os.getpid()}"


def _option(name: str) -> Option:
    return {f.name: f.metadata["option"] for f in dataclasses.fields(Settings)}[name]


# Settings in declaration order fall into these groups (the config file's sections and the reference's headings).
GROUP_STARTS = (("tracer", "service_name"), ("limits", "span_event_count_limit"), ("collector", "database_url"),
                ("web", "web_host"))


def setting_groups() -> dict[str, list[str]]:
    """Group name -> the settings in it, in declaration order."""
    starts = dict((field_name, group) for group, field_name in GROUP_STARTS)
    groups: dict[str, list[str]] = {group: [] for group, _ in GROUP_STARTS}
    current = GROUP_STARTS[0][0]
    for f in dataclasses.fields(Settings):
        current = starts.get(f.name, current)
        groups[current].append(f.name)
    return groups


_SECRET_FIELDS = frozenset({"api_token", "read_token", "ingest_token"})
_HEADER_FIELDS = frozenset({"forward_headers", "otlp_headers"})


def effective_settings(settings: Settings, sources: Mapping[str, str]) -> list[dict[str, Any]]:
    """Every setting with its value (tokens hidden, URL passwords masked) and where it came from."""
    return [{"name": item.name, "value": _shown_value(item.name, getattr(settings, item.name), joined=True),
             "source": sources.get(item.name, "default")} for item in fields(settings)]


def _shown_value(name: str, value: Any, joined: bool = False) -> Any:
    """A value safe to show: tokens hidden, URL passwords masked (settings end up in logs and tracebacks)."""
    if name in _SECRET_FIELDS and value:
        return "***"
    if name in _HEADER_FIELDS:  # header names only: their values are credentials (authorization, api keys)
        shown = [f"{key}=***" for key, _ in value]
        return ",".join(shown) if joined else shown
    if name.endswith(("_url", "_endpoint")) and isinstance(value, str):
        return mask_url(value)
    if joined and isinstance(value, tuple):
        return ",".join(value)
    return value


def mask_url(url: str | None) -> str | None:
    """Hide the password in a URL so it can be shown or logged."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def documented_options() -> list[tuple[str, str, str, Any]]:
    """(field, variable, help, default) for every setting, for docs and ``contrail doctor``."""
    rows = []
    for f in dataclasses.fields(Settings):
        option: Option = f.metadata["option"]
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        variables = ", ".join([option.env] + [alias for alias, _ in option.aliases])
        rows.append((f.name, variables, option.help, default))
    return rows
