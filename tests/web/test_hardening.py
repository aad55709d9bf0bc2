"""A hostile or buggy client against the web app: every case here once broke it (issue 14)."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import threading
import time

import psutil
import pytest
import requests
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.support.servers import wait_until
from tests.web.test_otlp import stream_spans

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")


def one_span_request(events: int = 0, links: int = 0, attributes: int = 0) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    kv = resource_spans.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "hostile"
    span = resource_spans.scope_spans.add().spans.add()
    span.trace_id, span.span_id, span.name = TRACE_ID, SPAN_ID, "big"
    span.start_time_unix_nano, span.end_time_unix_nano = 1_700_000_000_000_000_000, 1_700_000_000_100_000_000
    span.dropped_events_count = 3  # what the sending SDK already dropped is kept in the count
    for _ in range(events):
        span.events.add()
    for i in range(links):
        link = span.links.add()
        link.trace_id, link.span_id = TRACE_ID, (i + 1).to_bytes(8, "big")
    for i in range(attributes):
        kv = span.attributes.add()
        kv.key, kv.value.int_value = f"a{i}", i
    return message


def strict_json(text: str):
    """json.loads refusing NaN and Infinity, as a browser does."""
    def refuse(token):
        raise ValueError(f"{token} is not JSON")

    return json.loads(text, parse_constant=refuse)


def worker_rss(process: subprocess.Popen) -> dict[int, int]:
    return {child.pid: child.memory_info().rss for child in psutil.Process(process.pid).children()}


# --------------------------------------------------------------------------- 3: span limits while parsing


def test_million_event_span_is_cut_to_the_limit_in_the_receiver(gunicorn_web, redis_url, tmp_path):
    """A 2 MB protobuf of one span with 1,000,000 empty events: the worker converts 128 of them, the span
    reaches the stream with 128 events and the dropped count, and /metrics counts the cut."""
    base, process = gunicorn_web("--workers", "1", CONTRAIL_MAX_BODY_BYTES="4MB")
    body = one_span_request(events=1_000_000).SerializeToString()
    assert 1_900_000 < len(body) < 2_100_000
    before = worker_rss(process)
    response = requests.post(base + "/v1/traces", data=body, timeout=60,
                             headers={"Content-Type": "application/x-protobuf"})
    after = worker_rss(process)
    assert response.status_code == 200
    spans = stream_spans(redis_url, f"contrail:web:{tmp_path.name}")
    assert len(spans) == 1
    assert len(spans[0]["events"]) == 128
    assert spans[0]["attributes"]["contrail.dropped.events"] == 1_000_000 - 128 + 3
    growth = max(after[pid] - before.get(pid, after[pid]) for pid in after)
    print(f"worker RSS growth for the 1,000,000-event span: {growth / 2**20:.1f} MiB")
    assert growth < 200 * 2**20  # the protobuf parse itself; the old conversion grew by ~530 MB
    metrics = requests.get(base + "/metrics", timeout=10).text
    assert 'contrail_otlp_span_items_dropped_total{item="events"} 999872.0' in metrics


def test_links_and_attributes_are_cut_and_counted(client, redis_url):
    body = one_span_request(links=300, attributes=200).SerializeToString()
    response = client.post("/v1/traces", data=body, content_type="application/x-protobuf")
    assert response.status_code == 200
    (span,) = stream_spans(redis_url)
    assert len(span["links"]) == 128 and len(span["attributes"]) <= 128 + 3
    assert span["attributes"]["contrail.dropped.links"] == 172
    assert span["attributes"]["contrail.dropped.attributes"] == 72
    assert span["attributes"]["contrail.dropped.events"] == 3


def test_json_spans_are_cut_before_protobuf_copies_them(client, redis_url):
    payload = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "big",
        "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000",
        "events": [{"name": "e"}] * 5000, "droppedEventsCount": 2}]}]}]}
    response = client.post("/v1/traces", json=payload)
    assert response.status_code == 200
    (span,) = stream_spans(redis_url)
    assert len(span["events"]) == 128
    assert span["attributes"]["contrail.dropped.events"] == 5000 - 128 + 2


# --------------------------------------------------------------------------- 4: body framing


def raw_request(base: str, head: str, body_parts, timeout: float = 30.0) -> tuple[int, bytes]:
    """Send an HTTP/1.1 request by hand (``body_parts`` already framed); return (status, whole reply)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode())
        try:
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered before the body was through; read its answer
        reply = b""
        while b"\r\n\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    return int(reply.split(b" ", 2)[1]), reply


