"""Token and cost aggregation in the collector, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select

from collector_worker import pricing
from collector_worker.llm_usage import query_usage
from collector_worker.storage import open_engine
from collector_worker.storage.schema import llm_usage
from tests.ai.pipeline import CapturingManager, finalize, ingest

GPT4O = pricing.EXAMPLE_PRICES["gpt-4o"]
MINI = pricing.EXAMPLE_PRICES["gpt-4o-mini"]


@pytest.fixture
def engine(database_url):
    engine = open_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture(autouse=True)
def example_prices():
    pricing.set_price_table(None)
    yield
    pricing.set_price_table(None)


@pytest.fixture
def agent(redis_url, data_dir):
    capturing = CapturingManager("agent-svc", redis_url, data_dir)
    yield capturing
    capturing.close()


def run_agent(manager, user, session, fail_tool=False):
    with manager.agent_run("research-agent", user_id=user, session_id=session):
        with manager.phase("planning"):
            with manager.llm_call(model="gpt-4o-mini", provider="openai", purpose="planning") as llm:
                llm.record_usage(input_tokens=200, output_tokens=50)
        try:
            with manager.tool_call("memo_search", input="q") as tool:
                if fail_tool:
                    raise TimeoutError("search timed out")
                tool.set_output("3 memos")
        except TimeoutError:
            pass
        with manager.llm_call(model="gpt-4o", provider="openai", purpose="synthesis") as llm:
            llm.record_usage(input_tokens=812, output_tokens=164, cache_hit=True, cache_read_tokens=512)


def expected_cost():
    mini = (200 * MINI["input"] + 50 * MINI["output"]) / 1000
    big = (300 * GPT4O["input"] + 512 * GPT4O["cached_input"] + 164 * GPT4O["output"]) / 1000
    return mini, big


def sums(engine, resolution, *group):
    c = llm_usage.c
    with engine.connect() as conn:
        rows = conn.execute(select(*[getattr(c, g) for g in group], func.sum(c.calls), func.sum(c.input_tokens),
                                   func.sum(c.output_tokens), func.sum(c.cache_read_tokens), func.sum(c.cost),
                                   func.sum(c.errors))
                            .where(c.resolution == resolution).group_by(*[getattr(c, g) for g in group])).all()
    return {tuple(r[:len(group)]): tuple(r[len(group):]) for r in rows}


def test_helper_spans_become_usage_rows_with_cost(engine, agent):
    run_agent(agent.manager, "u1", "s1")
    run_agent(agent.manager, "u2", "s2")
    spans = agent.take_codec_spans()
    new = ingest(engine, spans)
    assert len(new) == len(spans) == 2 * 5

    mini, big = expected_cost()
    for resolution in (60, 3600):
        by_model = sums(engine, resolution, "model", "user_id", "agent", "service")
        assert set(by_model) == {(m, u, "research-agent", "agent-svc") for m in ("gpt-4o", "gpt-4o-mini")
                                 for u in ("u1", "u2")}
        calls, inp, out, cached, cost, errors = by_model[("gpt-4o", "u1", "research-agent", "agent-svc")]
        assert (calls, inp, out, cached, errors) == (1, 812, 164, 512, 0)
        assert cost == pytest.approx(big)
        calls, inp, out, cached, cost, errors = by_model[("gpt-4o-mini", "u2", "research-agent", "agent-svc")]
        assert (calls, inp, out, cached) == (1, 200, 50, 0)
        assert cost == pytest.approx(mini)

    # redelivery of the same spans adds nothing
    assert ingest(engine, spans) == []
    total = sums(engine, 60)[()]
    assert total[:4] == (4, 2 * 1012, 2 * 214, 2 * 512)
    assert total[4] == pytest.approx(2 * (mini + big))


def test_query_usage_groups_and_series(engine, agent):
    run_agent(agent.manager, "u1", "s1")
    run_agent(agent.manager, "u1", "s1")
    run_agent(agent.manager, "u2", "s2")
    ingest(engine, agent.take_codec_spans())
    now = time.time_ns()
    mini, big = expected_cost()
    with engine.connect() as conn:
        by_user = query_usage(conn, now - 3600 * 10**9, now, group_by="user", step_s=60)
        by_model = query_usage(conn, now - 86400 * 10**9, now, group_by="model", step_s=3600)
        with pytest.raises(ValueError):
            query_usage(conn, 0, now, group_by="colour")
        with pytest.raises(ValueError):
            query_usage(conn, 0, now, step_s=90)
    assert by_user["totals"]["calls"] == 6
    assert by_user["totals"]["cost"] == pytest.approx(3 * (mini + big), abs=1e-6)
    groups = {g["key"]: g for g in by_user["groups"]}
    assert groups["u1"]["input_tokens"] == 2 * 1012 and groups["u2"]["input_tokens"] == 1012
    assert groups["u1"]["cost"] > groups["u2"]["cost"]
    u1_points = next(s["points"] for s in by_user["series"] if s["key"] == "u1")
    assert sum(p["calls"] for p in u1_points) == 4
    assert by_model["resolution_s"] == 3600
    assert [g["key"] for g in by_model["groups"]] == ["gpt-4o", "gpt-4o-mini"]  # most expensive first
    assert by_model["unpriced_models"] == []


def span(span_id, attributes, status="unset", service="other-svc", start_ns=None):
    start = start_ns or time.time_ns()
    return {"trace_id": "ab" * 16, "span_id": span_id, "parent_span_id": None, "name": "llm", "kind": "client",
            "start_ns": start, "end_ns": start + 2_000_000, "status_code": status, "status_message": None,
            "service": service, "resource": {}, "attributes": attributes, "events": [], "links": [], "scope": None}


def test_openinference_legacy_and_unpriced_models(engine):
    spans = [
        span("0000000000000001", {"openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-sonnet",
                                  "llm.token_count.prompt": 1000, "llm.token_count.completion": 100,
                                  "llm.token_count.total": 1100, "user.id": "u9"}),
        span("0000000000000002", {"gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-2024-08-06",
                                  "gen_ai.usage.prompt_tokens": 100, "gen_ai.usage.completion_tokens": 10}),
        span("0000000000000003", {"llm.model_name": "my-private-model", "llm.token_count.total": 77}, "error"),
        span("0000000000000004", {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"}, "error"),
        span("0000000000000005", {"http.route": "/not-an-llm"}),
    ]
    ingest(engine, spans)
    rows = sums(engine, 60, "model", "user_id")
    sonnet = pricing.EXAMPLE_PRICES["claude-3-5-sonnet"]
    assert rows[("claude-3-5-sonnet", "u9")][:3] == (1, 1000, 100)
    assert rows[("claude-3-5-sonnet", "u9")][4] == pytest.approx((1000 * sonnet["input"] + 100 * sonnet["output"]) / 1000)
    # the response model is preferred over the requested one; dated names price as their family
    assert rows[("gpt-4o-2024-08-06", "")][:3] == (1, 100, 10)
    assert rows[("gpt-4o-2024-08-06", "")][4] == pytest.approx((100 * GPT4O["input"] + 10 * GPT4O["output"]) / 1000)
    assert rows[("my-private-model", "")][:2] == (1, 77)
    assert rows[("my-private-model", "")][4] == 0.0 and rows[("my-private-model", "")][5] == 1
    assert rows[("gpt-4o", "")][0] == 1 and rows[("gpt-4o", "")][5] == 1  # failed call without usage counted
    assert len(rows) == 4
    assert "my-private-model" in pricing.unpriced_models()
    now = time.time_ns()
    with engine.connect() as conn:
        result = query_usage(conn, now - 600 * 10**9, now + 60 * 10**9, group_by="model", step_s=60)
    assert result["unpriced_models"] == ["my-private-model"]


def test_price_table_file_overrides_example_prices(engine, tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"gpt-4o": {"input": 1.0, "output": 2.0, "cached_input": 0.5}}))
    pricing.set_price_table(str(path))
    ingest(engine, [span("0000000000000001", {"gen_ai.request.model": "gpt-4o", "gen_ai.usage.input_tokens": 2000,
                                               "gen_ai.usage.output_tokens": 1000,
                                               "gen_ai.usage.cache_read.input_tokens": 1000})])
    assert sums(engine, 60)[()][4] == pytest.approx(1.0 + 0.5 + 2.0)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"gpt-4o": {"input": -1}}))
    with pytest.raises(pricing.PriceTableError, match="gpt-4o"):
        pricing.load_price_table(str(bad))
    with pytest.raises(pricing.PriceTableError, match="missing.json"):
        pricing.load_price_table(str(tmp_path / "missing.json"))


def test_usage_rows_survive_finalization(engine, agent):
    run_agent(agent.manager, "u1", "s1")
    ingest(engine, agent.take_codec_spans())
    before = sums(engine, 60)
    assert finalize(engine) == 1
    assert sums(engine, 60) == before


def test_demo_model_has_an_example_price_and_unpriced_models_get_a_hint(engine):
    from contrail_demo.model import MODEL_NAME

    pricing.set_price_table(None)
    assert pricing.current_table().is_priced(MODEL_NAME)  # the demo's AI page shows a cost, not "unpriced"
    ingest(engine, [span("0000000000000001", {"gen_ai.request.model": MODEL_NAME, "gen_ai.usage.input_tokens": 1000,
                                               "gen_ai.usage.output_tokens": 100, "user.id": "u1"}),
                    span("0000000000000002", {"gen_ai.request.model": "house-model", "gen_ai.usage.input_tokens": 10,
                                               "user.id": "u2"})])
    now = time.time_ns()
    with engine.connect() as conn:
        result = query_usage(conn, now - 600 * 10**9, now + 60 * 10**9, group_by="model", step_s=60)
        only_u1 = query_usage(conn, now - 600 * 10**9, now + 60 * 10**9, group_by="model", step_s=60,
                              where={"user": "u1"})
        with pytest.raises(ValueError, match="where"):
            query_usage(conn, now - 600 * 10**9, now, where={"colour": "red"})
    demo = pricing.EXAMPLE_PRICES[MODEL_NAME]
    costs = {g["key"]: g["cost"] for g in result["groups"]}
    assert costs[MODEL_NAME] == pytest.approx((1000 * demo["input"] + 100 * demo["output"]) / 1000)
    assert result["unpriced_models"] == ["house-model"]
    assert "CONTRAIL_PRICE_TABLE" in result["price_hint"]
    assert [g["key"] for g in only_u1["groups"]] == [MODEL_NAME] and only_u1["totals"]["calls"] == 1
    assert "price_hint" not in only_u1  # nothing unpriced there
