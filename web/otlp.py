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

from tracer.limits import Cut, SpanLimits, limit_attributes, limit_span, mark_cut

from .body import read_request_body
from .errors import ApiError
from .ingest import StreamUnavailable, accept
from .metrics import current_metrics
from .resources import current_settings

bp = Blueprint("otlp", __name__)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
KINDS = {0: "internal", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
STATUS = {0: "unset", 1: "ok", 2: "error"}
OUTCOMES = {413: "too_large", 408: "timeout"}  # other refusals count as bad_request


class RejectedSpan(ValueError):
    """One span that cannot be stored; the message says why."""


# --------------------------------------------------------------------------- values


def any_value(value, limits: SpanLimits, cut: Cut) -> Any:
    """An OTLP AnyValue as a JSON-friendly Python value (arrays → lists, kvlists → dicts), arrays and
    kvlists cut to ``limits.attributes`` items (counted in ``cut``) before they are converted."""
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
        return [any_value(v, limits, cut) for v in _first(value.array_value.values, limits.attributes, cut)]
    if which == "kvlist_value":
        return attributes(value.kvlist_value.values, limits, cut)
    if which == "bytes_value":
        return base64.b64encode(value.bytes_value[:limits.value_length]).decode()
    return None


def _first(items, limit: int, cut: Cut) -> list:
    """The first ``limit`` items of a repeated field; the others are counted as dropped attributes."""
    kept = items[:limit]
    cut.attributes += len(items) - len(kept)
    return kept


def attributes(kvs, limits: SpanLimits, cut: Cut) -> dict[str, Any]:
    return {kv.key: any_value(kv.value, limits, cut) for kv in _first(kvs, limits.attributes, cut)}


def _hex_id(raw: bytes, size: int, what: str, optional: bool = False) -> str | None:
    if optional and not raw:
        return None
    if len(raw) != size or not any(raw):
        raise RejectedSpan(f"invalid {what}: must be {size} bytes, not all zero")
    return raw.hex()


# --------------------------------------------------------------------------- conversion


def _valid_link(link) -> bool:
    return len(link.trace_id) == 16 and len(link.span_id) == 8 and any(link.trace_id) and any(link.span_id)


def convert_span(span, service: str, resource: dict[str, Any], scope: str | None,
                 limits: SpanLimits = SpanLimits()) -> tuple[dict[str, Any], Cut]:
    """One OTLP span as a codec span dict cut to ``limits``, and what this receiver cut from it.

    Only the first ``limits.events`` events and ``limits.links`` links are converted, so a span of a
    million events costs no more than one of 128. The span records what was cut here and what the
    sender says it dropped (OTLP ``dropped_*_count``) as ``contrail.dropped.*`` attributes.
    Raises :class:`RejectedSpan` when the span is invalid.
    """
    trace_id = _hex_id(span.trace_id, 16, "trace id")
    span_id = _hex_id(span.span_id, 8, "span id")
    parent = _hex_id(span.parent_span_id, 8, "parent span id", optional=True)
    if not span.name:
        raise RejectedSpan("span name is empty")
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start <= 0 or end < start:
        raise RejectedSpan(f"invalid times: start={start} end={end}")
    cut = Cut()
    sent = Cut(events=span.dropped_events_count, links=span.dropped_links_count,
               attributes=span.dropped_attributes_count)
    kept_events = span.events[:limits.events]
    cut.events = len(span.events) - len(kept_events)
    events = []
    for event in kept_events:
        sent.attributes += event.dropped_attributes_count
        events.append({"name": event.name or "event", "time_ns": event.time_unix_nano or start,
                       "attributes": attributes(event.attributes, limits, cut)})
    kept_links = span.links[:limits.links]
    cut.links = len(span.links) - len(kept_links)
    links = []
    for link in kept_links:
        sent.attributes += link.dropped_attributes_count
        if _valid_link(link):
            links.append({"trace_id": link.trace_id.hex(), "span_id": link.span_id.hex(),
                          "attributes": attributes(link.attributes, limits, cut)})
        else:
            sent.links += 1  # a link that points nowhere is dropped, and said so
    converted = {
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
        "attributes": attributes(span.attributes, limits, cut),
        "events": events,
        "links": links,
        "scope": scope or None,
    }
    more = limit_span(converted, limits)  # value lengths; marks what it cut itself
    mark_cut(converted, Cut(cut.events + sent.events, cut.links + sent.links, cut.attributes + sent.attributes))
    return converted, Cut(cut.events, cut.links, cut.attributes + more.attributes, more.truncated)


def convert_request(message: ExportTraceServiceRequest, limits: SpanLimits = SpanLimits(),
                    json_cuts: list[Cut] | None = None) -> tuple[list[dict[str, Any]], list[str], Cut]:
    """(valid span dicts, one reason per rejected span, everything the limits cut).

    ``json_cuts`` holds, span by span in request order, what was cut from an OTLP JSON body before it
    was parsed (:func:`prepare_json`).
    """
    spans: list[dict[str, Any]] = []
    reasons: list[str] = []
    total = Cut()
    position = 0
    for resource_spans in message.resource_spans:
        resource = attributes(resource_spans.resource.attributes, limits, total)
        resource = limit_attributes(resource, limits, total)
        service = resource.get("service.name")
        service = service if isinstance(service, str) and service else "unknown_service"
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope.name
            for span in scope_spans.spans:
                before = json_cuts[position] if json_cuts and position < len(json_cuts) else Cut()
                position += 1
                try:
                    converted, cut = convert_span(span, service, resource, scope, limits)
                except RejectedSpan as exc:
                    reasons.append(str(exc))
                    continue
                if before:
                    mark_cut(converted, before)
                spans.append(converted)
                for part in (cut, before):
                    total.events += part.events
                    total.links += part.links
                    total.attributes += part.attributes
                    total.truncated += part.truncated
    return spans, reasons, total


# --------------------------------------------------------------------------- body decoding


def _hex_to_b64(value: Any) -> str:
    """OTLP JSON carries ids as hex; protobuf's JSON mapping wants base64."""
    if not isinstance(value, str):
        return ""
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        return ""  # an empty id: the span is rejected with a reason, not the whole request


def _items(parent: dict, *keys: str) -> list:
    """The list under the first of ``keys`` present (OTLP JSON allows camelCase and snake_case); 400 when
    it is something other than a list or null."""
    for key in keys:
        value = parent.get(key)
        if value is None:
            continue
        if not isinstance(value, list):
            raise ApiError(400, f"OTLP JSON field {key!r} must be an array, not {type(value).__name__}",
                           parameter="body")
        return value
    return []


def _cut_list(parent: dict, keys: tuple[str, ...], limit: int) -> int:
    """Keep the first ``limit`` items of the list under ``keys``; return how many went."""
    for key in keys:
        value = parent.get(key)
        if isinstance(value, list) and len(value) > limit:
            parent[key] = value[:limit]
            return len(value) - limit
    return 0


def _prepare_json_span(span: dict, limits: SpanLimits) -> Cut:
    cut = Cut()
    for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
        if key in span:
            span[key] = _hex_to_b64(span[key])
    for key in ("events", "links", "attributes"):
        _items(span, key)  # 400 unless a list
    cut.events = _cut_list(span, ("events",), limits.events)
    cut.links = _cut_list(span, ("links",), limits.links)
    cut.attributes = _cut_list(span, ("attributes",), limits.attributes)
    for item in _items(span, "events") + _items(span, "links"):
        if isinstance(item, dict):
            cut.attributes += _cut_list(item, ("attributes",), limits.attributes)
    for link in _items(span, "links"):
        if isinstance(link, dict):
            for key in ("traceId", "spanId", "trace_id", "span_id"):
                if key in link:
                    link[key] = _hex_to_b64(link[key])
    return cut


def prepare_json(payload: Any, limits: SpanLimits = SpanLimits()) -> list[Cut]:
    """Make an OTLP JSON payload parseable by protobuf's JSON mapping (hex ids → base64) and cut every
    span's events, links and attributes to ``limits`` before protobuf copies them; return what was cut,
    span by span in request order. 400 when the payload's shape is wrong."""
    if not isinstance(payload, dict):
        raise ApiError(400, "OTLP JSON body must be an object with resourceSpans", parameter="body")
    cuts: list[Cut] = []
    for resource_spans in _items(payload, "resourceSpans", "resource_spans"):
        if not isinstance(resource_spans, dict):
            continue  # protobuf's parser refuses it with a reason
        for scope_spans in _items(resource_spans, "scopeSpans", "scope_spans"):
            if not isinstance(scope_spans, dict):
                continue
            for span in _items(scope_spans, "spans"):
                cuts.append(_prepare_json_span(span, limits) if isinstance(span, dict) else Cut())
    return cuts


def read_body(max_bytes: int, timeout: float = 30.0) -> bytes:
    """The request body, gunzipped if needed; 413 past ``max_bytes`` before or after decompression,
    408 when it does not arrive within ``timeout`` seconds."""
    data = read_request_body(request.environ, max_bytes, timeout)
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


def parse_request(body: bytes, content_type: str,
                  limits: SpanLimits = SpanLimits()) -> tuple[ExportTraceServiceRequest, list[Cut] | None]:
    """The request message, and for JSON what :func:`prepare_json` cut from each span."""
    message = ExportTraceServiceRequest()
    if content_type == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, ValueError, RuntimeError, RecursionError) as exc:
            raise ApiError(400, f"body is not an OTLP protobuf ExportTraceServiceRequest: {exc}",
                           parameter="body") from None
        return message, None
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"body is not valid JSON: {type(exc).__name__}: {exc}", parameter="body") from None
    cuts = prepare_json(payload, limits)
    try:
        json_format.ParseDict(payload, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, AttributeError, binascii.Error,
            RecursionError, OverflowError) as exc:
        raise ApiError(400, f"body is not an OTLP JSON ExportTraceServiceRequest: {exc}", parameter="body") from None
    return message, cuts


# --------------------------------------------------------------------------- answer


def export_response(rejected: int = 0, message: str = "") -> ExportTraceServiceResponse:
    """The OTLP answer: empty when everything was kept, else ``partial_success`` with the count and reasons."""
    reply = ExportTraceServiceResponse()
    if rejected or message:
        reply.partial_success.rejected_spans = rejected
        reply.partial_success.error_message = message
    return reply


def _respond(content_type: str, rejected: int = 0, message: str = "") -> Response:
    reply = export_response(rejected, message)
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
    settings = current_settings()
    limits = SpanLimits.from_settings(settings)
    try:
        body = read_body(settings.max_body_bytes, settings.body_read_timeout)
        message, json_cuts = parse_request(body, content_type, limits)
    except ApiError as exc:
        metrics.otlp_requests.labels(OUTCOMES.get(exc.status, "bad_request")).inc()
        raise
    spans, reasons, cut = convert_request(message, limits, json_cuts)
    try:
        message_text = accept(spans, reasons, cut)
    except StreamUnavailable as exc:  # the exporter retries on 503
        raise ApiError(503, str(exc), headers={"Retry-After": "2"}) from None
    return _respond(content_type, len(reasons), message_text)
