"""OTLP protobuf export: spans as a binary ``ExportTraceServiceRequest`` (OTLP/HTTP's default encoding).

What collector forwarding sends, since every OTLP/HTTP receiver reads the binary encoding while JSON is
optional for some. Spans are grouped by (service, resource) and then by instrumentation scope, as in
:mod:`.otlp_json`, whose value mapping (``SPAN_KINDS``, ``STATUS_CODES``) this follows.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from .otlp_json import SPAN_KINDS, STATUS_CODES

CONTENT_TYPE = "application/x-protobuf"
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _fill(target: AnyValue, value: Any) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int) and _INT64[0] <= value <= _INT64[1]:
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif isinstance(value, (list, tuple)):
        target.array_value.SetInParent()
        for item in value:
            _fill(target.array_value.values.add(), item)
    elif isinstance(value, dict):
        target.kvlist_value.SetInParent()
        _key_values(target.kvlist_value.values, value)
    elif value is not None:
        target.string_value = str(value)


def _key_values(target: Any, attributes: dict[str, Any] | None) -> None:
    for key, value in (attributes or {}).items():
        item: KeyValue = target.add()
        item.key = str(key)
        _fill(item.value, value)


def _id(value: Any) -> bytes:
    try:
        return bytes.fromhex(value or "")
    except (TypeError, ValueError):
        return b""


def _span(target: Span, span: dict[str, Any]) -> None:
    target.trace_id = _id(span.get("trace_id"))
    target.span_id = _id(span.get("span_id"))
    if span.get("parent_span_id"):
        target.parent_span_id = _id(span["parent_span_id"])
    target.name = span.get("name") or ""
    target.kind = SPAN_KINDS.get(span.get("kind") or "internal", 0)
    target.start_time_unix_nano = int(span.get("start_ns") or 0)
    target.end_time_unix_nano = int(span.get("end_ns") or 0)
    _key_values(target.attributes, span.get("attributes"))
    for event in span.get("events") or []:
        item = target.events.add()
        item.time_unix_nano = int(event.get("time_ns") or 0)
        item.name = event.get("name") or ""
        _key_values(item.attributes, event.get("attributes"))
    for link in span.get("links") or []:
        item = target.links.add()
        item.trace_id = _id(link.get("trace_id"))
        item.span_id = _id(link.get("span_id"))
        _key_values(item.attributes, link.get("attributes"))
    status: Status = target.status
    status.code = STATUS_CODES.get(span.get("status") or span.get("status_code") or "unset", 0)
    if span.get("status_message"):
        status.message = str(span["status_message"])


def to_message(spans: list[dict[str, Any]]) -> ExportTraceServiceRequest:
    """``spans`` (the API's span shape, each with its trace id) as one request message."""
    message = ExportTraceServiceRequest()
    groups: dict[str, tuple[Any, dict[str, Any]]] = {}
    for span in spans:
        resource = dict(span.get("resource") or {})
        resource.setdefault("service.name", span.get("service") or "unknown_service")
        key = json.dumps(resource, sort_keys=True, default=str)
        found = groups.get(key)
        if found is None:
            resource_spans = message.resource_spans.add()
            _key_values(resource_spans.resource.attributes, resource)
            found = groups[key] = (resource_spans, {})
        resource_spans, scopes = found
        scope = span.get("scope") or ""  # a span without a scope keeps none (a receiver reads "" as none)
        scope_spans = scopes.get(scope)
        if scope_spans is None:
            scope_spans = scopes[scope] = resource_spans.scope_spans.add()
            scope_spans.scope.name = scope
        _span(scope_spans.spans.add(), span)
    return message


def render(spans: list[dict[str, Any]]) -> bytes:
    """``spans`` as a serialized ``ExportTraceServiceRequest``."""
    return to_message(spans).SerializeToString()
