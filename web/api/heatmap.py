"""The latency heat map (time x duration counts from the stored histograms) and the traces of a selected region."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from collector_worker import heatmap
from collector_worker.storage import heatmap as heatmap_store
from collector_worker.storage.queries import MAX_LIMIT, QueryError

from .. import params
from ..errors import bad_parameter
from ..resources import current_resources

bp = Blueprint("heatmap", __name__)

DEFAULT_LOOKBACK_S = 3600.0
MAX_COLUMNS = 1440


@bp.get("/stats/heatmap")
def latency_heatmap():
    scope = params.choice("scope", heatmap.SCOPES, "trace")
    service, operation = params.text("service"), params.text("operation")
    if request.args.get("step"):
        start_ns, end_ns, step_s = params.series_window(DEFAULT_LOOKBACK_S, MAX_COLUMNS)
    else:  # no step asked for: one that draws the window in a readable number of columns
        start_ns, end_ns = params.closed_range(*params.time_range(default_lookback_s=DEFAULT_LOOKBACK_S),
                                               DEFAULT_LOOKBACK_S)
        step_s = heatmap.auto_step((end_ns - start_ns) / 1e9)
    with current_resources().engine().connect() as conn:
        result = heatmap.latency_heatmap(conn, scope=scope, service=service, operation=operation,
                                         start_ns=start_ns, end_ns=end_ns, step_s=step_s)
    return jsonify(result)


@bp.get("/stats/heatmap/traces")
def region_traces():
    """The traces a trace-scope heat map counted in a region: start in [start, end), duration in [min, max]."""
    start_ns, end_ns = params.timestamp_ns("start"), params.timestamp_ns("end")
    if start_ns is None:
        raise bad_parameter("start", "start is required: the start of the region (ISO-8601 or unix ns)")
    if end_ns is None:
        raise bad_parameter("end", "end is required: the end of the region, exclusive (ISO-8601 or unix ns)")
    if end_ns <= start_ns:
        raise bad_parameter("end", "end must be after start")
    min_ns = params.duration_ns("min_duration") or 0
    max_ns = params.duration_ns("max_duration")
    max_ns = params.MAX_NS if max_ns is None else max_ns
    if max_ns < min_ns:
        raise bad_parameter("max_duration", "max_duration must not be below min_duration")
    try:
        with current_resources().engine().connect() as conn:
            result = heatmap_store.cell_traces(
                conn, root_service=params.text("service"), root_operation=params.text("operation"),
                start_ns=start_ns, end_ns=end_ns, min_duration_ns=min_ns, max_duration_ns=max_ns,
                status=params.choice("status", ("error", "ok")),
                sort=params.choice("sort", heatmap_store.CELL_SORTS, "start_desc"),
                limit=params.integer("limit", 20, minimum=1, maximum=MAX_LIMIT),
                cursor=params.text("cursor", max_length=1024))
    except QueryError as exc:
        raise bad_parameter(exc.parameter, str(exc)) from None
    return jsonify(result)
