"""The AI endpoints over a real database filled through the collector's write path."""

from __future__ import annotations

import time

import pytest

from collector_worker import pricing, stats
from tests.ai.pipeline import finalize, ingest
from tests.ai.test_usage import expected_cost, run_agent
from web.settings import WebSettings


def test_agent_traces_endpoint(stack):
    engine, client, agent = stack
    run_agent(agent.manager, "u1", "s1")
    time.sleep(0.002)
    run_agent(agent.manager, "u2", "s2", fail_tool=True)
    ingest(engine, agent.take_codec_spans())
    assert finalize(engine) == 2

    body = client.get("/api/v1/ai/traces").get_json()
    assert body["count"] == 2
    assert [t["user_id"] for t in body["traces"]] == ["u2", "u1"]  # newest first

    response = client.get("/api/v1/ai/traces?user_id=u1")
    assert response.status_code == 200
    (trace,) = response.get_json()["traces"]
    assert trace["agent"] == "research-agent" and trace["session_id"] == "s1" and trace["success"] is True
    assert len(trace["trace_id"]) == 32 and trace["start_time"].endswith("Z") and trace["duration_ms"] > 0
    assert [p["name"] for p in trace["phases"]] == ["planning"] and trace["phases"][0]["error"] is False
    assert trace["tool_calls"][0]["name"] == "memo_search" and trace["tool_calls"][0]["success"] is True
    models = [c["model"] for c in trace["llm_calls"]]
    assert models == ["gpt-4o-mini", "gpt-4o"]
    synthesis = trace["llm_calls"][1]
    assert synthesis["purpose"] == "synthesis" and synthesis["provider"] == "openai"
    assert (synthesis["input_tokens"], synthesis["output_tokens"], synthesis["cache_read_tokens"]) == (812, 164, 512)
    assert synthesis["cache_hit"] is True
    mini, big = expected_cost()
    assert synthesis["cost"] == pytest.approx(big, abs=1e-6)
    assert trace["totals"] == {"input_tokens": 1012, "output_tokens": 214, "cache_read_tokens": 512,
                               "cost": pytest.approx(mini + big, abs=1e-6), "llm_calls": 2, "tool_calls": 1,
                               "failed_tool_calls": 0}

    (failed,) = client.get("/api/v1/ai/traces?session_id=s2&agent=research-agent").get_json()["traces"]
    assert failed["user_id"] == "u2"
    assert failed["tool_calls"][0]["success"] is False
    assert failed["totals"]["failed_tool_calls"] == 1
    assert client.get("/api/v1/ai/traces?user_id=u1&session_id=s2").get_json()["traces"] == []
    assert client.get("/api/v1/ai/traces?limit=1").get_json()["count"] == 1


def test_usage_endpoint(stack):
    engine, client, agent = stack
    run_agent(agent.manager, "u1", "s1")
    run_agent(agent.manager, "u2", "s2")
    ingest(engine, agent.take_codec_spans())
    body = client.get("/api/v1/ai/usage?group_by=user&lookback=1h&step=5m").get_json()
    assert body["group_by"] == "user" and body["step_s"] == 300
    assert {g["key"] for g in body["groups"]} == {"u1", "u2"}
    assert body["totals"]["calls"] == 4 and body["totals"]["output_tokens"] == 2 * 214
    mini, big = expected_cost()
    assert body["totals"]["cost"] == pytest.approx(2 * (mini + big), abs=1e-6)
    by_model = client.get("/api/v1/ai/usage").get_json()
    assert by_model["group_by"] == "model" and by_model["price_source"] == "example"
    assert {g["key"] for g in by_model["groups"]} == {"gpt-4o", "gpt-4o-mini"}


