"""Prometheus metrics: API latency, OTLP ingest counters, the collector's backlog and the tracers' drops.

Each app has its own registry (several apps can live in one process, as in
tests). Stream gauges are read from Redis at scrape time by a custom
collector with a short timeout, so a scrape never hangs on a dead Redis.
Under gunicorn every worker serves its own request counters.
"""

from __future__ import annotations

import time

from tracer.redis_client import connect
from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

SCRAPE_TIMEOUT_S = 0.5
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
STREAM_GAUGES = {
    "stream_length": "Entries in the span stream.",
    "pending": "Entries delivered to collectors and not yet acknowledged.",
    "lag": "Entries not yet delivered to the consumer group.",
    "dead_letters": "Entries in the dead-letter stream.",
    "consumers": "Consumers in the collectors' group.",
}
# Also per stream shard, labelled stream="<name>": contrail_stream_shard_length, _pending, _lag, _dead_letters.
SHARD_GAUGES = ("stream_length", "pending", "lag", "dead_letters")
TRACER_GAUGES = {  # per service, summed over the processes' reports (tracer.reporting)
    "instances": "Processes of the service that reported in the last day.",
    "spans_exported": "Spans the service's processes exported to the stream.",
    "spans_dropped": "Spans the service's processes dropped (queue full, spool full or spool write error).",
    "spans_dropped_queue_full": "Spans dropped because the in-memory queue was full.",
    "spans_dropped_spool_full": "Spans dropped because the disk spool was full.",
    "spans_dropped_spool_error": "Spans dropped because the disk refused a spool write or cut it short.",
    "spans_sampled_out": "Spans left out by head sampling.",
    "spans_spooled": "Spans written to the disk spool while Redis was unreachable.",
    "spool_records_corrupt": "Damaged spool records skipped on replay (checksum or framing).",
    "export_errors": "Failed exports to Redis.",
    "metric_series_dropped": "Measurements dropped because their instrument had reached its cardinality limit.",
    "metric_points_dropped": "Metric points lost (not encodable, spool full or unwritable).",
    "profiles_dropped": "Profiles lost (export queue full, spool full or unwritable, not encodable).",
}


class Metrics:
    """The metric objects of one app."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.request_seconds = Histogram(
            "contrail_api_request_duration_seconds", "Time spent answering HTTP requests.",
            ["route", "method", "status"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.otlp_requests = Counter("contrail_otlp_requests", "OTLP export requests by outcome.",
                                     ["outcome"], registry=self.registry)
        self.otlp_spans_received = Counter("contrail_otlp_spans_received", "Spans received by the OTLP receiver.",
                                           registry=self.registry)
        self.otlp_spans_accepted = Counter("contrail_otlp_spans_accepted", "Spans written to the span stream.",
                                           registry=self.registry)
        self.otlp_spans_rejected = Counter("contrail_otlp_spans_rejected",
                                           "Spans refused by the OTLP receiver (invalid ids or times).",
                                           registry=self.registry)
        self.otlp_span_items_dropped = Counter(
            "contrail_otlp_span_items_dropped", "Events, links and attributes the OTLP receiver dropped from spans "
            "over the span limits, and string values it truncated (item=truncated_values).", ["item"],
            registry=self.registry)


class StreamHealthCollector:
    """Reads stream_health on every scrape."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        up = GaugeMetricFamily("contrail_stream_up", "1 when the span stream could be read at scrape time.")
        try:
            from collector_worker.consumer import stream_health

            settings = self.app.extensions["contrail.settings"]
            client = connect(settings.redis_url, socket_timeout=SCRAPE_TIMEOUT_S,
                             socket_connect_timeout=SCRAPE_TIMEOUT_S)
            try:
                health = stream_health(client, settings)
            finally:
                client.close()
        except Exception:  # Redis down or consumer module absent: report it as a gauge, not an error
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from self._reported(settings)
        for key, help_text in STREAM_GAUGES.items():
            value = health.get(key)
            if isinstance(value, (list, tuple, dict)):
                value = len(value)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                gauge = GaugeMetricFamily(f"contrail_stream_{key}", help_text)
                gauge.add_metric([], float(value))
                yield gauge
        for key in SHARD_GAUGES:
            gauge = GaugeMetricFamily(f"contrail_stream_shard_{key.removeprefix('stream_')}",
                                      f"{STREAM_GAUGES[key]} Per stream shard.",
                                      labels=["stream"])
            for shard in health.get("shards") or ():
                gauge.add_metric([shard["stream"]], float(shard[key]))
            yield gauge


    def _reported(self, settings):
        """The tracers' and collectors' self-reports (tracer.reporting), read at scrape time."""
        from tracer.reporting import COLLECTOR_COUNTERS, read_reports, summarize

        client = connect(settings.redis_url, socket_timeout=SCRAPE_TIMEOUT_S, socket_connect_timeout=SCRAPE_TIMEOUT_S)
        try:
            services = summarize(read_reports(client, settings.stream))["services"]
            collectors = read_reports(client, settings.stream, kind="collectors")
        except Exception:
            return
        finally:
            client.close()
        for key, help_text in TRACER_GAUGES.items():
            gauge = GaugeMetricFamily(f"contrail_tracer_{key}", help_text, labels=["service"])
            for service, totals in sorted(services.items()):
                gauge.add_metric([service], float(totals[key]))
            yield gauge
        for key in COLLECTOR_COUNTERS:
            counter = CounterMetricFamily(f"contrail_collector_{key}",
                                          f"{key.replace('_', ' ').capitalize()}, per collector process since it started.",
                                          labels=["consumer"])
            for report in collectors:
                counter.add_metric([report["instance"]], float(report.get(key, 0)))
            yield counter


def init_app(app: Flask) -> None:
    metrics = Metrics()
    metrics.registry.register(StreamHealthCollector(app))
    settings = app.extensions.get("contrail.settings")
    if settings is not None and settings.prometheus_app_metrics:
        from .app_metrics import AppMetricsCollector

        metrics.registry.register(AppMetricsCollector(app))
    app.extensions["contrail.metrics"] = metrics

    @app.before_request
    def _start_timer():
        g.contrail_started = time.perf_counter()

    @app.after_request
    def _observe(response):
        started = g.get("contrail_started")
        if started is not None:
            route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
            method = request.method if request.method in KNOWN_METHODS else "other"  # a client picks the method:
            metrics.request_seconds.labels(route, method, str(response.status_code)).observe(  # keep labels bounded
                time.perf_counter() - started)
        return response

    @app.get("/metrics")
    def prometheus_metrics():
        return Response(generate_latest(metrics.registry), content_type=CONTENT_TYPE_LATEST)


def current_metrics() -> Metrics:
    from flask import current_app

    return current_app.extensions["contrail.metrics"]
