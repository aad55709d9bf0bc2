"""One trace, its timeline, exports, backlinks, comparisons; services; statistics; dependencies."""

from __future__ import annotations


import pytest

from tests.web.seed import new_trace_id, span, store


def test_trace_has_contract_shape_with_assembly(client, dataset):
    t, sp = dataset.ids, dataset.spans
    body = client.get(f"/api/v1/traces/{t['ask_slow']}").get_json()
    assert body["trace_id"] == t["ask_slow"] and body["summary"]["trace_id"] == t["ask_slow"]
    spans = body["spans"]
    assert [s["span_id"] for s in spans] == [sp["root"]["span_id"], sp["search"]["span_id"], sp["chat"]["span_id"]]
    root, search, chat = spans
    assert root["parent_span_id"] is None and root["depth"] == 0 and search["depth"] == 1
    assert search["parent_span_id"] == root["span_id"]
    assert root["kind"] == "server" and root["status"] == "error" and root["status_message"] == "upstream failed"
    assert root["attributes"]["user.id"] == "u1" and root["resource"]["service.name"] == "gateway"
    assert root["duration_ms"] == pytest.approx(800.0)
    assert root["self_time_ms"] == pytest.approx(800 - 200 - 500)
    assert chat["critical_path"] is True and root["critical_path"] is True
    assert chat["events"][0]["name"] == "exception" and chat["events"][0]["time"].endswith("Z")
    assert chat["events"][0]["attributes"]["exception.type"] == "RateLimit"
    assert body["warnings"] == []


def test_incomplete_trace_warns_about_the_missing_parent(client, dataset):
    body = client.get(f"/api/v1/traces/{dataset.ids['orphan']}").get_json()
    assert body["summary"]["incomplete"] is True
    assert [w["code"] for w in body["warnings"]] == ["missing_parent"]
    assert body["warnings"][0]["span_id"] == dataset.spans["orphan"]["span_id"]


def test_trace_not_finalized_yet_is_assembled_on_the_fly(client, database_url):
    trace_id, base = new_trace_id(), 1_700_000_000 * 10**9
    root = span(trace_id, "root", start_ns=base, duration_ms=100)
    child = span(trace_id, "child", "other", start_ns=base + 10**7, duration_ms=60, parent=root["span_id"])
    store(database_url, [root, child], finalize=False)
    body = client.get(f"/api/v1/traces/{trace_id}").get_json()
    assert body["summary"]["span_count"] == 2 and body["summary"]["services"] == ["gateway", "other"]
    by_name = {s["name"]: s for s in body["spans"]}
    assert by_name["child"]["depth"] == 1 and by_name["root"]["self_time_ms"] == pytest.approx(40.0)
    assert by_name["child"]["critical_path"] is True
    assert client.get("/api/v1/traces").get_json()["total"] == 0  # search only sees finalized traces


def test_uppercase_id_is_accepted(client, dataset):
    response = client.get(f"/api/v1/traces/{dataset.ids['health'].upper()}")
    assert response.status_code == 200 and response.get_json()["trace_id"] == dataset.ids["health"]


@pytest.mark.parametrize("suffix", ["", "/timeline", "/export", "/backlinks"])
def test_trace_routes_400_on_malformed_and_404_on_unknown(client, dataset, suffix):
    for bad in ("xyz", "0" * 32, "a" * 31, "g" * 32):
        response = client.get(f"/api/v1/traces/{bad}{suffix}")
        assert response.status_code == 400, bad
        assert response.get_json()["error"]["parameter"] == "trace_id"
    response = client.get(f"/api/v1/traces/{new_trace_id()}{suffix}")
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "not_found"


def test_timeline_orders_starts_checkpoints_errors_and_ends(client, dataset):
    body = client.get(f"/api/v1/traces/{dataset.ids['ask_slow']}/timeline").get_json()
    events = body["events"]
    times = [e["time_ns"] for e in events]
    assert times == sorted(times)
    kinds = [(e["type"], e["name"]) for e in events]
    assert kinds[0] == ("span_start", "POST /ask") and kinds[-1] == ("span_end", "POST /ask")
    assert ("event", "search") in kinds and ("error", "chat") in kinds
    assert all(e["time"].endswith("Z") for e in events)
    assert events[0]["offset_ms"] == 0


