"""Service dependency edges over a time range."""

from __future__ import annotations

from flask import Blueprint, jsonify

from collector_worker.dependencies import query_dependencies

from .. import params
from ..resources import current_resources

bp = Blueprint("dependencies", __name__)

DEFAULT_LOOKBACK_S = 3600.0


@bp.get("/dependencies")
def dependencies():
    start_ns, end_ns = params.time_range(default_lookback_s=DEFAULT_LOOKBACK_S)
    start_ns, end_ns = params.closed_range(start_ns, end_ns, DEFAULT_LOOKBACK_S)
    with current_resources().engine().connect() as conn:
        edges = query_dependencies(conn, start_ns, end_ns)
    return jsonify({"start_ns": start_ns, "end_ns": end_ns, "dependencies": list(edges)})
