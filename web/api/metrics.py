"""Application metrics the tracers record (tracing.metrics): the names, and one metric's points over time.

``GET /api/v1/metrics/<name>?service=&lookback=&step=&<attribute>=<value>...``: every query parameter
that is not one of the reserved ones filters the series by that attribute (all must match).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from collector_worker import metrics_store

from .. import params
from ..errors import bad_parameter
from ..resources import current_resources

bp = Blueprint("metrics", __name__)

DEFAULT_LOOKBACK_S = 3600.0
LISTING_LOOKBACK_S = 7 * 86400.0
MAX_POINTS = 10_000
MAX_FILTERS = 20
RESERVED = frozenset({"service", "step", "start", "end", "lookback"})


@bp.get("/metrics")
def metric_names():
    start_ns, end_ns = params.time_range(default_lookback_s=LISTING_LOOKBACK_S)
    start_ns, end_ns = params.closed_range(start_ns, end_ns, LISTING_LOOKBACK_S)
    with current_resources().engine().connect() as conn:
        metrics = metrics_store.list_metrics(conn, start_ns)
    return jsonify({"start_ns": start_ns, "end_ns": end_ns, "metrics": metrics})


def _filters() -> dict[str, str]:
    filters = {}
    for key in request.args:
        if key in RESERVED:
            continue
        params.check_text(key, key, 255)
        values = request.args.getlist(key)
        if len(values) != 1:
            raise bad_parameter(key, f"attribute filter {key} given {len(values)} times; give it once")
        filters[key] = params.check_text(key, values[0], 255)
    if len(filters) > MAX_FILTERS:
        raise bad_parameter("attributes", f"at most {MAX_FILTERS} attribute filters")
    return filters


@bp.get("/metrics/<path:name>")
def metric_points(name: str):
    params.check_text("name", name, 255)
    service = params.text("service")
    start_ns, end_ns, step_s = params.series_window(DEFAULT_LOOKBACK_S, MAX_POINTS)
    filters = _filters()
    with current_resources().engine().connect() as conn:
        result = metrics_store.query_metric(conn, name, start_ns, end_ns, step_s, service=service, filters=filters)
    return jsonify(result)
