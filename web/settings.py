"""The web app's settings: the collector's (it reads the same database and stream) plus its own.

Bind address, gunicorn workers, the OTLP/gRPC port, API tokens and request
bounds. How values are read is :mod:`tracer.settings_base`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector_worker.settings import CollectorSettings
from tracer.settings_base import boolean, optional_str, port_or_off, positive_int, seconds, setting
from tracer.units import parse_size


@dataclass(repr=False)
class WebSettings(CollectorSettings):
    """What the web app is configured with: the collector's settings, then its own."""

    GROUP_STARTS = CollectorSettings.GROUP_STARTS + (("web", "web_host"),)

    web_host: str = field(default="127.0.0.1", metadata=setting(
        "CONTRAIL_WEB_HOST", str, "Address the web app binds to."))
    web_port: int = field(default=8680, metadata=setting(
        "CONTRAIL_WEB_PORT", positive_int, "Port of the web app (API, OTLP receiver, dashboard)."))
    web_workers: int = field(default=2, metadata=setting(
        "CONTRAIL_WEB_WORKERS", positive_int, "gunicorn worker processes."))
    otlp_grpc_port: int = field(default=4317, metadata=setting(
        "CONTRAIL_OTLP_GRPC_PORT", port_or_off, "Port of the OTLP/gRPC receiver (TraceService/Export) on the web "
        "app's address, served by every web worker; 0 turns it off."))
    prometheus_app_metrics: bool = field(default=False, metadata=setting(
        "CONTRAIL_PROMETHEUS_APP_METRICS", boolean, "Also expose the stored application metrics (tracing.metrics) "
        "on /metrics, the last complete minute of each series, for an existing Prometheus to scrape."))
    web_threads: int = field(default=4, metadata=setting(
        "CONTRAIL_WEB_THREADS", positive_int, "Threads per gunicorn worker (requests each worker serves at once)."))
    api_token: str | None = field(default=None, metadata=setting(
        "CONTRAIL_API_TOKEN", optional_str, "Bearer token for the API and receiver (read and ingest).", secret=True))
    read_token: str | None = field(default=None, metadata=setting(
        "CONTRAIL_READ_TOKEN", optional_str, "Bearer token allowed to read only.", secret=True))
    ingest_token: str | None = field(default=None, metadata=setting(
        "CONTRAIL_INGEST_TOKEN", optional_str, "Bearer token allowed to send spans only.", secret=True))
    max_body_bytes: int = field(default=16 * 1024 * 1024, metadata=setting(
        "CONTRAIL_MAX_BODY_BYTES", parse_size, "Larger request bodies are refused with 413."))
    body_read_timeout: float = field(default=30.0, metadata=setting(
        "CONTRAIL_BODY_READ_TIMEOUT", seconds, "A request body must arrive within this time; a slower one is "
        "refused with 408, so slow clients cannot hold the web threads."))
    web_allowed_hosts: str | None = field(default=None, metadata=setting(
        "CONTRAIL_WEB_ALLOWED_HOSTS", optional_str, "Without a token: comma-separated extra Host names the web app "
        "answers (loopback names and IP addresses are always answered; other names are refused against DNS "
        "rebinding)."))
