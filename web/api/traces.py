"""Trace search, one trace, its timeline, exports, backlinks and comparisons."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from collector_worker.storage import queries
from collector_worker.storage.queries import QueryError, TraceQuery
from tracer.codec import KINDS

from .. import params
from ..errors import bad_parameter, not_found
from ..gc_pause import paused_gc
from ..json_provider import finite
from ..resources import current_resources

bp = Blueprint("traces", __name__)

DEFAULT_LIMIT = 20
EXPORT_FORMATS = ("json", "otlp", "mermaid", "text")
EXPORT_EXTENSIONS = {"json": "json", "otlp": "otlp.json", "mermaid": "mmd", "text": "txt"}


def trace_query_from_request() -> TraceQuery:
    """Read and validate every search parameter (also used by the dashboard)."""
    start_ns, end_ns = params.time_range()
    min_ns, max_ns = params.duration_ns("min_duration"), params.duration_ns("max_duration")
    if min_ns is not None and max_ns is not None and max_ns < min_ns:
        raise bad_parameter("max_duration", "max_duration must not be below min_duration")
    cursor = params.text("cursor", max_length=1024)
    return TraceQuery(
        service=params.text("service"),
        operation=params.text("operation"),
        tags=params.tags("tag"),
        status=params.choice("status", ("error", "ok")),
        min_duration_ns=min_ns,
        max_duration_ns=max_ns,
        services=params.text_list("services"),
        kind=params.choice("kind", KINDS),
        start_ns=start_ns,
        end_ns=end_ns,
        sort=params.choice("sort", queries.SORTS, "start_desc"),
        limit=params.integer("limit", DEFAULT_LIMIT, minimum=1, maximum=queries.MAX_LIMIT),
        cursor=cursor,
    )


@bp.get("/traces")
def search():
    query = trace_query_from_request()
    try:
        with current_resources().engine().connect() as conn:
            result = queries.search_traces(conn, query)
    except QueryError as exc:
        raise bad_parameter(exc.parameter, str(exc)) from None
    return jsonify(result)


def load_trace(trace_id: str, parameter: str = "trace_id", offset: int = 0,
               limit: int = queries.TRACE_PAGE_SPANS) -> dict:
    trace_id = params.trace_id(parameter, trace_id)
    with current_resources().engine().connect() as conn, paused_gc():
        trace = queries.get_trace(conn, trace_id, offset=offset, limit=limit)
    if trace is None:
        raise not_found(f"unknown trace {trace_id}")
    return trace


@bp.get("/traces/<trace_id>")
def show(trace_id: str):
    """One trace; a trace of more than ``limit`` spans is answered in pages (``truncated``, ``next_offset``)."""
    offset = params.integer("offset", 0, minimum=0, maximum=2**62)
    limit = params.integer("limit", queries.TRACE_PAGE_SPANS, minimum=1, maximum=queries.TRACE_PAGE_SPANS)
    return jsonify(load_trace(trace_id, offset=offset, limit=limit))


@bp.get("/traces/<trace_id>/timeline")
def timeline(trace_id: str):
    trace = load_trace(trace_id)
    return jsonify({"trace_id": trace["trace_id"], "summary": trace["summary"],
                    "events": queries.trace_timeline(trace)})


@bp.get("/traces/<trace_id>/backlinks")
def backlinks(trace_id: str):
    trace_id = params.trace_id("trace_id", trace_id)
    with current_resources().engine().connect() as conn:
        if not queries.trace_exists(conn, trace_id):
            raise not_found(f"unknown trace {trace_id}")
        found = queries.find_linking_traces(conn, trace_id)
    return jsonify({"trace_id": trace_id, "linked_from": found})


@bp.get("/traces/<trace_id>/export")
def export(trace_id: str):
    fmt = params.choice("format", EXPORT_FORMATS, "json")
    budget = params.integer("budget", None, minimum=1, maximum=10_000_000)
    budget_unit = params.choice("budget_unit", ("chars", "tokens"), "chars")
    from collector_worker.exporters import DIAGRAMS, export_trace

    diagram = params.choice("diagram", DIAGRAMS, "sequence")
    trace = load_trace(trace_id)
    try:
        mimetype, body = export_trace(finite(trace), fmt, budget=budget, budget_unit=budget_unit, diagram=diagram)
    except ValueError as exc:
        raise bad_parameter("format", str(exc)) from None
    response = Response(body, content_type=mimetype)
    if request.args.get("download", "1") != "0":
        filename = f"trace-{trace['trace_id']}.{EXPORT_EXTENSIONS[fmt]}"
        response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/traces/compare")
def compare():
    a = load_trace(request.args.get("a"), "a") if request.args.get("a") else None
    b = load_trace(request.args.get("b"), "b") if request.args.get("b") else None
    if a is None:
        raise bad_parameter("a", "a is required: the trace id to compare from")
    if b is None:
        raise bad_parameter("b", "b is required: the trace id to compare with")
    return jsonify(queries.compare_traces(a, b))
