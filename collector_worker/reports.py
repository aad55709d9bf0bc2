"""The collector's self-report: its counters next to the span stream, for the web app and doctor.

A collector's counters (spans stored, duplicates, dead letters, traces dropped
by tail sampling, ...) live in its own process. Like the tracers (see
``tracer.reporting``), each consumer writes them every ``report_interval`` into
the hash ``<stream>:collectors``, one field per consumer name, so ``/metrics``,
``/api/v1/status`` and the dashboard can show what tail sampling dropped.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any, Mapping

from tracer.reporting import COLLECTOR_COUNTERS, reports_key


def build_collector_report(consumer: Mapping[str, int], finalizer: Mapping[str, int],
                           sampling: Mapping[str, int], now_ns: int | None = None) -> str:
    """JSON of one collector's counters, from consumer_stats(), finalizer.counters(), sampling.counters()."""
    values = {
        **{name: int(consumer.get(name, 0)) for name in COLLECTOR_COUNTERS},
        "traces_finalized": int(finalizer.get("finalized", 0)),
        "traces_refinalized": int(finalizer.get("refinalized", 0)),
        "traces_tail_kept": int(sampling.get("kept", 0)),
        "traces_tail_dropped": int(sampling.get("dropped", 0)),
        "traces_late_dropped": int(finalizer.get("late_dropped", 0)),
        "traces_leases_lost": int(finalizer.get("leases_lost", 0)),
    }
    values.update(host=socket.gethostname(), pid=os.getpid(),
                  time_ns=now_ns if now_ns is not None else time.time_ns())
    return json.dumps(values, separators=(",", ":"))


def write_collector_report(client: Any, settings: Any, report: str) -> None:
    """Store ``report`` under this consumer's name; the caller decides how often."""
    client.hset(reports_key(settings.stream, "collectors"), settings.resolved_consumer_name, report)
