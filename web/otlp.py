"""OTLP/HTTP trace receiver: ``POST /v1/traces`` in protobuf or JSON, optionally gzipped.

Services instrumented with any OpenTelemetry SDK export here; their spans are
validated, converted to the codec's span dicts and written to the same Redis
stream the Contrail tracer feeds, so collectors cannot tell them apart.
Invalid spans (bad ids, end before start, no name) are refused one by one and
reported through OTLP ``partial_success``; the rest of the request is kept.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any, Iterable

from flask import Blueprint, Response, request
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tracer.codec import encode_spans

from .app import current_resources, current_settings
from .errors import ApiError
from .metrics import current_metrics

bp = Blueprint("otlp", __name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}
MAX_REASONS = 5  # distinct rejection reasons quoted in partial_success.error_message


class RejectedSpan(ValueError):
    """One span that cannot be stored; the message says why."""


# --------------------------------------------------------------------------- values


def any_value(value) -> Any:
    """An OTLP AnyValue as a JSON-friendly Python value (arrays → lists, kvlists → dicts)."""
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "string_value":
        return value.string_value
    if which == "bool_value":
        return value.bool_value
    if which == "int_value":
        return value.int_value
    if which == "double_value":
        return value.double_value
    if which == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def attributes(kvs: Iterable) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in kvs}


def _hex_id(raw: bytes, size: int, what: str, optional: bool = False) -> str | None:
    if optional and not raw:
        return None
    if len(raw) != size or not any(raw):
        raise RejectedSpan(f"invalid {what}: must be {size} bytes, not all zero")
    return raw.hex()


# --------------------------------------------------------------------------- conversion


def convert_span(span, service: str, resource: dict[str, Any], scope: str | None) -> dict[str, Any]:
    """One OTLP span as a codec span dict; raises :class:`RejectedSpan` when it is invalid."""
    trace_id = _hex_id(span.trace_id, 16, "trace id")
    span_id = _hex_id(span.span_id, 8, "span id")
    parent = _hex_id(span.parent_span_id, 8, "parent span id", optional=True)
    if not span.name:
        raise RejectedSpan("span name is empty")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start <= 0 or end < start:
        raise RejectedSpan(f"invalid times: start={start} end={end}")
    links = []
    for link in span.links:
        if len(link.trace_id) == 16 and len(link.span_id) == 8 and any(link.trace_id) and any(link.span_id):
            links.append({"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                          "attributes": attributes(link.attributes)})
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": span.name,
        "kind": KINDS.get(span.kind, "internal"),
        "start_ns": start,
        "end_ns": end,
        "status_code": STATUS.get(span.status.code, "unset"),
        "status_message": span.status.message or None,
        "service": service,
        "resource": resource,
        "attributes": attributes(span.attributes),
        "events": [{"name": e.name or "event", "time_ns": e.time_unix_nano or start,
                    "attributes": attributes(e.attributes)} for e in span.events],
        "links": links,
        "scope": scope or None,
    }


def convert_request(message: ExportTraceServiceRequest) -> tuple[list[dict[str, Any]], list[str]]:
    """(valid span dicts, one reason per rejected span)."""
    spans: list[dict[str, Any]] = []
    reasons: list[str] = []
    for resource_spans in message.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        service = resource.get("service.name")
        service = service if isinstance(service, str) and service else "unknown_service"
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                try:
                    spans.append(convert_span(span, service, resource, scope))
                except RejectedSpan as exc:
                    reasons.append(str(exc))
    return spans, reasons


# --------------------------------------------------------------------------- body decoding


def _hex_to_b64(value: Any) -> str:
    """OTLP JSON carries ids as hex; protobuf's JSON mapping wants base64."""
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return ""  # an empty id: the span is rejected with a reason, not the whole request


def _otlp_json_ids_to_b64(payload: Any) -> None:
    if not isinstance(payload, dict):
        raise ApiError(400, "OTLP JSON body must be an object with resourceSpans", parameter="body")
    for resource_spans in payload.get("resourceSpans") or payload.get("resource_spans") or []:
        if not isinstance(resource_spans, dict):
            continue
        for scope_spans in resource_spans.get("scopeSpans") or resource_spans.get("scope_spans") or []:
            if not isinstance(scope_spans, dict):
                continue
            for span in scope_spans.get("spans") or []:
                if not isinstance(span, dict):
                    continue
                for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
                    if key in span:
                        span[key] = _hex_to_b64(span[key])
                for link in span.get("links") or []:
                    if isinstance(link, dict):
                        for key in ("traceId", "spanId", "trace_id", "span_id"):
                            if key in link:
                                link[key] = _hex_to_b64(link[key])


