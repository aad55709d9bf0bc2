"""Latency, error and throughput statistics per operation, with their time series."""

from __future__ import annotations

from flask import Blueprint, jsonify

from collector_worker.stats import query_stats

from .. import params
from ..resources import current_resources

bp = Blueprint("stats", __name__)

DEFAULT_LOOKBACK_S = 3600.0
MAX_POINTS = 10_000


@bp.get("/stats")
def stats():
    service = params.text("service")
    operation = params.text("operation")
    scope = params.choice("scope", ("span", "trace"), "span")
    group_by = params.choice("group_by", ("operation", "service"), "operation")
    start_ns, end_ns, step_s = params.series_window(DEFAULT_LOOKBACK_S, MAX_POINTS)
    with current_resources().engine().connect() as conn:
        result = query_stats(conn, service=service, operation=operation, start_ns=start_ns, end_ns=end_ns,
                             step_s=step_s, scope=scope, group_by=group_by)
    return jsonify({"start_ns": start_ns, "end_ns": end_ns, "step_s": step_s, "scope": scope, "group_by": group_by,
                    "operations": list(result.get("operations", [])), "series": list(result.get("series", []))})
