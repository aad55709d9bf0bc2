"""Property-based fuzzing of the OTLP receiver (``POST /v1/traces``), protobuf and JSON.

Properties: no body answers 500 (only 200 with or without partial success, 400, 413, 415); a valid body
always lands in the span stream, whole; a span never carries more than the span limits; and the Python
heap one request allocates stays under ``HEAP_BOUND`` (bodies here are at most ``MAX_BODY`` bytes).

CI runs the default ``ci`` profile (a few seconds); ``pytest --hypothesis-profile=slow`` runs many more
examples outside CI.
"""

from __future__ import annotations

import base64
import json
import math
import tracemalloc

import pytest
import redis
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tracer.codec import decode_entry

settings.register_profile("ci", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("slow", max_examples=2000, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.load_profile("ci")

ALLOWED = {200, 400, 413, 415}
MAX_BODY = 1 << 20
HEAP_BOUND = 48 << 20  # Python heap of one request with a body of at most MAX_BODY bytes
LIMIT = 128

ids = st.binary(min_size=16, max_size=16).filter(any)
span_ids = st.binary(min_size=8, max_size=8).filter(any)
numbers = st.one_of(st.integers(min_value=-2**63, max_value=2**63 - 1), st.floats(allow_nan=True),
                    st.sampled_from([math.inf, -math.inf, math.nan, 1e308]))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.integers(), st.text(max_size=20))


@st.composite
def valid_requests(draw) -> tuple[ExportTraceServiceRequest, int]:
    """A valid ExportTraceServiceRequest with varied attributes and sometimes huge repeated fields."""
    message = ExportTraceServiceRequest()
    count = 0
    for _ in range(draw(st.integers(1, 3))):
        resource_spans = message.resource_spans.add()
        kv = resource_spans.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", draw(st.text(min_size=1, max_size=10))
        for _ in range(draw(st.integers(1, 3))):
            span = resource_spans.scope_spans.add().spans.add()
            span.trace_id, span.span_id = draw(ids), draw(span_ids)
            span.name = draw(st.text(min_size=1, max_size=30))
            span.start_time_unix_nano = draw(st.integers(1, 2**62))
            span.end_time_unix_nano = span.start_time_unix_nano + draw(st.integers(0, 2**40))
            for i in range(draw(st.sampled_from([0, 1, 5, 300, 3000]))):
                span.events.add().name = f"e{i}"
            for i in range(draw(st.sampled_from([0, 2, 200]))):
                link = span.links.add()
                link.trace_id, link.span_id = span.trace_id, (i + 1).to_bytes(8, "big")
            for i, value in enumerate(draw(st.lists(numbers | st.text(max_size=50) | st.booleans(),
                                                    max_size=draw(st.sampled_from([3, 200]))))):
                attribute = span.attributes.add()
                attribute.key = f"k{i}"
                if isinstance(value, bool):
                    attribute.value.bool_value = value
                elif isinstance(value, int):
                    attribute.value.int_value = value
                elif isinstance(value, float):
                    attribute.value.double_value = value
                else:
                    attribute.value.string_value = value
            count += 1
    return message, count


@st.composite
def mutated(draw, body: bytes) -> bytes:
    data = bytearray(body)
    for _ in range(draw(st.integers(1, 8))):
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            data[at] ^= draw(st.integers(1, 255))
        elif action == "delete":
            del data[at:at + draw(st.integers(1, 8))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[at:]
    return bytes(data)


json_trees = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                          | st.dictionaries(st.sampled_from(["resourceSpans", "scopeSpans", "spans", "events",
                                                             "links", "attributes", "traceId", "spanId", "name",
                                                             "startTimeUnixNano", "value", "key", "x"]),
                                            children, max_size=4), max_leaves=30)


def otlp_json(message: ExportTraceServiceRequest) -> dict:
    """The OTLP JSON form of ``message`` (hex ids, as OTLP/HTTP JSON exporters send them)."""
    from google.protobuf import json_format

    payload = json_format.MessageToDict(message)
    for resource_spans in payload.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                for holder in [span, *span.get("links", [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in holder:
                            holder[key] = base64.b64decode(holder[key]).hex()
    return payload


def wrong_type_at(draw, payload):
    """``payload`` with one node, anywhere, replaced by a value of another type."""
    nodes = [(None, None)]

    def walk(node):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            nodes.append((node, key))
            walk(child)

    walk(payload)
    parent, key = draw(st.sampled_from(nodes))
    replacement = draw(scalars | st.just([]) | st.just({}) | st.just([[[[1]]]]))
    if parent is None:
        return replacement
    parent[key] = replacement
    return payload


def post(client, body, content_type):
    tracemalloc.start()
    try:
        response = client.post("/v1/traces", data=body, content_type=content_type)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code in ALLOWED, (response.status_code, response.get_data(as_text=True)[:300])
    if response.status_code >= 400:
        assert set(response.get_json()["error"]) >= {"code", "message"}
    assert peak < HEAP_BOUND, f"one request allocated {peak} bytes"
    return response


def new_spans(redis_url, stream, since):
    client = redis.Redis.from_url(redis_url)
    try:
        entries = client.xrange(stream, min=f"({since}" if since else "-")
    finally:
        client.close()
    spans = [span for _id, fields in entries for span in decode_entry(fields).spans]
    return spans, (entries[-1][0].decode() if entries else since)


@pytest.fixture
def fuzz_client(sqlite_url, redis_url):
    """The receiver never touches the database: one backend is enough."""
    from web import create_app

    app = create_app({"DATABASE_URL": sqlite_url, "REDIS_URL": redis_url, "TESTING": True,
                      "MAX_BODY_BYTES": MAX_BODY, "STREAM": "contrail:spans"})
    yield app.test_client()
    app.extensions["contrail.resources"].close()


@given(body=st.binary(max_size=4096))
def test_random_bytes_never_500(fuzz_client, body):
    post(fuzz_client, body, "application/x-protobuf")
    post(fuzz_client, body, "application/json")


@given(data=st.data())
def test_mutated_valid_protobuf_never_500(fuzz_client, data):
    message, _ = data.draw(valid_requests())
    post(fuzz_client, data.draw(mutated(message.SerializeToString())), "application/x-protobuf")


@given(case=valid_requests())
def test_valid_protobuf_lands_whole_and_within_the_limits(fuzz_client, redis_url, case):
    message, count = case
    body = message.SerializeToString()
    if len(body) > MAX_BODY:
        return
    _, since = new_spans(redis_url, "contrail:spans", None)
    response = post(fuzz_client, body, "application/x-protobuf")
    assert response.status_code == 200
    spans, _ = new_spans(redis_url, "contrail:spans", since)
    assert len(spans) == count
    for span in spans:
        assert len(span["events"]) <= LIMIT and len(span["links"]) <= LIMIT
        assert len(span["attributes"]) <= LIMIT + 4  # + the contrail.dropped.* counts


@given(case=valid_requests())
def test_valid_json_lands_whole(fuzz_client, redis_url, case):
    message, count = case
    body = json.dumps(otlp_json(message))
    if len(body) > MAX_BODY:
        return
    _, since = new_spans(redis_url, "contrail:spans", None)
    assert post(fuzz_client, body, "application/json").status_code == 200
    spans, _ = new_spans(redis_url, "contrail:spans", since)
    assert len(spans) == count


@given(tree=json_trees)
def test_random_json_trees_never_500(fuzz_client, tree):
    post(fuzz_client, json.dumps(tree), "application/json")
    post(fuzz_client, json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [tree]}]}]}), "application/json")


