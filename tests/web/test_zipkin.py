"""Zipkin v2 ingest: payloads as Zipkin reporters send them (py_zipkin's encoder, OpenTelemetry's Zipkin exporter)."""

from __future__ import annotations

import gzip
import json
import time

import pytest
import requests
from opentelemetry.exporter.zipkin.json import ZipkinExporter
from opentelemetry.sdk.trace.export import SpanExportResult
from py_zipkin import Kind
from py_zipkin.encoding import Encoding, Span, create_endpoint, get_encoder

from tests.support.servers import wait_until
from tests.web.test_otlp import finished_spans, stream_spans
from web import create_app

pytestmark = pytest.mark.xdist_group("web-otlp")

TRACE_64 = "463ac35c9f6413ad"
CLIENT_ID = "a2fb4a1d1a96d312"


def py_zipkin_payload() -> str:
    """A client span and the server half sharing its id (B3 single-host style), as py_zipkin encodes them."""
    now = time.time() - 5
    frontend = create_endpoint(port=8080, service_name="frontend", host="10.0.0.1")
    backend = create_endpoint(port=9000, service_name="backend", host="10.0.0.2")
    client = Span(trace_id=TRACE_64, name="get /api", parent_id=None, span_id=CLIENT_ID, kind=Kind.CLIENT,
                  timestamp=now, duration=0.25, local_endpoint=frontend, remote_endpoint=backend,
                  annotations={"wire.send": now + 0.001}, tags={"http.path": "/api", "error": "timeout"})
    server = Span(trace_id=TRACE_64, name="get /api", parent_id=None, span_id=CLIENT_ID, kind=Kind.SERVER,
                  timestamp=now + 0.01, duration=0.2, local_endpoint=backend, shared=True,
                  tags={"http.status_code": "200"})
    encoder = get_encoder(Encoding.V2_JSON)
    return encoder.encode_queue([encoder.encode_span(client), encoder.encode_span(server)])


def test_py_zipkin_payload_is_mapped(client, redis_url):
    response = client.post("/api/v2/spans", data=py_zipkin_payload(), content_type="application/json")
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json() == {"accepted_spans": 2, "rejected_spans": 0}
    spans = {s["kind"]: s for s in stream_spans(redis_url)}
    client_span, server_span = spans["client"], spans["server"]
    assert client_span["trace_id"] == "0" * 16 + TRACE_64 == server_span["trace_id"]
    assert client_span["span_id"] == CLIENT_ID and client_span["parent_span_id"] is None
    assert server_span["parent_span_id"] == CLIENT_ID and server_span["span_id"] != CLIENT_ID
    assert server_span["attributes"]["zipkin.shared"] is True
    assert client_span["service"] == "frontend" and server_span["service"] == "backend"
    assert client_span["attributes"]["peer.service"] == "backend"
    assert client_span["attributes"]["network.peer.address"] == "10.0.0.2"
    assert client_span["attributes"]["network.peer.port"] == 9000
    assert client_span["attributes"]["network.local.address"] == "10.0.0.1"
    assert client_span["attributes"]["http.path"] == "/api"
    assert client_span["status_code"] == "error" and client_span["status_message"] == "timeout"
    assert [e["name"] for e in client_span["events"]] == ["wire.send"]
    assert client_span["end_ns"] - client_span["start_ns"] == 250_000_000
    assert server_span["status_code"] == "unset"


