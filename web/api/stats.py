"""Latency, error and throughput statistics per operation, with their time series."""

from __future__ import annotations

from flask import Blueprint, jsonify

from .. import params
from ..app import current_resources
from ..errors import ApiError, bad_parameter

bp = Blueprint("stats", __name__, url_prefix="/api/v1")

DEFAULT_LOOKBACK_S = 3600.0
MAX_POINTS = 10_000


@bp.get("/stats")
def stats():
    service = params.text("service")
    operation = params.text("operation")
    scope = params.choice("scope", ("span", "trace"), "span")
    start_ns, end_ns = params.time_range(default_lookback_s=DEFAULT_LOOKBACK_S)
    start_ns, end_ns = params.closed_range(start_ns, end_ns, DEFAULT_LOOKBACK_S)
    step_ns = params.duration_ns("step", default_unit="s")
    step_s = 60 if step_ns is None else int(step_ns // 1_000_000_000)
    if step_s < 60 or step_s % 60:
        raise bad_parameter("step", "step must be a whole number of minutes (60s, 5m, 1h)")
    if (end_ns - start_ns) / 1e9 / step_s > MAX_POINTS:
        raise bad_parameter("step", f"step is too small for this range (at most {MAX_POINTS} points)")
    try:
        from collector_worker.stats import query_stats
    except ModuleNotFoundError as exc:
        if exc.name != "collector_worker.stats":
            raise
        raise ApiError(503, "statistics are not available in this installation") from None
    with current_resources().engine().connect() as conn:
        result = query_stats(conn, service=service, operation=operation, start_ns=start_ns, end_ns=end_ns,
                             step_s=step_s, scope=scope)
    return jsonify({"start_ns": start_ns, "end_ns": end_ns, "step_s": step_s, "scope": scope,
                    "operations": list(result.get("operations", [])), "series": list(result.get("series", []))})