def chunked(data: bytes, size: int = 16384):
    for i in range(0, len(data), size):
        piece = data[i:i + size]
        yield f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    yield b"0\r\n\r\n"


def test_chunked_body_over_the_limit_is_refused_not_truncated(gunicorn_web, redis_url, tmp_path):
    base, _ = gunicorn_web("--workers", "1", CONTRAIL_MAX_BODY_BYTES="64kB")
    message = ExportTraceServiceRequest()
    for i in range(60):
        message.resource_spans.extend(one_span_request(attributes=100).resource_spans)
        message.resource_spans[-1].scope_spans[0].spans[0].span_id = (i + 1).to_bytes(8, "big")
    body = message.SerializeToString()
    assert len(body) > 64_000
    head = (f"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf\r\n"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    status, reply = raw_request(base, head, chunked(body))
    assert status == 413, reply
    assert stream_spans(redis_url, f"contrail:web:{tmp_path.name}") == []
    small = one_span_request().SerializeToString()
    status, reply = raw_request(base, head, chunked(small, 7))
    assert status == 200, reply
    assert len(stream_spans(redis_url, f"contrail:web:{tmp_path.name}")) == 1


# --------------------------------------------------------------------------- 8: slow clients


def test_slow_bodies_get_408_and_health_checks_still_answer(gunicorn_web):
    """Slow-body connections on every thread of the only worker: each is cut at the body deadline with 408,
    so /healthz answers (generous bound: it must answer at all, not fast)."""
    base, _ = gunicorn_web("--workers", "1", "--threads", "2", CONTRAIL_BODY_READ_TIMEOUT="2s")
    host, port = base.removeprefix("http://").split(":")
    stop = threading.Event()
    replies: list[bytes] = []

    def slow_client():
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-protobuf"
                         b"\r\nContent-Length: 100000\r\n\r\n")
            try:
                while not stop.is_set():
                    sock.sendall(b"\x00")
                    sock.settimeout(0.5)
                    try:
                        data = sock.recv(65536)
                    except socket.timeout:
                        continue
                    while data and not data.rstrip().endswith(b"}"):  # the JSON body may come separately
                        more = sock.recv(65536)
                        data += more
                        if not more:
                            break
                    replies.append(data)
                    return
            except OSError:
                return

    threads = [threading.Thread(target=slow_client, daemon=True) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)  # the slow clients hold both threads now
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
        wait_until(lambda: replies, timeout=15, message="an answer to a slow body")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert replies[0].startswith(b"HTTP/1.1 408"), replies[0][:200]
    assert b'"code":"timeout"' in replies[0].replace(b" ", b"")


# --------------------------------------------------------------------------- 6: NaN and Infinity