def read_body(max_bytes: int) -> bytes:
    """The request body, gunzipped if needed; 413 past ``max_bytes`` before or after decompression."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, f"request body of {length} bytes is over the limit of {max_bytes}")
    data = request.get_data(cache=False)
    if len(data) > max_bytes:
        raise ApiError(413, f"request body is over the limit of {max_bytes} bytes")
    encoding = (request.headers.get("Content-Encoding") or "identity").strip().lower()
    if encoding in ("", "identity"):
        return data
    if encoding != "gzip":
        raise ApiError(415, f"unsupported Content-Encoding {encoding!r}: use gzip or none",
                       parameter="Content-Encoding")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, max_bytes + 1)
    except zlib.error as exc:
        raise ApiError(400, f"body is not valid gzip: {exc}", parameter="body") from None
    if len(out) > max_bytes or inflater.unconsumed_tail:
        raise ApiError(413, f"decompressed body is over the limit of {max_bytes} bytes")
    if not inflater.eof:
        raise ApiError(400, "gzip body is truncated", parameter="body")
    return out


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, ValueError, RuntimeError) as exc:
            raise ApiError(400, f"body is not an OTLP protobuf ExportTraceServiceRequest: {exc}",
                           parameter="body") from None
        return message
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}", parameter="body") from None
    _otlp_json_ids_to_b64(payload)
    try:
        json_format.ParseDict(payload, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise ApiError(400, f"body is not an OTLP JSON ExportTraceServiceRequest: {exc}", parameter="body") from None
    return message


# --------------------------------------------------------------------------- stream


def publish(spans: list[dict[str, Any]]) -> None:
    """XADD the spans as batches of ``max_export_batch_size``, one stream entry per batch."""
    settings = current_settings()
    size = settings.max_export_batch_size
    pipe = current_resources().redis().pipeline(transaction=False)
    for i in range(0, len(spans), size):
        pipe.xadd(settings.stream, encode_spans(spans[i:i + size]))
    pipe.execute()


def _respond(content_type: str, rejected: int = 0, message: str = "") -> Response:
    reply = ExportTraceServiceResponse()
    if rejected or message:
        reply.partial_success.rejected_spans = rejected
        reply.partial_success.error_message = message
    if content_type == PROTOBUF:
        return Response(reply.SerializeToString(), status=200, content_type=PROTOBUF)
    return Response(json_format.MessageToJson(reply, indent=None), status=200, content_type=JSON)


@bp.post("/v1/traces")
def receive():
    metrics = current_metrics()
    content_type = (request.mimetype or "").lower()
    if content_type not in (PROTOBUF, JSON):
        metrics.otlp_requests.labels("unsupported_media_type").inc()
        raise ApiError(415, f"unsupported Content-Type {content_type or 'none'!r}: use {PROTOBUF} or {JSON}",
                       parameter="Content-Type")
    try:
        body = read_body(current_settings().max_body_bytes)
        message = parse_request(body, content_type)
    except ApiError as exc:
        metrics.otlp_requests.labels("too_large" if exc.status == 413 else "bad_request").inc()
        raise
    spans, reasons = convert_request(message)
    metrics.otlp_spans_received.inc(len(spans) + len(reasons))
    if spans:
        try:
            publish(spans)
        except Exception as exc:  # Redis unreachable: the exporter retries on 503
            metrics.otlp_requests.labels("unavailable").inc()
            raise ApiError(503, f"span stream unavailable: {type(exc).__name__}",
                           headers={"Retry-After": "2"}) from None
    metrics.otlp_spans_accepted.inc(len(spans))
    metrics.otlp_spans_rejected.inc(len(reasons))
    metrics.otlp_requests.labels("partial" if reasons else "ok").inc()
    message_text = ""
    if reasons:
        distinct = list(dict.fromkeys(reasons))[:MAX_REASONS]
        message_text = f"{len(reasons)} span(s) rejected: " + "; ".join(distinct)
    return _respond(content_type, len(reasons), message_text)