def test_opentelemetry_zipkin_exporter_is_queryable(make_app, serve, collector_process, redis_url):
    base = serve(make_app())
    sdk_spans = finished_spans(service="zipkin-shop")
    exporter = ZipkinExporter(endpoint=base + "/api/v2/spans", timeout=10)
    assert exporter.export(sdk_spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    reader = create_app({"DATABASE_URL": collector_process, "REDIS_URL": redis_url, "TESTING": True}).test_client()
    trace_id = format(sdk_spans[0].context.trace_id, "032x")
    wait_until(lambda: reader.get(f"/api/v1/traces/{trace_id}").status_code == 200, timeout=30,
               message="the Zipkin trace in storage")
    trace = reader.get(f"/api/v1/traces/{trace_id}").get_json()
    by_name = {s["name"]: s for s in trace["spans"]}
    assert set(by_name) == {"POST /checkout", "charge"}
    assert by_name["charge"]["parent_span_id"] == by_name["POST /checkout"]["span_id"]
    assert by_name["charge"]["kind"] == "client" and by_name["POST /checkout"]["kind"] == "server"
    assert by_name["charge"]["status"] == "error"
    assert by_name["POST /checkout"]["service"] == "zipkin-shop"
    assert by_name["POST /checkout"]["attributes"]["http.status_code"] == "200"  # Zipkin tags are strings


def test_invalid_spans_are_rejected_one_by_one(client, redis_url):
    good = json.loads(py_zipkin_payload())[0]
    bad = [dict(good, id="zz"), dict(good, traceId="0" * 16), {k: v for k, v in good.items() if k != "timestamp"},
           "not a span", dict(good, id="1" * 17)]
    response = client.post("/api/v2/spans", data=json.dumps([good, *bad]), content_type="application/json")
    assert response.status_code == 202
    body = response.get_json()
    assert body["accepted_spans"] == 1 and body["rejected_spans"] == 5
    assert "invalid id" in body["error_message"] and "no timestamp" in body["error_message"]
    assert len(stream_spans(redis_url)) == 1


def test_gzip_limits_and_malformed_bodies(make_app, redis_url):
    client = make_app(MAX_BODY_BYTES=4096, API_TOKEN="api", INGEST_TOKEN="ingest", READ_TOKEN="read").test_client()
    ingest = {"Authorization": "Bearer ingest"}
    response = client.post("/api/v2/spans", data=gzip.compress(py_zipkin_payload().encode()),
                           content_type="application/json", headers={**ingest, "Content-Encoding": "gzip"})
    assert response.status_code == 202
    assert client.post("/api/v2/spans", data=py_zipkin_payload(), content_type="application/json",
                       headers={"Authorization": "Bearer read"}).status_code == 403
    assert client.post("/api/v2/spans", data=py_zipkin_payload(), content_type="application/json").status_code == 401
    for data, status in ((b"{not json", 400), (b'{"spans": []}', 400), (b"[" + b" " * 5000 + b"]", 413)):
        response = client.post("/api/v2/spans", data=data, content_type="application/json", headers=ingest)
        assert response.status_code == status and response.is_json
    response = client.post("/api/v2/spans", data=b"\x0a", content_type="application/x-protobuf", headers=ingest)
    assert response.status_code == 415
    assert len(stream_spans(redis_url)) == 2


def test_span_limits_apply(make_app, redis_url):
    client = make_app().test_client()
    app = client.application
    app.extensions["contrail.settings"].span_attribute_count_limit = 3
    span = json.loads(py_zipkin_payload())[1]
    span["tags"] = {f"t{i}": "x" for i in range(10)}
    assert client.post("/api/v2/spans", json=[span]).status_code == 202
    stored = stream_spans(redis_url)[0]
    assert stored["attributes"]["contrail.dropped.attributes"] >= 7
    assert 'contrail_otlp_span_items_dropped_total{item="attributes"}' in client.get("/metrics").get_data(
        as_text=True)


def test_contrail_web_routes_zipkin_with_the_ingest_token(gunicorn_web, redis_url):
    base, _process = gunicorn_web(CONTRAIL_INGEST_TOKEN="ing", CONTRAIL_API_TOKEN="api",
                                  CONTRAIL_STREAM="contrail:spans")
    response = requests.post(base + "/api/v2/spans", data=py_zipkin_payload(), timeout=10,
                             headers={"Content-Type": "application/json", "Authorization": "Bearer ing"})
    assert response.status_code == 202 and len(stream_spans(redis_url)) == 2
