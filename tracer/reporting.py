"""Self-reports: every tracing (and collecting) process leaves its counters next to the span stream.

A span dropped in an application process (full queue, full spool) or left out by
head sampling never reaches the collector, so the collector cannot count it.
Instead each export thread writes its cumulative counters, every
``report_interval``, into one Redis hash per stream (``<stream>:tracers``), one
field per process. The web app and ``contrail doctor`` read the hash, so what was
dropped on purpose anywhere is visible in ``/metrics``, ``/api/v1/status`` and the
dashboard, not only in that process's ``get_tracer_info()``. Collectors report
the same way under ``<stream>:collectors`` (``kind="collectors"``), which is how
the traces dropped by tail sampling become visible outside the collector.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Iterable

# The counters a report carries; all cumulative since the process started tracing.
COUNTERS = ("spans_started", "spans_exported", "spans_dropped", "spans_dropped_queue_full",
            "spans_dropped_spool_full", "spans_dropped_spool_error", "spans_sampled_out", "spans_spooled",
            "spool_records_corrupt", "export_errors",
            # application metrics (tracer.metrics): attribute sets past the cardinality limit, points lost
            "metric_series_dropped", "metric_points_dropped",
            # profiles (tracer.profiler): finished profiles lost (queue or spool full, not encodable)
            "profiles_dropped")
STALE_AFTER_S = 24 * 3600  # reports older than this are pruned by readers


COLLECTOR_COUNTERS = ("entries_read", "spans_stored", "duplicates_skipped", "spans_rejected", "dead_lettered",
                      "claimed", "traces_finalized", "traces_refinalized", "traces_tail_kept",
                      "traces_tail_dropped", "traces_late_dropped", "traces_leases_lost", "db_errors",
                      "redis_errors",
                      # ingest bounds (collector_worker.validation): spans refused or changed on admission
                      "span_times_rejected", "span_ends_clamped", "token_counts_ignored", "span_events_dropped",
                      "span_links_dropped", "span_attributes_dropped", "attribute_values_truncated",
                      # the per-trace span cap (trace_span_limit)
                      "trace_spans_dropped",
                      # application metrics (collector_worker.metrics_store)
                      "metric_points_stored", "metric_points_rejected",
                      # profiles (collector_worker.profile_store)
                      "profiles_stored",
                      # forwarding to an OTLP endpoint (collector_worker.forwarding)
                      "forwarded_spans", "forward_dropped", "forward_errors",
                      # the recent-span cache (collector_worker.recent_spans): traces finalized from memory alone,
                      # traces read back from staging, spans forgotten for the cache's bounds
                      "recent_spans_hits", "recent_spans_misses", "recent_spans_forgotten")


def reports_key(stream: str, kind: str = "tracers") -> str:
    return f"{stream}:{kind}"


def report_field(service: str) -> str:
    """One field per process: a forked child (a Celery pool process) reports on its own."""
    return f"{service}@{socket.gethostname()}:{os.getpid()}"


def build_report(info: dict[str, Any], baseline: dict[str, Any] | None = None, now_ns: int | None = None) -> str:
    """The JSON stored for one process, from ``TracingManager.get_tracer_info()``.

    ``baseline`` holds counters a forked child inherited from its parent; they
    are the parent's to report, so the child subtracts them.
    """
    base = baseline or {}
    report = {name: int(info.get(name) or 0) - int(base.get(name) or 0) for name in COUNTERS}
    report.update(service=info.get("service_name"), host=socket.gethostname(), pid=os.getpid(),
                  sample_rate=info.get("sample_rate"), spool_pending=bool(info.get("spool_pending")),
                  last_export_error=info.get("last_export_error"),
                  time_ns=now_ns if now_ns is not None else time.time_ns())
    return json.dumps(report, separators=(",", ":"))


def read_reports(client: Any, stream: str, now_ns: int | None = None, kind: str = "tracers") -> list[dict[str, Any]]:
    """Every live report of ``kind`` for ``stream``, newest first; stale or unreadable fields are deleted."""
    now_ns = now_ns if now_ns is not None else time.time_ns()
    key = reports_key(stream, kind)
    reports, stale = [], []
    for field, raw in client.hgetall(key).items():
        try:
            report = json.loads(raw)
            fresh = now_ns - int(report["time_ns"]) < STALE_AFTER_S * 1_000_000_000
        except (ValueError, KeyError, TypeError):
            fresh = False
        if fresh:
            report["instance"] = field.decode() if isinstance(field, bytes) else str(field)
            reports.append(report)
        else:
            stale.append(field)
    if stale:
        client.hdel(key, *stale)
    return sorted(reports, key=lambda r: -int(r["time_ns"]))


def summarize_collectors(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals over collector processes (counters since each started)."""
    reports = list(reports)
    return {"instances": len(reports),
            **{name: sum(int(r.get(name, 0)) for r in reports) for name in COLLECTOR_COUNTERS}}


def summarize(reports: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Totals over tracing processes, and per service, for the status bar and /metrics."""
    reports = list(reports)
    totals = {name: sum(int(r.get(name, 0)) for r in reports) for name in COUNTERS}
    services: dict[str, dict[str, int]] = {}
    for r in reports:
        per = services.setdefault(str(r.get("service")), {"instances": 0, **{name: 0 for name in COUNTERS}})
        per["instances"] += 1
        for name in COUNTERS:
            per[name] += int(r.get(name, 0))
    return {"instances": len(reports), **totals,
            "spooling": sum(1 for r in reports if r.get("spool_pending")),
            "services": services}
