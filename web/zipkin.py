"""Zipkin v2 trace receiver: ``POST /api/v2/spans`` with a JSON list of Zipkin spans, optionally gzipped.

Zipkin-instrumented services (and OpenTelemetry's Zipkin exporters) point their reporter here. Each
Zipkin span becomes a Contrail span: 64-bit trace ids are left-padded to 128 bits, the kind keeps its
meaning, the local endpoint names the service, the remote endpoint becomes peer attributes,
annotations become events and tags attributes (``error`` and ``otel.status_*`` tags set the status).
A ``shared`` span (the server half of a span id the client also used) gets a span id of its own,
derived from the shared one, with the client half as its parent, so both halves are kept.
Limits, counters, stream and per-span rejection are those of the OTLP receivers (:mod:`web.ingest`).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from flask import Blueprint, jsonify, request

from tracer.limits import Cut, SpanLimits, limit_span

from .errors import ApiError
from .ingest import StreamUnavailable, accept
from .metrics import current_metrics
from .otlp import OUTCOMES, RejectedSpan, read_body
from .resources import current_settings

bp = Blueprint("zipkin", __name__)

KINDS = {"CLIENT": "client", "SERVER": "server", "PRODUCER": "producer", "CONSUMER": "consumer"}
HEX_ID = re.compile(r"^[0-9a-f]{1,32}$")
MAX_SERVICE_LENGTH = 256


def _hex(value: Any, width: int, what: str, optional: bool = False) -> str | None:
    """A Zipkin hex id, left-padded with zeros to ``width`` digits; rejects bad or all-zero ids."""
    if optional and value in (None, ""):
        return None
    if not isinstance(value, str) or not HEX_ID.match(value.lower()) or len(value) > width:
        raise RejectedSpan(f"invalid {what} {str(value)[:40]!r}: must be up to {width} hex digits")
    padded = value.lower().rjust(width, "0")
    if not int(padded, 16):
        raise RejectedSpan(f"invalid {what}: all zero")
    return padded


def _micros(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value > 2**53:
        raise RejectedSpan(f"invalid {what} {str(value)[:40]!r}: must be epoch microseconds")
    return int(value)


def _endpoint(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _endpoint_attributes(endpoint: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Address and port of a Zipkin endpoint as ``network.<prefix>.*`` attributes."""
    out: dict[str, Any] = {}
    address = endpoint.get("ipv4") or endpoint.get("ipv6")
    if isinstance(address, str) and address:
        out[f"network.{prefix}.address"] = address
    if isinstance(endpoint.get("port"), int) and not isinstance(endpoint.get("port"), bool):
        out[f"network.{prefix}.port"] = endpoint["port"]
    return out


def _status(tags: dict[str, Any]) -> tuple[str, str | None]:
    """Zipkin marks failures with an ``error`` tag; OpenTelemetry's Zipkin exporter adds ``otel.status_code``."""
    code = str(tags.get("otel.status_code", "")).upper()
    if "error" in tags or code == "ERROR":
        message = tags.get("error") or tags.get("otel.status_description") or None
        return "error", message if message not in ("", "true") else None
    return ("ok" if code == "OK" else "unset"), None


