"""The OTLP/HTTP receiver fed by the official OpenTelemetry exporter, in protobuf and JSON."""

from __future__ import annotations

import gzip
import json

import pytest
import redis
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otlp_encode
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tracer.codec import decode_entry

pytestmark = pytest.mark.xdist_group("web-otlp")


def finished_spans(service="checkout"):
    """Spans made by the real OpenTelemetry SDK: a server span, a child with an error and attributes of every type."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service, "deployment.environment": "test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("shop.instrumentation", "1.0")
    with tracer.start_as_current_span("POST /checkout", kind=SpanKind.SERVER,
                                      attributes={"http.status_code": 200, "cart.items": ["a", "b"],
                                                  "ratio": 0.5, "vip": True}) as root:
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT,
                                          links=[Link(root.get_span_context(), {"why": "test"})]) as child:
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    provider.shutdown()
    return memory.get_finished_spans()


def stream_spans(redis_url, stream="contrail:spans"):
    client = redis.Redis.from_url(redis_url)
    out = []
    for _id, fields in client.xrange(stream):
        entry = decode_entry(fields)
        assert not entry.rejected
        out += entry.spans
    client.close()
    return out


def check_converted(spans, sdk_spans):
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"POST /checkout", "charge"}
    root, child = by_name["POST /checkout"], by_name["charge"]
    sdk_root = next(s for s in sdk_spans if s.name == "POST /checkout")
    assert root["trace_id"] == format(sdk_root.context.trace_id, "032x")
    assert root["span_id"] == format(sdk_root.context.span_id, "016x")
    assert root["parent_span_id"] is None and child["parent_span_id"] == root["span_id"]
    assert root["service"] == "checkout" and root["resource"]["deployment.environment"] == "test"
    assert root["kind"] == "server" and child["kind"] == "client"
    assert root["attributes"] == {"http.status_code": 200, "cart.items": ["a", "b"], "ratio": 0.5, "vip": True}
    assert child["status_code"] == "error" and child["status_message"] == "card declined"
    assert child["events"][0]["name"] == "retry" and child["events"][0]["attributes"] == {"attempt": 2}
    assert child["links"] == [{"trace_id": root["trace_id"], "span_id": root["span_id"],
                               "attributes": {"why": "test"}}]
    assert root["scope"] == "shop.instrumentation"
    assert root["start_ns"] == sdk_root.start_time and root["end_ns"] == sdk_root.end_time


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_official_protobuf_exporter_feeds_the_stream(make_app, serve, redis_url, compression):
    app = make_app()
    base = serve(app)
    sdk_spans = finished_spans()
    exporter = OTLPSpanExporter(endpoint=base + "/v1/traces", compression=compression, timeout=10)
    assert exporter.export(sdk_spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    check_converted(stream_spans(redis_url), sdk_spans)
    metrics = app.test_client().get("/metrics").get_data(as_text=True)
    assert "contrail_otlp_spans_accepted_total 2.0" in metrics


def otlp_json(sdk_spans) -> dict:
    """The OTLP JSON form (hex ids) of the exporter's own protobuf request."""
    request = otlp_encode(sdk_spans)
    body = json_format.MessageToDict(request)
    for rs in body["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = __import__("base64").b64decode(span[key]).hex()
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        link[key] = __import__("base64").b64decode(link[key]).hex()
    return body


def test_otlp_json_with_hex_ids_enum_numbers_and_string_ints(client, redis_url):
    sdk_spans = finished_spans()
    body = otlp_json(sdk_spans)
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["kind"] = 2 if span["name"] == "POST /checkout" else 3  # enum as number, not name
    response = client.post("/v1/traces", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_json() == {}  # no partial_success when everything was accepted
    check_converted(stream_spans(redis_url), sdk_spans)


def test_gzipped_json(client, redis_url):
    body = gzip.compress(json.dumps(otlp_json(finished_spans())).encode())
    response = client.post("/v1/traces", data=body, content_type="application/json",
                           headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200 and len(stream_spans(redis_url)) == 2


def test_invalid_spans_are_reported_as_partial_success(client, redis_url):
    body = otlp_json(finished_spans())
    spans = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    good, bad = spans
    bad_ids = dict(good, spanId="00" * 8, name="zero id")
    backwards = dict(good, spanId="ab" * 8, name="backwards", startTimeUnixNano="200", endTimeUnixNano="100")
    not_hex = dict(good, traceId="zz" * 16, spanId="cd" * 8, name="not hex")
    spans[:] = [good, bad, bad_ids, backwards, not_hex]
    response = client.post("/v1/traces", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 200
    partial = response.get_json()["partialSuccess"]
    assert int(partial["rejectedSpans"]) == 3
    assert "invalid span id" in partial["errorMessage"] and "invalid times" in partial["errorMessage"]
    assert "invalid trace id" in partial["errorMessage"]
    assert {s["name"] for s in stream_spans(redis_url)} == {good["name"], bad["name"]}


def test_protobuf_partial_success_is_protobuf(client, redis_url):
    request = otlp_encode(finished_spans())
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00" * 16
    response = client.post("/v1/traces", data=request.SerializeToString(), content_type="application/x-protobuf")
    assert response.status_code == 200 and response.mimetype == "application/x-protobuf"
    reply = ExportTraceServiceResponse.FromString(response.data)
    assert reply.partial_success.rejected_spans == 1 and "trace id" in reply.partial_success.error_message
    assert len(stream_spans(redis_url)) == 1


def test_large_request_is_split_into_batches(make_app, redis_url):
    client = make_app().test_client()
    request = otlp_encode(finished_spans())
    template = request.resource_spans[0].scope_spans[0].spans[0]
    spans = request.resource_spans[0].scope_spans[0].spans
    for i in range(1200):
        extra = spans.add()
        extra.CopyFrom(template)
        extra.span_id = (i + 1).to_bytes(8, "big")
    response = client.post("/v1/traces", data=request.SerializeToString(), content_type="application/x-protobuf")
    assert response.status_code == 200
    lengths = [int(f[b"n"]) for _id, f in redis.Redis.from_url(redis_url).xrange("contrail:spans")]
    assert lengths == [512, 512, 178]


@pytest.mark.parametrize("data, content_type, headers, status, parameter", [
    (b"\xff\xfe garbage", "application/x-protobuf", {}, 400, "body"),
    (b"{not json", "application/json", {}, 400, "body"),
    (b"[1, 2]", "application/json", {}, 400, "body"),
    (b'{"resourceSpans": "nope"}', "application/json", {}, 400, "body"),
    (b"not gzip", "application/json", {"Content-Encoding": "gzip"}, 400, "body"),
    (gzip.compress(b"{}", mtime=0)[:-6], "application/json", {"Content-Encoding": "gzip"}, 400, "body"),
    (b"{}", "application/json", {"Content-Encoding": "br"}, 415, "Content-Encoding"),
    (b"{}", "text/plain", {}, 415, "Content-Type"),
])
def test_undecodable_bodies(client, redis_url, data, content_type, headers, status, parameter):
    response = client.post("/v1/traces", data=data, content_type=content_type, headers=headers)
    assert response.status_code == status and response.is_json
    assert response.get_json()["error"]["parameter"] == parameter
    assert stream_spans(redis_url) == []


def test_body_limits_before_and_after_decompression(make_app, redis_url):
    client = make_app(MAX_BODY_BYTES=4096).test_client()
    big = json.dumps(otlp_json(finished_spans() * 20)).encode()
    assert len(big) > 4096
    response = client.post("/v1/traces", data=big, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["error"]["code"] == "too_large"
    small_bomb = gzip.compress(b" " * 2_000_000)  # 2 MB once inflated, about 2 kB on the wire
    assert len(small_bomb) < 4096
    response = client.post("/v1/traces", data=small_bomb, content_type="application/json",
                           headers={"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert stream_spans(redis_url) == []
    assert 'contrail_otlp_requests_total{outcome="too_large"} 2.0' in client.get("/metrics").get_data(as_text=True)


def test_redis_down_answers_503_so_exporters_retry(make_app):
    from tests.support.servers import free_port

    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    request = otlp_encode(finished_spans())
    response = client.post("/v1/traces", data=request.SerializeToString(), content_type="application/x-protobuf")
    assert response.status_code == 503 and response.headers["Retry-After"]
