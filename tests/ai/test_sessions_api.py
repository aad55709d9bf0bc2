"""AI sessions, users and the LLM call viewer API over a real database filled through the collector's write path."""

from __future__ import annotations

import time

import pytest

from collector_worker import pricing
from tests.ai.pipeline import CapturingManager, finalize, ingest
from tests.ai.test_usage import expected_cost, run_agent


def _runs(engine, agent, plan):
    """Agent runs for (user, session, fail_tool) in order, stored and finalized; their trace ids in order."""
    for user, session, fail in plan:
        run_agent(agent.manager, user, session, fail_tool=fail)
        time.sleep(0.002)  # distinct start times: the order is the point
    spans = agent.take_codec_spans()
    ingest(engine, spans)
    assert finalize(engine) == len(plan)
    roots = sorted((s for s in spans if s["parent_span_id"] is None), key=lambda s: s["start_ns"])
    return [s["trace_id"] for s in roots]


def _error(response, status, parameter=None):
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    if parameter:
        assert error["parameter"] == parameter
    return error["message"]


def test_session_lists_its_runs_in_order_with_totals_and_pages(stack):
    engine, client, agent = stack
    ids = _runs(engine, agent, [("u1", "s1", False), ("u2", "s2", False), ("u1", "s1", True), ("u1", "s1", False)])
    s1 = [ids[0], ids[2], ids[3]]

    body = client.get("/api/v1/ai/sessions/s1").get_json()
    assert [run["trace_id"] for run in body["runs"]] == s1  # oldest first: the order things happened
    assert body["user_ids"] == ["u1"] and body["agents"] == ["research-agent"]
    assert body["total_runs"] == 3 and body["next_cursor"] is None and body["runs_capped"] is False
    assert body["first_ns"] == body["runs"][0]["start_ns"] and body["last_ns"] == body["runs"][-1]["start_ns"]
    failed = body["runs"][1]
    assert failed["tool_calls"][0]["success"] is False
    assert [e["name"] for e in failed["errors"]] == ["execute_tool memo_search"]
    assert "search timed out" in failed["errors"][0]["message"]
    assert [p["name"] for p in body["runs"][0]["phases"]] == ["planning"]
    assert [c["model"] for c in body["runs"][0]["llm_calls"]] == ["gpt-4o-mini", "gpt-4o"]
    mini, big = expected_cost()
    totals = body["totals"]
    assert (totals["runs"], totals["llm_calls"], totals["tool_calls"], totals["failed_tool_calls"]) == (3, 6, 3, 1)
    assert (totals["input_tokens"], totals["output_tokens"]) == (3 * 1012, 3 * 214)
    assert totals["cost"] == pytest.approx(3 * (mini + big), abs=1e-6) and totals["unpriced_models"] == []
    # success of a run is its agent span's status: the failed tool was caught, the run itself succeeded
    assert totals["failed_runs"] == 0 and totals["errors"] == 1

    first = client.get("/api/v1/ai/sessions/s1?limit=2").get_json()
    assert [run["trace_id"] for run in first["runs"]] == s1[:2] and first["next_cursor"]
    assert first["totals"] == totals  # totals cover the session, not the page
    second = client.get(f"/api/v1/ai/sessions/s1?limit=2&cursor={first['next_cursor']}").get_json()
    assert [run["trace_id"] for run in second["runs"]] == s1[2:] and second["next_cursor"] is None

    assert "unknown" not in _error(client.get("/api/v1/ai/sessions/nope"), 404)
    _error(client.get("/api/v1/ai/sessions/s1?limit=0"), 400, "limit")
    _error(client.get("/api/v1/ai/sessions/s1?limit=abc"), 400, "limit")
    _error(client.get("/api/v1/ai/sessions/s1?cursor=garbage"), 400, "cursor")
    _error(client.get("/api/v1/ai/sessions/s1?lookback=-1h"), 400, "lookback")
    _error(client.get("/api/v1/ai/sessions/%20"), 400, "session_id")


