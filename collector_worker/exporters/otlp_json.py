"""OTLP JSON export: an ``ExportTraceServiceRequest`` that OpenTelemetry tools read back.

Follows the OTLP/JSON encoding (opentelemetry-proto, ``docs/specification.md``):
camelCase field names, enums as integers, 64-bit integers as decimal strings
and -- unlike plain proto3 JSON -- trace and span ids as lowercase hex.
Spans are grouped by (service, resource) and then by instrumentation scope.
"""

from __future__ import annotations

import json
from typing import Any

SPAN_KINDS = {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}
STATUS_CODES = {"unset": 0, "ok": 1, "error": 2}
DEFAULT_SCOPE = "contrail"


def any_value(value: Any) -> dict[str, Any]:
    """An attribute value as an OTLP ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, (list, tuple)):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    if isinstance(value, dict):
        return {"kvlistValue": {"values": key_values(value)}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def key_values(attributes: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": str(key), "value": any_value(value)} for key, value in (attributes or {}).items()]


def _span(span: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "traceId": span.get("trace_id") or "",
        "spanId": span["span_id"],
        "name": span.get("name") or "",
        "kind": SPAN_KINDS.get(span.get("kind") or "internal", 0),
        "startTimeUnixNano": str(int(span.get("start_ns") or 0)),
        "endTimeUnixNano": str(int(span.get("end_ns") or 0)),
        "attributes": key_values(span.get("attributes")),
        "events": [
            {"timeUnixNano": str(int(e.get("time_ns") or 0)), "name": e.get("name") or "",
             "attributes": key_values(e.get("attributes"))}
            for e in span.get("events") or []
        ],
        "links": [
            {"traceId": link.get("trace_id") or "", "spanId": link.get("span_id") or "",
             "attributes": key_values(link.get("attributes"))}
            for link in span.get("links") or []
        ],
        "status": {"code": STATUS_CODES.get(span.get("status") or "unset", 0)},
    }
    if span.get("parent_span_id"):
        out["parentSpanId"] = span["parent_span_id"]
    if span.get("status_message"):
        out["status"]["message"] = str(span["status_message"])
    return out


def to_request(trace: dict) -> dict[str, Any]:
    """The trace as an OTLP ``ExportTraceServiceRequest`` JSON object."""
    trace_id = trace.get("trace_id")
    groups: dict[str, dict[str, Any]] = {}
    for span in trace.get("spans") or []:
        resource = dict(span.get("resource") or {})
        resource.setdefault("service.name", span.get("service") or "unknown_service")
        resource_key = json.dumps(resource, sort_keys=True, default=str)
        group = groups.setdefault(resource_key, {"resource": resource, "scopes": {}})
        scope = span.get("scope") or DEFAULT_SCOPE
        group["scopes"].setdefault(scope, []).append(_span({"trace_id": trace_id, **span}))
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": key_values(group["resource"])},
                "scopeSpans": [{"scope": {"name": scope}, "spans": spans}
                               for scope, spans in group["scopes"].items()],
            }
            for group in groups.values()
        ]
    }


def render(trace: dict) -> str:
    return json.dumps(to_request(trace), ensure_ascii=False, separators=(",", ":"))
