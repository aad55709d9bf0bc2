"""Sampling profiles (tracing.profile and the slow-span mode): per trace, and merged per operation.

``GET /api/v1/traces/<trace_id>/profiles[?span_id=]``: each profile of the trace with its flame graph
(folded stacks) and top functions. ``GET /api/v1/profiles?operation=&service=&lookback=``: the
profiles of an operation (and/or service) in a window merged into one flame graph and one
top-functions table (self and total samples).
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from collector_worker import profile_store

from .. import params
from ..resources import current_resources

bp = Blueprint("profiles", __name__)

DEFAULT_LOOKBACK_S = 3600.0
MAX_PROFILES = 5000


@bp.get("/traces/<trace_id>/profiles")
def trace_profiles(trace_id: str):
    trace_id = params.trace_id("trace_id", trace_id)
    span_id = params.span_id("span_id", request.args["span_id"]) if request.args.get("span_id") else None
    with current_resources().engine().connect() as conn:
        profiles = profile_store.of_trace(conn, trace_id, span_id)
    return jsonify({"trace_id": trace_id, "profiles": profiles})


@bp.get("/profiles")
def aggregate():
    operation = params.text("operation", max_length=255)
    service = params.text("service", max_length=255)
    limit = params.integer("limit", 1000, minimum=1, maximum=MAX_PROFILES)
    start_ns, end_ns = params.closed_range(*params.time_range(default_lookback_s=DEFAULT_LOOKBACK_S),
                                           DEFAULT_LOOKBACK_S)
    with current_resources().engine().connect() as conn:
        merged = profile_store.aggregate(conn, start_ns, end_ns, operation, service, limit)
    return jsonify({"operation": operation, "service": service, "start_ns": start_ns, "end_ns": end_ns, **merged})