def test_sessions_list_newest_first_paged_without_repeats_and_filtered(stack):
    engine, client, agent = stack
    _runs(engine, agent, [("u1", "s1", False), ("u2", "s2", False), ("u1", "s3", False), ("u1", "s1", False)])

    body = client.get("/api/v1/ai/sessions").get_json()
    # ordered by each session's latest run: s1 ran last, then s3, then s2
    assert [s["session_id"] for s in body["sessions"]] == ["s1", "s3", "s2"]
    assert body["next_cursor"] is None
    s1 = body["sessions"][0]
    assert s1["totals"]["runs"] == 2 and s1["user_ids"] == ["u1"] and s1["last_ns"] > s1["first_ns"]

    seen, cursor = [], None
    for _ in range(5):
        page = client.get("/api/v1/ai/sessions", query_string={"limit": 1, **({"cursor": cursor} if cursor else {})})
        page = page.get_json()
        seen += [s["session_id"] for s in page["sessions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["s1", "s3", "s2"]  # every session once, although s1 has a run older than s3's

    only_u1 = client.get("/api/v1/ai/sessions?user_id=u1").get_json()
    assert [s["session_id"] for s in only_u1["sessions"]] == ["s1", "s3"] and only_u1["filters"]["user_id"] == "u1"
    assert client.get("/api/v1/ai/sessions?user_id=nobody").get_json()["sessions"] == []
    _error(client.get("/api/v1/ai/sessions?limit=101"), 400, "limit")
    _error(client.get("/api/v1/ai/sessions?cursor=%%%"), 400, "cursor")


def test_users_list_and_one_users_usage_over_time(stack):
    engine, client, agent = stack
    _runs(engine, agent, [("u1", "s1", False), ("u1", "s1", False), ("u2", "s2", False)])
    mini, big = expected_cost()

    body = client.get("/api/v1/ai/users").get_json()
    assert [u["user_id"] for u in body["users"]] == ["u1", "u2"]  # most expensive first
    assert body["users"][0]["calls"] == 4 and body["users"][0]["cost"] == pytest.approx(2 * (mini + big), abs=1e-6)
    assert body["users"][0]["last_active"].endswith("Z") and (body["total"], body["pages"]) == (2, 1)
    second = client.get("/api/v1/ai/users?limit=1&page=2").get_json()
    assert [u["user_id"] for u in second["users"]] == ["u2"] and second["pages"] == 2
    assert client.get("/api/v1/ai/users?limit=1&page=3").get_json()["users"] == []
    _error(client.get("/api/v1/ai/users?page=0"), 400, "page")
    _error(client.get("/api/v1/ai/users?limit=x"), 400, "limit")

    u1 = client.get("/api/v1/ai/users/u1?lookback=1h&step=5m").get_json()
    assert u1["totals"]["calls"] == 4 and u1["traces"] == 2 and u1["step_s"] == 300
    assert {m["key"] for m in u1["models"]} == {"gpt-4o", "gpt-4o-mini"}
    assert sum(p["calls"] for s in u1["series"] for p in s["points"]) == 4
    assert u1["totals"]["cost"] == pytest.approx(2 * (mini + big), abs=1e-6) and u1["unpriced_models"] == []
    _error(client.get("/api/v1/ai/users/nobody"), 404)
    _error(client.get("/api/v1/ai/users/u1?step=90s"), 400, "step")


def test_llm_call_viewer_shows_recorded_content_redacted_and_marks_unrecorded(stack, redis_url, data_dir):
    engine, client, plain = stack
    recording = CapturingManager("agent-svc", redis_url, data_dir, record_content=True)
    try:
        prompt = [{"role": "system", "content": "You plan trips."},
                  {"role": "user", "content": "Weather in Paris? Mail ana@example.com, password=hunter2"}]
        with recording.manager.agent_run("travel", user_id="u1", session_id="s1"):
            with recording.manager.llm_call(model="gpt-4o", provider="openai", prompt=prompt, temperature=0.2,
                                            max_tokens=64) as llm:
                llm.record_usage(input_tokens=40, output_tokens=12)
                llm.set_response("Let me look that up.", tool_calls=[
                    {"id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}])
        with plain.manager.llm_call(model="house-model", prompt=prompt) as llm:
            llm.record_usage(input_tokens=5, output_tokens=1)
            llm.set_response("secret answer")
        spans = recording.take_codec_spans() + plain.take_codec_spans()
    finally:
        recording.close()
    ingest(engine, spans)
    recorded = next(s for s in spans if s["name"] == "chat gpt-4o")
    unrecorded = next(s for s in spans if s["name"] == "chat house-model")
    agent_span = next(s for s in spans if s["name"] == "invoke_agent travel")

    view = client.get(f"/api/v1/ai/llm-calls/{recorded['trace_id']}/{recorded['span_id']}").get_json()
    assert view["content"]["recorded"] is True and view["content"]["truncated"] is False
    assert [m["role"] for m in view["input_messages"]] == ["system", "user"]
    user_text = view["input_messages"][1]["parts"][0]["content"]
    assert "[EMAIL]" in user_text and "password=[REDACTED]" in user_text and "hunter2" not in user_text
    assert view["output_messages"][0]["parts"][0] == {"type": "text", "content": "Let me look that up."}
    assert view["tool_calls"] == [{"id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}]
    assert view["parameters"] == {"max_tokens": 64, "temperature": 0.2}
    assert view["usage"] == {"input_tokens": 40, "output_tokens": 12, "cache_read_tokens": 0, "total_tokens": 52}
    gpt4o = pricing.EXAMPLE_PRICES["gpt-4o"]
    assert view["cost"] == pytest.approx((40 * gpt4o["input"] + 12 * gpt4o["output"]) / 1000) and view["priced"]
    assert (view["user_id"], view["session_id"], view["agent"]) == ("u1", "s1", "travel")
    assert view["duration_ms"] >= 0 and view["model"] == "gpt-4o" and view["provider"] == "openai"

    hidden = client.get(f"/api/v1/ai/llm-calls/{unrecorded['trace_id']}/{unrecorded['span_id']}").get_json()
    assert hidden["content"]["recorded"] is False and "record_content" in hidden["content"]["note"]
    assert hidden["input_messages"] is None and hidden["output_messages"] is None and hidden["tool_calls"] == []
    assert hidden["priced"] is False and "CONTRAIL_PRICE_TABLE" in hidden["price_hint"]

    trace_id = recorded["trace_id"]
    _error(client.get(f"/api/v1/ai/llm-calls/{trace_id}/{agent_span['span_id']}"), 404)  # not an LLM call
    _error(client.get(f"/api/v1/ai/llm-calls/{trace_id}/{'1' * 16}"), 404)
    _error(client.get(f"/api/v1/ai/llm-calls/{'2' * 32}/{'1' * 16}"), 404)
    _error(client.get(f"/api/v1/ai/llm-calls/xyz/{'1' * 16}"), 400, "trace_id")
    _error(client.get(f"/api/v1/ai/llm-calls/{trace_id}/short"), 400, "span_id")


def test_ai_session_routes_are_documented_conform_and_never_fail_on_fuzzed_parameters(stack, database_url):
    import re
    import urllib.parse

    from hypothesis import HealthCheck, given, settings, strategies as st

    from tests.web.test_openapi import SPEC, VALUES, check_conforms

    engine, client, agent = stack
    recording = CapturingManager("agent-svc", agent.manager.settings.redis_url, agent.manager.settings.data_dir,
                                 record_content=True)
    try:
        with recording.manager.agent_run("a", user_id="u1", session_id="s1"):
            with recording.manager.llm_call(model="gpt-4o", prompt="hi") as llm:
                llm.record_usage(input_tokens=3, output_tokens=1)
                llm.set_response("yo", tool_calls=[{"name": "t", "arguments": {"x": 1}}])
        spans = recording.take_codec_spans()
    finally:
        recording.close()
    ingest(engine, spans)
    assert finalize(engine) == 1
    llm_span = next(s for s in spans if s["name"] == "chat gpt-4o")
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint.startswith("ai_sessions."):
            template = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            assert template in SPEC["paths"], f"route {rule.rule} is missing from the OpenAPI document"
    call = f"/api/v1/ai/llm-calls/{llm_span['trace_id']}/{llm_span['span_id']}"
    for path in ("/api/v1/ai/sessions", "/api/v1/ai/sessions?user_id=u1&limit=1", "/api/v1/ai/sessions/s1",
                 "/api/v1/ai/sessions/s1?limit=1", "/api/v1/ai/sessions/none", "/api/v1/ai/sessions?cursor=x",
                 "/api/v1/ai/users", "/api/v1/ai/users?page=0", "/api/v1/ai/users/u1", "/api/v1/ai/users/none",
                 call, f"/api/v1/ai/llm-calls/{llm_span['trace_id']}/{'0' * 15}1", "/api/v1/ai/llm-calls/x/y"):
        check_conforms(path, client.get(path))
    if "sqlite" not in database_url:
        return  # the fuzz is about parsing: one backend is enough

    routes = {"/api/v1/ai/sessions": ["user_id", "agent", "limit", "cursor", "start", "end", "lookback"],
              "/api/v1/ai/sessions/s1": ["limit", "cursor", "start", "end", "lookback"],
              "/api/v1/ai/users": ["page", "limit", "start", "end", "lookback"],
              "/api/v1/ai/users/u1": ["step", "start", "end", "lookback"], call: []}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(route=st.sampled_from(sorted(routes)), picks=st.data())
    def run(route, picks):
        names = picks.draw(st.lists(st.sampled_from(routes[route] or ["unused"]), max_size=4))
        query = [(name, picks.draw(VALUES)) for name in names]
        url = route + ("?" + urllib.parse.urlencode(query) if query else "")
        response = client.get(url)
        assert response.status_code < 500, (url, response.get_data(as_text=True)[:300])
        check_conforms(url, response)

    run()
