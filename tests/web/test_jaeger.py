"""The Jaeger-compatible query API, checked against Jaeger's query JSON model (what Grafana's Jaeger data source
parses): envelope, traceID/spanID, references, microsecond times, typed tags, logs, processes."""

from __future__ import annotations

import json

import pytest

ENVELOPE = {"data", "total", "limit", "offset", "errors"}
TAG_TYPES = {"string": str, "bool": bool, "int64": int, "float64": float}


def check_span_shape(span: dict, trace: dict) -> None:
    assert set(span) == {"traceID", "spanID", "flags", "operationName", "references", "startTime", "duration",
                         "tags", "logs", "processID", "warnings"}
    assert span["traceID"] == trace["traceID"] and len(span["spanID"]) == 16
    assert isinstance(span["startTime"], int) and isinstance(span["duration"], int)
    assert span["processID"] in trace["processes"]
    for item in span["tags"] + [f for log in span["logs"] for f in log["fields"]]:
        assert set(item) == {"key", "type", "value"} and isinstance(item["value"], TAG_TYPES[item["type"]])
    for ref in span["references"]:
        assert set(ref) == {"refType", "traceID", "spanID"} and ref["refType"] in ("CHILD_OF", "FOLLOWS_FROM")


def test_services_and_operations(client, dataset):
    body = client.get("/jaeger/api/services").get_json()
    assert set(body) == ENVELOPE and body["errors"] is None
    assert set(body["data"]) == {"gateway", "retrieval", "llm", "billing", "worker"} and body["total"] == 5
    body = client.get("/jaeger/api/services/gateway/operations").get_json()
    assert sorted(body["data"]) == ["GET /health", "POST /ask"]
    assert client.get("/jaeger/api/services/nobody/operations").get_json()["data"] == []
    body = client.get("/jaeger/api/operations?service=retrieval").get_json()
    assert {o["name"] for o in body["data"]} == {"search", "rerank"} and all("spanKind" in o for o in body["data"])


def test_one_trace_in_jaegers_model(client, dataset):
    spans = dataset.spans
    trace_id = dataset.ids["ask_slow"]
    body = client.get(f"/jaeger/api/traces/{trace_id}").get_json()
    assert set(body) == ENVELOPE and body["total"] == 1
    trace = body["data"][0]
    assert trace["traceID"] == trace_id and set(trace) == {"traceID", "spans", "processes", "warnings"}
    by_name = {s["operationName"]: s for s in trace["spans"]}
    assert set(by_name) == {"POST /ask", "search", "chat"}
    for span in trace["spans"]:
        check_span_shape(span, trace)
    root, search, chat = by_name["POST /ask"], by_name["search"], by_name["chat"]
    assert root["references"] == []
    assert search["references"] == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": root["spanID"]}]
    assert root["startTime"] == spans["root"]["start_ns"] // 1000 and root["duration"] == 800_000
    tags = {t["key"]: t for t in root["tags"]}
    assert tags["user.id"] == {"key": "user.id", "type": "string", "value": "u1"}
    assert tags["http.status_code"] == {"key": "http.status_code", "type": "int64", "value": 500}
    assert tags["span.kind"]["value"] == "server" and tags["error"] == {"key": "error", "type": "bool", "value": True}
    assert {t["key"]: t["value"] for t in chat["tags"]}["otel.status_description"] == "rate limited"
    log = chat["logs"][0]
    assert log["timestamp"] == spans["chat"]["events"][0]["time_ns"] // 1000
    assert {f["key"]: f["value"] for f in log["fields"]} == {
        "event": "exception", "exception.type": "RateLimit", "exception.message": "rate limited"}
    processes = trace["processes"]
    assert {p["serviceName"] for p in processes.values()} == {"gateway", "retrieval", "llm"}
    assert processes[root["processID"]]["serviceName"] == "gateway"
    assert {"key": "host.name", "type": "string", "value": "test-host"} in processes[root["processID"]]["tags"]


def test_links_are_follows_from(client, dataset):
    trace = client.get(f"/jaeger/api/traces/{dataset.ids['invoice']}").get_json()["data"][0]
    assert trace["spans"][0]["references"] == [{"refType": "FOLLOWS_FROM", "traceID": dataset.ids["ask_slow"],
                                                "spanID": dataset.spans["root"]["span_id"]}]


