"""A Jaeger-compatible query API under ``/jaeger``, so Grafana's Jaeger data source (URL
``http://host:8680/jaeger``) and other Jaeger clients can read Contrail.

Answers follow Jaeger's query JSON: an envelope ``{"data", "total", "limit", "offset", "errors"}``,
traces as ``traceID``, ``spans`` (``spanID``, ``operationName``, ``references`` CHILD_OF / FOLLOWS_FROM,
``startTime``/``duration`` in microseconds, typed ``tags``, ``logs``, ``processID``) and ``processes``.
Everything is read through the same public query functions as ``/api/v1``.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from flask import Blueprint, jsonify, request

from collector_worker.storage import queries
from collector_worker.storage.queries import QueryError, TraceQuery

from .. import params
from ..errors import ApiError, bad_parameter
from ..json_provider import finite
from ..resources import current_resources

bp = Blueprint("jaeger", __name__)

DEFAULT_LIMIT = 20
MAX_TRACES = 100  # full traces per search answer (each up to queries.TRACE_PAGE_SPANS spans)
DEFAULT_LOOKBACK_US = 3600 * 10**6
MAX_MICROS = 2**62 // 1000
KIND_TAGS = {"server", "client", "producer", "consumer"}


# --------------------------------------------------------------------------- envelope


def envelope(data: Any, total: int | None = None, status: int = 200, errors: list | None = None):
    response = jsonify({"data": data, "total": total if total is not None else (len(data) if isinstance(
        data, list) else 0), "limit": 0, "offset": 0, "errors": errors})
    response.status_code = status
    return response


@bp.errorhandler(ApiError)
def _jaeger_error(exc: ApiError):
    """Errors in Jaeger's shape (``errors: [{code, msg}]``), which Jaeger clients show to the user."""
    response = envelope(None, 0, exc.status, [{"code": exc.status, "msg": exc.message}])
    for key, value in exc.headers.items():
        response.headers[key] = value
    return response


# --------------------------------------------------------------------------- model


def tag(key: str, value: Any) -> dict[str, Any]:
    """One Jaeger key/type/value tag; lists and maps become JSON strings."""
    if isinstance(value, bool):
        return {"key": key, "type": "bool", "value": value}
    if isinstance(value, int):
        return {"key": key, "type": "int64", "value": value}
    if isinstance(value, float):
        return {"key": key, "type": "float64", "value": value if math.isfinite(value) else str(value)}
    if isinstance(value, str):
        return {"key": key, "type": "string", "value": value}
    return {"key": key, "type": "string", "value": json.dumps(finite(value))}


def span_tags(span: dict[str, Any]) -> list[dict[str, Any]]:
    tags = [tag(key, value) for key, value in (span.get("attributes") or {}).items()]
    if span.get("kind") in KIND_TAGS:
        tags.append(tag("span.kind", span["kind"]))
    if span.get("status") == "error":
        tags.append(tag("error", True))
        tags.append(tag("otel.status_code", "ERROR"))
    elif span.get("status") == "ok":
        tags.append(tag("otel.status_code", "OK"))
    if span.get("status_message"):
        tags.append(tag("otel.status_description", span["status_message"]))
    return tags


def references(trace_id: str, span: dict[str, Any]) -> list[dict[str, str]]:
    refs = []
    if span.get("parent_span_id"):
        refs.append({"refType": "CHILD_OF", "traceID": trace_id, "spanID": span["parent_span_id"]})
    for link in span.get("links") or []:
        if link.get("trace_id") and link.get("span_id"):
            refs.append({"refType": "FOLLOWS_FROM", "traceID": link["trace_id"], "spanID": link["span_id"]})
    return refs