@given(data=st.data())
def test_wrong_type_anywhere_in_otlp_json_never_500(fuzz_client, data):
    message, _ = data.draw(valid_requests())
    payload = wrong_type_at(data.draw, otlp_json(message))
    post(fuzz_client, json.dumps(payload), "application/json")


@given(depth=st.integers(1, 200_000), opener=st.sampled_from(["[", '{"a":', '{"resourceSpans":[{"scopeSpans":']))
def test_deep_nesting_never_500(fuzz_client, depth, opener):
    closer = {"[": "]", '{"a":': "}", '{"resourceSpans":[{"scopeSpans":': "}]}"}[opener]
    post(fuzz_client, opener * depth + "1" + closer * depth, "application/json")


@pytest.fixture
def fuzz_server(gunicorn_web):
    return gunicorn_web("--workers", "1", CONTRAIL_MAX_BODY_BYTES=str(MAX_BODY))[0]


@settings(max_examples=15)
@given(data=st.data())
def test_real_gunicorn_server_never_500(fuzz_server, redis_url, tmp_path, data):
    """A short run of the same kinds of bodies through gunicorn; after each, a valid body still lands."""
    message, count = data.draw(valid_requests())
    body = message.SerializeToString()
    for payload, content_type in ((data.draw(mutated(body)), "application/x-protobuf"),
                                  (json.dumps(data.draw(json_trees)), "application/json")):
        response = requests.post(fuzz_server + "/v1/traces", data=payload, timeout=30,
                                 headers={"Content-Type": content_type})
        assert response.status_code in ALLOWED, response.text[:300]
    if len(body) <= MAX_BODY:
        stream = f"contrail:web:{tmp_path.name}"
        _, since = new_spans(redis_url, stream, None)
        response = requests.post(fuzz_server + "/v1/traces", data=body, timeout=30,
                                 headers={"Content-Type": "application/x-protobuf"})
        assert response.status_code == 200
        assert len(new_spans(redis_url, stream, since)[0]) == count