@pytest.mark.parametrize("url,parameter", [
    ("/api/v1/ai/traces?limit=0", "limit"),
    ("/api/v1/ai/traces?limit=abc", "limit"),
    ("/api/v1/ai/traces?user_id=%01", "user_id"),
    ("/api/v1/ai/traces?agent=" + "x" * 300, "agent"),
    ("/api/v1/ai/traces?lookback=soon", "lookback"),
    ("/api/v1/ai/usage?group_by=colour", "group_by"),
    ("/api/v1/ai/usage?step=90s", "step"),
    ("/api/v1/ai/usage?step=1m&lookback=3650d", "step"),
    ("/api/v1/ai/usage?lookback=-5m", "lookback"),
    ("/api/v1/ai/bottlenecks?recent=10s", "recent"),
    ("/api/v1/ai/bottlenecks?baseline=99d", "baseline"),
    ("/api/v1/ai/bottlenecks?limit=-1", "limit"),
    ("/api/v1/ai/bottlenecks?at=yesterday", "at"),
])
def test_bad_parameters_are_400_naming_the_parameter(stack, url, parameter):
    _, client, _ = stack
    response = client.get(url)
    assert response.status_code == 400, response.data
    error = response.get_json()["error"]
    assert error["code"] == "bad_parameter" and error["parameter"] == parameter


def test_broken_price_table_is_a_clear_error(stack, tmp_path, database_url, data_dir):
    bad = tmp_path / "prices.json"
    bad.write_text("{not json")
    from web import create_app

    app = create_app(settings=WebSettings.load(env={}, database_url=database_url, data_dir=str(data_dir),
                                               price_table=str(bad)))
    response = app.test_client().get("/api/v1/ai/usage")
    assert response.status_code == 503
    assert "price table" in response.get_json()["error"]["message"]
    pricing.set_price_table(None)


def _stat_span(service, operation, start_ns, duration_ms, error=False):
    return {"service": service, "name": operation, "start_ns": start_ns,
            "end_ns": start_ns + int(duration_ms * 1e6), "status_code": "error" if error else "unset"}


def test_bottlenecks_endpoint_flags_departures_from_baseline(stack):
    engine, client, _ = stack
    now = (time.time_ns() // 60_000_000_000) * 60_000_000_000
    minute = 60_000_000_000
    spans = []
    for m in range(60, 600):  # baseline: the ten hours before the recent window
        t = now - (15 + m) * minute
        spans += [_stat_span("api", "GET /slow", t, 10 + (i % 3)) for i in range(2)]
        spans += [_stat_span("api", "GET /steady", t, 20) for _ in range(2)]
        spans += [_stat_span("db", "INSERT", t, 3, error=(m % 50 == 0)) for _ in range(2)]
    for m in range(1, 15):  # recent window: GET /slow degrades and keeps getting worse; INSERT fails often
        t = now - m * minute + 1
        late = m < 7
        spans += [_stat_span("api", "GET /slow", t, 90 if late else 40) for _ in range(4)]
        spans += [_stat_span("api", "GET /steady", t, 20) for _ in range(4)]
        spans += [_stat_span("db", "INSERT", t, 3, error=(i < 2)) for i in range(4)]
    with engine.begin() as conn:
        stats.record_spans(conn, spans, scope="span")

    body = client.get(f"/api/v1/ai/bottlenecks?recent=15m&baseline=12h&at={now + minute}").get_json()
    hints = {(h["service"], h["operation"]): h for h in body["bottlenecks"]}
    assert set(hints) == {("api", "GET /slow"), ("db", "INSERT")}
    slow = hints[("api", "GET /slow")]
    assert slow["flag"] == "slower" and slow["trend"] == "rising"
    assert slow["baseline_p95_ms"] == pytest.approx(11, rel=0.02)
    assert slow["recent_p95_ms"] == pytest.approx(90, rel=0.02)
    assert slow["p95_ratio"] > 5
    insert = hints[("db", "INSERT")]
    assert insert["flag"] == "more_errors" and insert["recent_error_rate"] == 0.5
    assert insert["baseline_error_rate"] < 0.05
    assert body["bottlenecks"][0]["operation"] == "GET /slow"