def to_jaeger_trace(trace: dict[str, Any]) -> dict[str, Any]:
    """A Contrail trace (``queries.get_trace``) as a Jaeger trace."""
    trace_id = trace["trace_id"]
    processes: dict[str, dict[str, Any]] = {}
    process_ids: dict[str, str] = {}
    spans = []
    for span in trace["spans"]:
        resource = dict(span.get("resource") or {})
        resource.pop("service.name", None)
        process_key = json.dumps([span["service"], finite(resource)], sort_keys=True)
        if process_key not in process_ids:
            process_ids[process_key] = f"p{len(process_ids) + 1}"
            processes[process_ids[process_key]] = {
                "serviceName": span["service"], "tags": [tag(k, v) for k, v in sorted(resource.items())]}
        start_us = span["start_ns"] // 1000
        spans.append({
            "traceID": trace_id,
            "spanID": span["span_id"],
            "flags": 1,
            "operationName": span["name"],
            "references": references(trace_id, span),
            "startTime": start_us,
            "duration": max(0, span["end_ns"] // 1000 - start_us),
            "tags": span_tags(span),
            "logs": [{"timestamp": event["time_ns"] // 1000,
                      "fields": [tag("event", event.get("name") or "event")]
                      + [tag(k, v) for k, v in (event.get("attributes") or {}).items()]}
                     for event in span.get("events") or []],
            "processID": process_ids[process_key],
            "warnings": None,
        })
    warnings = [w.get("message") or w.get("code") for w in trace.get("warnings") or [] if isinstance(w, dict)]
    return {"traceID": trace_id, "spans": spans, "processes": processes, "warnings": warnings or None}


# --------------------------------------------------------------------------- parameters


def micros(name: str) -> int | None:
    """A Jaeger time parameter: unix microseconds."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or len(raw) > 18 or int(raw) > MAX_MICROS:
        raise bad_parameter(name, f"{name} must be unix microseconds")
    return int(raw)


def search_tags() -> tuple[list[tuple[str, str, str]], str | None]:
    """Jaeger's ``tags`` (a JSON object) and repeated ``tag=key:value`` as tag filters; ``error=true`` is the
    error status, as Jaeger's UI means it."""
    pairs: list[tuple[str, str]] = []
    raw = request.args.get("tags")
    if raw:
        params.check_text("tags", raw, 4096)
        try:
            given = json.loads(raw)
        except ValueError:
            raise bad_parameter("tags", 'tags must be a JSON object such as {"http.status_code":"500"}') from None
        if not isinstance(given, dict):
            raise bad_parameter("tags", 'tags must be a JSON object such as {"http.status_code":"500"}')
        pairs += [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in given.items()]
    for item in request.args.getlist("tag"):
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise bad_parameter("tag", "tag must look like key:value")
        pairs.append((key, value))
    filters, status = [], None
    for key, value in pairs:
        if len(key) > 255 or len(value) > 255:
            raise bad_parameter("tags", "tag keys and values are limited to 255 characters")
        if key == "error" and value.lower() in ("true", "false"):
            status = "error" if value.lower() == "true" else "ok"
        else:
            filters.append((key, "=", value))
    if len(filters) > 20:
        raise bad_parameter("tags", "at most 20 tags")
    return filters, status


def search_query() -> TraceQuery:
    end_us = micros("end") or time.time_ns() // 1000
    start_us = micros("start")
    if start_us is None:
        lookback = request.args.get("lookback")
        span_us = DEFAULT_LOOKBACK_US
        if lookback and lookback != "custom":
            span_us = (params.duration_ns("lookback", default_unit="s") or 0) // 1000
        start_us = max(0, end_us - span_us)
    if end_us < start_us:
        raise bad_parameter("end", "end must not be before start")
    min_ns, max_ns = params.duration_ns("minDuration"), params.duration_ns("maxDuration")
    if min_ns is not None and max_ns is not None and max_ns < min_ns:
        raise bad_parameter("maxDuration", "maxDuration must not be below minDuration")
    tags, status = search_tags()
    operation = params.text("operation")
    return TraceQuery(
        service=params.text("service"), operation=None if operation in (None, "all") else operation,
        tags=tags, status=status, min_duration_ns=min_ns, max_duration_ns=max_ns,
        start_ns=start_us * 1000, end_ns=end_us * 1000, sort="start_desc",
        limit=min(params.integer("limit", DEFAULT_LIMIT, minimum=1, maximum=10**6), MAX_TRACES))


# --------------------------------------------------------------------------- routes


@bp.get("/services")
def services():
    with current_resources().engine().connect() as conn:
        names = [service["name"] for service in queries.list_services(conn)]
    return envelope(names)


@bp.get("/services/<path:service>/operations")
def operations(service: str):
    params.check_text("service", service)
    with current_resources().engine().connect() as conn:
        names = [operation["name"] for operation in queries.list_operations(conn, service)]
    return envelope(names)


@bp.get("/operations")
def operations_by_kind():
    """Jaeger's newer form: ``[{name, spanKind}]`` for ``?service=`` (span kinds are not kept per operation)."""
    service = params.text("service", required=True)
    with current_resources().engine().connect() as conn:
        names = [operation["name"] for operation in queries.list_operations(conn, service)]
    return envelope([{"name": name, "spanKind": ""} for name in names])


@bp.get("/traces")
def search():
    query = search_query()
    try:
        with current_resources().engine().connect() as conn:
            found = queries.search_traces(conn, query)
            traces = [queries.get_trace(conn, summary["trace_id"]) for summary in found["traces"]]
    except QueryError as exc:
        raise bad_parameter(exc.parameter, str(exc)) from None
    data = [to_jaeger_trace(trace) for trace in traces if trace is not None]
    return envelope(data)


@bp.get("/traces/<trace_id>")
def trace(trace_id: str):
    if 0 < len(trace_id) < 32 and all(c in "0123456789abcdefABCDEF" for c in trace_id):
        trace_id = trace_id.rjust(32, "0")  # Jaeger clients may drop leading zeros (64-bit ids)
    trace_id = params.trace_id("traceID", trace_id)
    with current_resources().engine().connect() as conn:
        found = queries.get_trace(conn, trace_id)
    if found is None:
        raise ApiError(404, "trace not found")
    return envelope([to_jaeger_trace(found)])


@bp.get("/dependencies")
def dependencies():
    """``endTs`` and ``lookback`` in milliseconds, as Jaeger's UI sends them."""
    end_ms = params.integer("endTs", None, minimum=0, maximum=MAX_MICROS) or time.time_ns() // 10**6
    lookback_ms = params.integer("lookback", 86_400_000, minimum=1, maximum=10 * 365 * 86_400_000)
    from collector_worker.dependencies import query_dependencies

    with current_resources().engine().connect() as conn:
        edges = query_dependencies(conn, max(0, end_ms - lookback_ms) * 10**6, end_ms * 10**6)
    calls: dict[tuple[str, str], int] = {}
    for edge in edges:  # one Jaeger link per caller/callee, whatever the kind of call
        calls[(edge["caller"], edge["callee"])] = calls.get((edge["caller"], edge["callee"]), 0) + edge["calls"]
    return envelope([{"parent": parent, "child": child, "callCount": count}
                     for (parent, child), count in calls.items()])