@pytest.mark.parametrize("fmt, mimetype, ext", [("json", "application/json", "json"),
                                                 ("otlp", "application/json", "otlp.json"),
                                                 ("mermaid", "text/vnd.mermaid", "mmd"),
                                                 ("text", "text/plain", "txt")])
def test_export_formats_as_attachments(client, dataset, fmt, mimetype, ext):
    trace_id = dataset.ids["ask_slow"]
    response = client.get(f"/api/v1/traces/{trace_id}/export?format={fmt}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["Content-Disposition"] == f'attachment; filename="trace-{trace_id}.{ext}"'
    body = response.get_data(as_text=True)
    assert body and ("chat" in body or fmt == "otlp")


def test_export_rejects_unknown_format_and_bad_budget(client, dataset):
    trace_id = dataset.ids["ask_slow"]
    for query, parameter in (("format=pdf", "format"), ("format=text&budget=0", "budget"),
                             ("format=text&budget=x", "budget"), ("budget_unit=words", "budget_unit"),
                             ("format=mermaid&diagram=gantt", "diagram")):
        response = client.get(f"/api/v1/traces/{trace_id}/export?{query}")
        assert response.status_code == 400 and response.get_json()["error"]["parameter"] == parameter
    small = client.get(f"/api/v1/traces/{trace_id}/export?format=text&budget=200").get_data(as_text=True)
    assert 0 < len(small) <= 200


def test_export_mermaid_flowchart_of_the_span_tree(client, dataset):
    trace_id = dataset.ids["ask_slow"]
    response = client.get(f"/api/v1/traces/{trace_id}/export?format=mermaid&diagram=flowchart")
    assert response.status_code == 200 and response.mimetype == "text/vnd.mermaid"
    body = response.get_data(as_text=True)
    assert body.startswith("flowchart TD\n") and "POST /ask - gateway" in body
    sequence = client.get(f"/api/v1/traces/{trace_id}/export?format=mermaid").get_data(as_text=True)
    assert sequence.startswith("sequenceDiagram")


def test_backlinks_find_the_linking_trace(client, dataset):
    body = client.get(f"/api/v1/traces/{dataset.ids['ask_slow']}/backlinks").get_json()
    assert [(b["trace_id"], b["linked_span_id"]) for b in body["linked_from"]] == [
        (dataset.ids["invoice"], dataset.spans["root"]["span_id"])]
    assert client.get(f"/api/v1/traces/{dataset.ids['health']}/backlinks").get_json()["linked_from"] == []


def test_compare_two_traces_of_the_same_flow(client, dataset):
    t = dataset.ids
    body = client.get(f"/api/v1/traces/compare?a={t['ask_slow']}&b={t['ask_fast']}").get_json()
    assert body["same_root"] is True
    assert body["duration_delta_ms"] == pytest.approx(300 - 800)
    ops = {(o["service"], o["name"]): o for o in body["operations"]}
    assert ops[("llm", "chat")]["presence"] == "only_a"
    assert ops[("retrieval", "rerank")]["presence"] == "only_b"
    assert ops[("retrieval", "search")]["delta_ms"] == pytest.approx(100 - 200)
    assert [o["name"] for o in body["structure"]["only_in_a"]] == ["chat"]
    assert body["operations"][0]["name"] == "chat"  # the largest self-time change comes first


@pytest.mark.parametrize("query, parameter, status", [
    ("", "a", 400), ("a={a}", "b", 400), ("a=nope&b={a}", "a", 400), ("a={a}&b=nope", "b", 400),
    ("a={a}&b={unknown}", None, 404),
])
def test_compare_errors(client, dataset, query, parameter, status):
    query = query.format(a=dataset.ids["health"], unknown=new_trace_id())
    response = client.get(f"/api/v1/traces/compare?{query}")
    assert response.status_code == status
    assert response.get_json()["error"].get("parameter") == parameter


def test_services_and_operations(client, dataset):
    services = {s["name"]: s for s in client.get("/api/v1/services").get_json()["services"]}
    assert set(services) == {"gateway", "retrieval", "llm", "billing", "worker"}
    assert services["gateway"]["operation_count"] == 2 and services["retrieval"]["trace_count"] == 2
    body = client.get("/api/v1/services/retrieval/operations").get_json()
    assert body["service"] == "retrieval"
    assert {o["name"]: o["count"] for o in body["operations"]} == {"search": 2, "rerank": 1}
    llm = client.get("/api/v1/services/llm/operations").get_json()["operations"]
    assert llm == [{"name": "chat", "count": 1, "error_count": 1}]
    assert client.get("/api/v1/services/nobody/operations").status_code == 404


def test_stats_per_operation(client, dataset):
    body = client.get("/api/v1/stats?lookback=1h&service=gateway").get_json()
    assert body["step_s"] == 60 and body["scope"] == "span"
    ops = {o["operation"]: o for o in body["operations"]}
    assert set(ops) == {"POST /ask", "GET /health"}
    assert ops["POST /ask"]["count"] == 2 and ops["POST /ask"]["error_count"] == 1
    assert ops["POST /ask"]["p99_ms"] >= ops["POST /ask"]["p50_ms"] > 0
    assert body["series"]
    only = client.get("/api/v1/stats?lookback=1h&service=gateway&operation=GET%20/health&step=5m").get_json()
    assert [o["operation"] for o in only["operations"]] == ["GET /health"] and only["step_s"] == 300


@pytest.mark.parametrize("query, parameter", [
    ("step=30s", "step"), ("step=90s", "step"), ("step=soon", "step"), ("lookback=7d&step=60s", "step"),
    ("scope=all", "scope"), ("lookback=-1h", "lookback"), ("start=x", "start"), ("service=%01", "service"),
])
def test_stats_bad_parameters(client, query, parameter):
    response = client.get(f"/api/v1/stats?{query}")
    assert response.status_code == 400 and response.get_json()["error"]["parameter"] == parameter


def test_dependencies_edges(client, dataset):
    body = client.get("/api/v1/dependencies?lookback=1h").get_json()
    calls, errors = {}, {}
    for edge in body["dependencies"]:  # one edge per (caller, callee, kind)
        key = (edge["caller"], edge["callee"])
        calls[key] = calls.get(key, 0) + edge["calls"]
        errors[key] = errors.get(key, 0) + edge["errors"]
    assert calls == {("gateway", "retrieval"): 3, ("gateway", "llm"): 1}
    assert errors == {("gateway", "retrieval"): 0, ("gateway", "llm"): 1}
    assert client.get("/api/v1/dependencies?lookback=1s&end=1000").get_json()["dependencies"] == []
    assert client.get("/api/v1/dependencies?lookback=abc").get_json()["error"]["parameter"] == "lookback"


def test_unknown_routes_and_methods_are_json(client):
    for response, status in ((client.get("/api/v1/nothing"), 404), (client.post("/api/v1/traces"), 405),
                             (client.delete("/api/v1/services"), 405), (client.get("/v1/traces"), 405)):
        assert response.status_code == status and response.is_json
        assert response.get_json()["error"]["message"]


@pytest.mark.parametrize("finalize", [True, False])
def test_a_trace_bigger_than_a_page_is_answered_in_bounded_pages(finalize, client, database_url):
    """Any stored trace is answered in pages: truncated, the total, and offsets that return the rest."""
    trace_id, base = new_trace_id(), 1_700_000_000 * 10**9
    root = span(trace_id, "root", start_ns=base, duration_ms=100)
    children = [span(trace_id, f"step-{i}", start_ns=base + (i + 1) * 1000, duration_ms=1, parent=root["span_id"])
                for i in range(24)]
    store(database_url, [root, *children], finalize=finalize)
    whole = client.get(f"/api/v1/traces/{trace_id}").get_json()
    assert (whole["truncated"], whole["total_spans"], whole["next_offset"], len(whole["spans"])) == (False, 25, None, 25)
    seen, offset, pages = [], 0, 0
    while offset is not None:
        body = client.get(f"/api/v1/traces/{trace_id}?limit=10&offset={offset}").get_json()
        assert body["truncated"] is True and body["total_spans"] == 25 and len(body["spans"]) <= 10
        assert "truncated" in [w["code"] for w in body["warnings"]]
        assert body["summary"]["span_count"] == 25
        seen += [s["span_id"] for s in body["spans"]]
        offset, pages = body["next_offset"], pages + 1
    assert pages == 3 and seen == [s["span_id"] for s in whole["spans"]]
    assert client.get(f"/api/v1/traces/{trace_id}?limit=10001").status_code == 400
    assert client.get(f"/api/v1/traces/{trace_id}?offset=-1").status_code == 400