def test_unknown_and_malformed_trace_ids_answer_in_jaegers_error_shape(client, dataset):
    response = client.get("/jaeger/api/traces/" + "ab" * 16)
    assert response.status_code == 404
    assert response.get_json() == {"data": None, "total": 0, "limit": 0, "offset": 0,
                                   "errors": [{"code": 404, "msg": "trace not found"}]}
    response = client.get("/jaeger/api/traces/not-an-id")
    assert response.status_code == 400 and response.get_json()["errors"][0]["code"] == 400


def test_64_bit_trace_ids_are_left_padded(client, dataset):
    from tests.web.seed import span, store

    base = dataset.base_ns
    short = "00000000000000007e57a1d0c0ffee11"
    store_database = client.application.extensions["contrail.settings"].database_url
    store(store_database, [span(short, "legacy", "zipkin-svc", start_ns=base, duration_ms=3)])
    assert client.get("/jaeger/api/traces/7e57a1d0c0ffee11").get_json()["data"][0]["traceID"] == short


@pytest.mark.parametrize("query, expected", [
    ("service=gateway", {"ask_slow", "health", "ask_fast"}),
    ("service=gateway&operation=POST%20/ask", {"ask_slow", "ask_fast"}),
    ("service=gateway&minDuration=500ms", {"ask_slow"}),
    ("service=gateway&maxDuration=10ms", {"health"}),
    ("service=gateway&tags=" + json.dumps({"user.id": "u1"}), {"ask_slow", "ask_fast"}),
    ("service=gateway&tag=user.id:u2", {"health"}),
    ("service=gateway&tags=" + json.dumps({"error": "true"}), {"ask_slow"}),
    ("service=gateway&limit=1", {"ask_fast"}),
    ("service=billing&lookback=1h", {"invoice"}),
])
def test_search(client, dataset, query, expected):
    body = client.get(f"/jaeger/api/traces?{query}").get_json()
    assert body["errors"] is None and body["total"] == len(expected)
    assert {next(k for k, v in dataset.ids.items() if v == t["traceID"]) for t in body["data"]} == expected
    for trace in body["data"]:
        for span in trace["spans"]:
            check_span_shape(span, trace)


def test_search_time_window_in_microseconds(client, dataset):
    start_us = dataset.base_ns // 1000
    body = client.get(f"/jaeger/api/traces?service=gateway&start={start_us}&end={start_us + 1_500_000}").get_json()
    assert {t["traceID"] for t in body["data"]} == {dataset.ids["ask_slow"], dataset.ids["health"]}
    empty = client.get(f"/jaeger/api/traces?service=gateway&start=1&end=2").get_json()
    assert empty["data"] == [] and empty["total"] == 0


@pytest.mark.parametrize("query, parameter", [
    ("tags=notjson", "tags"), ("tags=[1]", "tags"), ("start=yesterday", "start"), ("minDuration=fast", "minDuration"),
    ("minDuration=2s&maxDuration=1s", "maxDuration"), ("tag=nocolon", "tag"), ("limit=0", "limit"),
])
def test_bad_search_parameters_are_400_with_a_message(client, dataset, query, parameter):
    response = client.get(f"/jaeger/api/traces?{query}")
    assert response.status_code == 400
    assert parameter in response.get_json()["errors"][0]["msg"]


def test_dependencies(client, dataset):
    body = client.get("/jaeger/api/dependencies").get_json()
    assert set(body) == ENVELOPE
    assert {(d["parent"], d["child"]): d["callCount"] for d in body["data"]} == {
        ("gateway", "retrieval"): 3, ("gateway", "llm"): 1}
    assert client.get("/jaeger/api/dependencies?endTs=1000&lookback=1").get_json()["data"] == []


def test_same_auth_as_the_api(make_app, dataset):
    client = make_app(API_TOKEN="api", READ_TOKEN="read", INGEST_TOKEN="ingest").test_client()
    assert client.get("/jaeger/api/services").status_code == 401
    assert client.get("/jaeger/api/services", headers={"Authorization": "Bearer ingest"}).status_code == 403
    response = client.get("/jaeger/api/services", headers={"Authorization": "Bearer read"})
    assert response.status_code == 200 and "gateway" in response.get_json()["data"]
