"""Attribute conventions of other instrumentations mapped at admission (collector_worker.conventions)."""

from __future__ import annotations

import json

from hypothesis import given, settings, strategies as st

from collector_worker.conventions import map_ai_conventions
from collector_worker.llm_calls import llm_call_view
from collector_worker.pricing import load_price_table
from collector_worker.storage.queries import span_to_api
from collector_worker.validation import admit_span
from tracer.limits import SpanLimits


def _span(attributes, scope="some.instrumentation", name="llm"):
    return {"trace_id": "ab" * 16, "span_id": "cd" * 8, "parent_span_id": None, "name": name, "kind": "client",
            "start_ns": 1_764_000_000_000_000_000, "end_ns": 1_764_000_000_500_000_000, "status_code": "ok",
            "status_message": None, "service": "svc", "resource": {}, "attributes": attributes, "events": [],
            "links": [], "scope": scope}


def test_openllmetry_numbered_prompts_become_genai_messages_redacted():
    span = _span({"gen_ai.system": "openai", "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o",
                  "gen_ai.usage.prompt_tokens": 30, "gen_ai.usage.completion_tokens": 4, "llm.usage.total_tokens": 34,
                  "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "my key is sk-abcdefghijkl1234",
                  "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "ok",
                  "gen_ai.completion.0.finish_reason": "tool_calls",
                  "gen_ai.completion.0.tool_calls.0.id": "c1", "gen_ai.completion.0.tool_calls.0.name": "lookup",
                  "gen_ai.completion.0.tool_calls.0.arguments": "{\"q\": \"x\"}",
                  "traceloop.association.properties.session_id": "s-7"})
    map_ai_conventions(span, 16384)
    attrs = span["attributes"]
    assert not [k for k in attrs if k.startswith(("gen_ai.prompt.", "gen_ai.completion."))]  # folded into JSON
    assert (attrs["gen_ai.operation.name"], attrs["gen_ai.provider.name"]) == ("chat", "openai")
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (30, 4)
    assert attrs["session.id"] == "s-7" and attrs["gen_ai.response.finish_reasons"] == ["tool_calls"]
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "parts": [{"type": "text", "content": "my key is [REDACTED_KEY]"}]}]
    view = llm_call_view("ab" * 16, span_to_api(span), load_price_table(None))
    assert view["tool_calls"] == [{"id": "c1", "name": "lookup", "arguments": {"q": "x"}}]
    assert view["content"]["recorded"] and view["output_messages"][0]["finish_reason"] == "tool_calls"


def test_openinference_agent_tool_and_embedding_spans_get_genai_operations():
    agent = _span({"openinference.span.kind": "AGENT", "agent.name": "planner"}, name="run planner")
    tool = _span({"openinference.span.kind": "TOOL", "tool.name": "search", "input.value": "{\"password\": \"p\"}",
                  "output.value": "mail bob@example.com"})
    embed = _span({"openinference.span.kind": "EMBEDDING", "embedding.model_name": "text-embedding-3-small",
                   "llm.token_count.prompt": 8})
    for span in (agent, tool, embed):
        map_ai_conventions(span, 16384)
    assert agent["attributes"]["gen_ai.operation.name"] == "invoke_agent"
    assert agent["attributes"]["gen_ai.agent.name"] == "planner"
    t = tool["attributes"]
    assert (t["gen_ai.operation.name"], t["gen_ai.tool.name"]) == ("execute_tool", "search")
    assert json.loads(t["gen_ai.tool.call.arguments"]) == {"password": "[REDACTED]"}
    assert t["gen_ai.tool.call.result"] == "mail [EMAIL]" and t["output.value"] == "mail [EMAIL]"
    assert embed["attributes"]["gen_ai.operation.name"] == "embeddings"
    assert embed["attributes"]["gen_ai.request.model"] == "text-embedding-3-small"


def test_plain_and_own_spans_are_left_alone_but_a_conversation_is_a_session():
    plain = _span({"http.route": "/x", "llm.model_name": "not mapped without a kind"})
    map_ai_conventions(plain, 16384)
    assert plain["attributes"] == {"http.route": "/x", "llm.model_name": "not mapped without a kind"}
    own = _span({"gen_ai.input.messages": "password=[REDACTED] of a@b.c", "gen_ai.conversation.id": "c-1"},
                scope="contrail")
    map_ai_conventions(own, 16384)
    assert own["attributes"]["gen_ai.input.messages"] == "password=[REDACTED] of a@b.c"  # already redacted at source
    assert own["attributes"]["session.id"] == "c-1"


def test_long_content_stays_whole_json_within_the_value_limit():
    parts = {f"llm.input_messages.{i}.message.{k}": v for i in range(5)
             for k, v in (("role", "user"), ("content", "word " * 5000))}
    span = _span({"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o", **parts})
    assert admit_span(span, SpanLimits(value_length=4096), now_ns=span["start_ns"]) is None
    text = span["attributes"]["gen_ai.input.messages"]
    assert len(text) <= 4096
    messages = json.loads(text)
    assert len(messages) == 5 and all(m["parts"][0]["content"].endswith("…[truncated]") for m in messages)


_KEYS = ["openinference.span.kind", "llm.input_messages.0.message.role", "llm.input_messages.0.message.content",
         "llm.input_messages.x.message.content", "llm.invocation_parameters",
         "llm.output_messages.0.message.tool_calls.0.tool_call.function.arguments", "gen_ai.system",
         "gen_ai.prompt.0.content", "gen_ai.prompt.0.tool_calls.0.name", "llm.request.type", "gen_ai.input.messages",
         "input.value", "traceloop.span.kind", "gen_ai.conversation.id", "llm.tools.0.tool.json_schema",
         "gen_ai.usage.prompt_tokens"]
_VALUES = st.one_of(st.text(max_size=30), st.integers(), st.floats(), st.booleans(), st.none(),
                    st.lists(st.text(max_size=5), max_size=3),
                    st.sampled_from(["LLM", "TOOL", "AGENT", "{\"a\": 1}", "[1, 2]", "null"]))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_KEYS), _VALUES, max_size=8))
def test_any_attribute_values_never_raise(attributes):
    span = _span(dict(attributes))
    map_ai_conventions(span, 256)
    llm_call_view("ab" * 16, span_to_api(span), load_price_table(None))
