"""The OTLP/gRPC receiver fed by the official OpenTelemetry gRPC exporter, and its limits and refusals."""

from __future__ import annotations

import dataclasses
import gzip

import grpc
import pytest
import requests
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otlp_encode
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.support.servers import free_port, wait_until
from tests.web.test_otlp import check_converted, finished_spans, stream_spans
from web import create_app
from web.otlp_grpc import start_grpc_server
from web.settings import WebSettings

pytestmark = pytest.mark.xdist_group("web-otlp")


@pytest.fixture
def grpc_app(database_url, redis_url):
    """Start an app's gRPC receiver on a free port with extra settings; returns (app, "127.0.0.1:port")."""
    started = []

    def start(**settings):
        port = free_port()
        base = WebSettings.load(env={}, database_url=database_url, redis_url=redis_url, otlp_grpc_port=port)
        app = create_app({"TESTING": True}, settings=dataclasses.replace(base, **settings))
        started.append((app, start_grpc_server(app)))
        return app, f"127.0.0.1:{port}"

    yield start
    for app, server in started:
        server.stop(grace=None)
        app.extensions["contrail.resources"].close()


def export_raw(target: str, payload: bytes, metadata=(), compression=None):
    """Call Export with raw bytes (what a client of another language may send); returns the reply or raises."""
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                   request_serializer=None, response_deserializer=None)
        return call(payload, metadata=metadata, timeout=10, compression=compression)


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip])
def test_official_grpc_exporter_feeds_the_stream(grpc_app, redis_url, compression):
    app, target = grpc_app()
    sdk_spans = finished_spans()
    exporter = OTLPSpanExporter(endpoint=target, insecure=True, compression=compression, timeout=10)
    assert exporter.export(sdk_spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    check_converted(stream_spans(redis_url), sdk_spans)
    assert "contrail_otlp_spans_accepted_total 2.0" in app.test_client().get("/metrics").get_data(as_text=True)


def test_token_is_read_from_authorization_metadata(grpc_app, redis_url):
    _app, target = grpc_app(ingest_token="ingest-secret", read_token="read-secret")
    for headers, expected in (({}, grpc.StatusCode.UNAUTHENTICATED),
                              ({"authorization": "Bearer wrong"}, grpc.StatusCode.UNAUTHENTICATED),
                              ({"authorization": "Bearer read-secret"}, grpc.StatusCode.PERMISSION_DENIED)):
        with pytest.raises(grpc.RpcError) as caught:
            export_raw(target, otlp_encode(finished_spans()).SerializeToString(), tuple(headers.items()))
        assert caught.value.code() == expected
    assert stream_spans(redis_url) == []
    exporter = OTLPSpanExporter(endpoint=target, insecure=True, headers={"authorization": "Bearer ingest-secret"},
                                compression=grpc.Compression.Gzip, timeout=10)
    assert exporter.export(finished_spans()) == SpanExportResult.SUCCESS
    exporter.shutdown()
    assert len(stream_spans(redis_url)) == 2


def test_invalid_spans_are_reported_as_partial_success(grpc_app, redis_url):
    _app, target = grpc_app()
    request = otlp_encode(finished_spans())
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\x00" * 16
    with grpc.insecure_channel(target) as channel:
        reply = trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=10)
    assert reply.partial_success.rejected_spans == 1 and "invalid trace id" in reply.partial_success.error_message
    assert len(stream_spans(redis_url)) == 1


def test_span_limits_are_those_of_the_http_receiver(grpc_app, redis_url):
    _app, target = grpc_app(span_event_count_limit=2)
    request = otlp_encode(finished_spans())
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for index in range(10):
        span.events.add(name=f"e{index}", time_unix_nano=span.start_time_unix_nano)
    with grpc.insecure_channel(target) as channel:
        trace_service_pb2_grpc.TraceServiceStub(channel).Export(request, timeout=10)
    stored = next(s for s in stream_spans(redis_url) if s["span_id"] == span.span_id.hex())
    assert len(stored["events"]) == 2 and stored["attributes"]["contrail.dropped.events"] >= 8


def test_messages_over_the_body_limit_are_resource_exhausted(grpc_app, redis_url):
    _app, target = grpc_app(max_body_bytes=4096)
    big = otlp_encode(finished_spans() * 40).SerializeToString()
    assert len(big) > 4096
    with pytest.raises(grpc.RpcError) as caught:
        export_raw(target, big)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    bomb = b"\x00" * 2_000_000  # 2 MB inflated, a few kB gzipped
    assert len(gzip.compress(bomb)) < 4096
    with pytest.raises(grpc.RpcError) as caught:
        export_raw(target, bomb, compression=grpc.Compression.Gzip)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stream_spans(redis_url) == []


def test_undecodable_message_is_refused_and_the_server_goes_on(grpc_app, redis_url):
    _app, target = grpc_app()
    with pytest.raises(grpc.RpcError) as caught:
        export_raw(target, b"\xff\xfe garbage")
    assert caught.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT)
    exporter = OTLPSpanExporter(endpoint=target, insecure=True, timeout=10)
    assert exporter.export(finished_spans()) == SpanExportResult.SUCCESS
    assert len(stream_spans(redis_url)) == 2


def test_redis_down_is_unavailable_so_exporters_retry(grpc_app):
    _app, target = grpc_app(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(grpc.RpcError) as caught:
        export_raw(target, otlp_encode(finished_spans()).SerializeToString())
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


def test_contrail_web_serves_grpc_and_the_spans_are_queryable(gunicorn_web, collector_process, redis_url):
    port = free_port()
    base, _process = gunicorn_web("--workers", "2", CONTRAIL_OTLP_GRPC_PORT=str(port),
                                  CONTRAIL_STREAM="contrail:spans", CONTRAIL_DATABASE_URL=collector_process,
                                  CONTRAIL_API_TOKEN="tok")
    sdk_spans = finished_spans(service="grpc-shop")
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{port}", insecure=True, timeout=10,
                                headers={"authorization": "Bearer tok"}, compression=grpc.Compression.Gzip)
    assert exporter.export(sdk_spans) == SpanExportResult.SUCCESS
    exporter.shutdown()
    trace_id = format(sdk_spans[0].context.trace_id, "032x")
    auth = {"Authorization": "Bearer tok"}
    wait_until(lambda: requests.get(f"{base}/api/v1/traces/{trace_id}", headers=auth, timeout=5).ok,
               timeout=30, message="the gRPC trace in storage")
    trace = requests.get(f"{base}/api/v1/traces/{trace_id}", headers=auth, timeout=5).json()
    assert {s["name"] for s in trace["spans"]} == {"POST /checkout", "charge"}
    assert {s["service"] for s in trace["spans"]} == {"grpc-shop"}


def test_contrail_web_refuses_a_grpc_port_in_use(tmp_path, redis_url):
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "contrail_cli", "web", "--port", str(free_port()),
             "--redis-url", redis_url, "--database-url", f"sqlite:///{tmp_path / 'x.db'}"],
            env={**__import__("os").environ, "CONTRAIL_OTLP_GRPC_PORT": str(port), "HOME": str(tmp_path)},
            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "CONTRAIL_OTLP_GRPC_PORT" in result.stderr