def convert_zipkin_span(raw: Any, limits: SpanLimits) -> tuple[dict[str, Any], Cut]:
    """One Zipkin v2 span as a codec span dict cut to ``limits``, and what was cut; raises
    :class:`RejectedSpan` when invalid."""
    if not isinstance(raw, dict):
        raise RejectedSpan(f"a Zipkin span must be an object, not {type(raw).__name__}")
    trace_id = _hex(raw.get("traceId"), 32, "traceId")
    span_id = _hex(raw.get("id"), 16, "id")
    parent = _hex(raw.get("parentId"), 16, "parentId", optional=True)
    if raw.get("timestamp") is None:
        raise RejectedSpan("span has no timestamp")
    start = _micros(raw["timestamp"], "timestamp") * 1000
    if start <= 0:
        raise RejectedSpan("invalid timestamp: must be positive")
    end = start + _micros(raw.get("duration") or 0, "duration") * 1000
    kind = raw.get("kind")
    tags = raw.get("tags") if isinstance(raw.get("tags"), dict) else {}
    attributes = {str(key): value if isinstance(value, str) else json.dumps(value) for key, value in tags.items()}
    shared = raw.get("shared") is True
    if shared:  # the server half of a client's span id: its own id, the client half as parent
        parent = span_id
        span_id = hashlib.sha256(f"{trace_id}:{span_id}:shared".encode()).hexdigest()[:16]
        attributes["zipkin.shared"] = True
    if raw.get("debug") is True:
        attributes["zipkin.debug"] = True
    local, remote = _endpoint(raw.get("localEndpoint")), _endpoint(raw.get("remoteEndpoint"))
    service = local.get("serviceName")
    service = service[:MAX_SERVICE_LENGTH] if isinstance(service, str) and service else "unknown_service"
    attributes.update(_endpoint_attributes(local, "local"))
    attributes.update(_endpoint_attributes(remote, "peer"))
    if isinstance(remote.get("serviceName"), str) and remote["serviceName"]:
        attributes["peer.service"] = remote["serviceName"]
    events = []
    for annotation in raw.get("annotations") or []:
        if isinstance(annotation, dict) and isinstance(annotation.get("value"), str):
            when = annotation.get("timestamp")
            time_ns = _micros(when, "annotation timestamp") * 1000 if when is not None else start
            events.append({"name": annotation["value"] or "annotation", "time_ns": time_ns, "attributes": {}})
    status, message = _status(tags)
    name = raw.get("name")
    span = {
        "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent,
        "name": name if isinstance(name, str) and name else "unknown",
        "kind": KINDS.get(str(kind).upper(), "internal") if kind else "internal",
        "start_ns": start, "end_ns": end, "status_code": status, "status_message": message,
        "service": service, "resource": {"service.name": service}, "attributes": attributes,
        "events": events, "links": [], "scope": "zipkin",
    }
    return span, limit_span(span, limits)


def convert_zipkin(payload: Any, limits: SpanLimits = SpanLimits()) -> tuple[list[dict[str, Any]], list[str], Cut]:
    """(valid span dicts, one reason per rejected span, everything the limits cut) of a Zipkin v2 JSON list."""
    if not isinstance(payload, list):
        raise ApiError(400, "a Zipkin v2 body must be a JSON array of spans", parameter="body")
    spans, reasons, total = [], [], Cut()
    for raw in payload:
        try:
            span, cut = convert_zipkin_span(raw, limits)
        except RejectedSpan as exc:
            reasons.append(str(exc))
            continue
        spans.append(span)
        total.events += cut.events
        total.attributes += cut.attributes
        total.truncated += cut.truncated
    return spans, reasons, total


@bp.post("/api/v2/spans")
def receive():
    metrics = current_metrics()
    content_type = (request.mimetype or "application/json").lower()
    if content_type not in ("application/json", "text/plain"):  # some reporters send no or a text type
        metrics.otlp_requests.labels("unsupported_media_type").inc()
        raise ApiError(415, f"unsupported Content-Type {content_type!r}: Contrail accepts Zipkin v2 JSON "
                            "(application/json)", parameter="Content-Type")
    settings = current_settings()
    limits = SpanLimits.from_settings(settings)
    try:
        body = read_body(settings.max_body_bytes, settings.body_read_timeout)
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ApiError(400, f"body is not valid JSON: {type(exc).__name__}: {exc}", parameter="body") from None
        spans, reasons, cut = convert_zipkin(payload, limits)
    except ApiError as exc:
        metrics.otlp_requests.labels(OUTCOMES.get(exc.status, "bad_request")).inc()
        raise
    try:
        message = accept(spans, reasons, cut)
    except StreamUnavailable as exc:
        raise ApiError(503, str(exc), headers={"Retry-After": "2"}) from None
    body = {"accepted_spans": len(spans), "rejected_spans": len(reasons)}
    if message:
        body["error_message"] = message
    response = jsonify(body)
    response.status_code = 202  # what a Zipkin server answers
    return response