def test_nan_and_infinity_attributes_are_served_as_valid_json(collector_process, make_app, redis_url):
    from web import create_app

    app = create_app({"DATABASE_URL": collector_process, "REDIS_URL": redis_url, "TESTING": True})
    client = app.test_client()
    try:
        attributes = [{"key": key, "value": {"doubleValue": value}}
                      for key, value in (("nan", "NaN"), ("inf", "Infinity"), ("ninf", "-Infinity"))]
        attributes.append({"key": "list", "value": {"arrayValue": {"values": [{"doubleValue": "NaN"}]}}})
        payload = {"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": TRACE_ID.hex(), "spanId": SPAN_ID.hex(), "name": "nan", "attributes": attributes,
            "startTimeUnixNano": str(time.time_ns() - 10**9), "endTimeUnixNano": str(time.time_ns()),
            "events": [{"name": "e", "attributes": attributes}]}]}]}]}
        assert client.post("/v1/traces", json=payload).status_code == 200
        wait_until(lambda: client.get(f"/api/v1/traces/{TRACE_ID.hex()}").status_code == 200, timeout=30,
                   message="the trace stored by the collector")
        trace = strict_json(client.get(f"/api/v1/traces/{TRACE_ID.hex()}").get_data(as_text=True))
        span = next(s for s in trace["spans"] if s["span_id"] == SPAN_ID.hex())
        assert (span["attributes"]["nan"], span["attributes"]["inf"], span["attributes"]["ninf"]) == (
            "NaN", "Infinity", "-Infinity")
        for path in ("/api/v1/traces", f"/api/v1/traces/{TRACE_ID.hex()}/export?format=json&download=0",
                     f"/api/v1/traces/{TRACE_ID.hex()}/export?format=otlp&download=0"):
            response = client.get(path)
            assert response.status_code == 200, path
            strict_json(response.get_data(as_text=True))
    finally:
        app.extensions["contrail.resources"].close()


# --------------------------------------------------------------------------- 7: 400, never 500


@pytest.mark.parametrize("payload", [
    "[" * 100_000 + "]" * 100_000,
    '{"resourceSpans":' + '{"a":' * 50_000 + "1" + "}" * 50_001,
    '{"resourceSpans": 5}',
    '{"resourceSpans": true}',
    '{"resourceSpans": [{"scopeSpans": 7}]}',
    '{"resourceSpans": [{"scopeSpans": [{"spans": false}]}]}',
    '{"resourceSpans": [{"scopeSpans": [{"spans": [{"links": 3}]}]}]}',
    '{"resourceSpans": [{"scopeSpans": [{"spans": [{"events": "x"}]}]}]}',
])
def test_wrong_shaped_otlp_json_is_a_400(client, payload):
    response = client.post("/v1/traces", data=payload, content_type="application/json")
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "bad_parameter" and error["message"]


def test_cursor_holding_infinity_is_a_400(client):
    cursor = base64.urlsafe_b64encode(b'["start", Infinity, "abc"]').decode().rstrip("=")
    response = client.get(f"/api/v1/traces?cursor={cursor}")
    assert response.status_code == 400
    assert response.get_json()["error"]["parameter"] == "cursor"


def test_unexpected_exception_is_a_json_500_without_traceback(make_app):
    app = make_app(TESTING=False)

    @app.get("/api/v1/boom")
    def boom():
        raise RuntimeError("secret internals at /srv/contrail")

    response = app.test_client().get("/api/v1/boom")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal",
                                             "message": "internal error; the server log has the details"}}


# --------------------------------------------------------------------------- 11: no driver text


def test_status_does_not_leak_database_or_redis_details(make_app):
    client = make_app(DATABASE_URL="postgresql+psycopg://secretrole:pw@127.0.0.1:1/secretdb",
                      REDIS_URL="redis://127.0.0.1:1/0").test_client()
    response = client.get("/api/v1/status")
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    for secret in ("secretrole", "secretdb", "127.0.0.1"):
        assert secret not in text, secret
    assert response.get_json()["database"].startswith("unavailable (")


def test_slow_body_to_a_route_that_ignores_it_does_not_hold_the_thread(gunicorn_web):
    """/healthz answers without reading a body; the server then reads it before the next request. A body
    sent a byte at a time must be cut at the deadline there too, so the only thread is freed."""
    base, _ = gunicorn_web("--workers", "1", "--threads", "1", CONTRAIL_BODY_READ_TIMEOUT="2s")
    host, port = base.removeprefix("http://").split(":")
    stop = threading.Event()

    def trickle(sock):
        try:
            while not stop.wait(0.5):
                sock.sendall(b"\x00")
        except OSError:
            return

    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n\r\n")
    thread = threading.Thread(target=trickle, args=(sock,), daemon=True)
    thread.start()
    try:
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
    finally:
        stop.set()
        thread.join(10)
        sock.close()
