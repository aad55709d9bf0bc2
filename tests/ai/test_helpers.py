"""The AI-agent helpers: GenAI attributes, content redaction, nesting, async use, decorators, no-op mode."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracer import ai
from tracer.settings import TracerSettings


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


def make_manager(exporter, **settings):
    """The two things the helpers use from a TracingManager: an SDK tracer and the settings."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return SimpleNamespace(tracer=provider.get_tracer("test"), settings=TracerSettings.load(env={}, **settings))


def by_name(exporter):
    return {span.name: span for span in exporter.get_finished_spans()}


def test_issue_example_produces_genai_spans_with_propagated_identity(exporter):
    manager = make_manager(exporter)
    with ai.agent_run(manager, "research-agent", user_id="123", session_id="s-9") as run:
        with ai.phase(manager, "planning"):
            pass
        with ai.tool_call(manager, "memo_search", input="q") as tool:
            tool.set_output(["a", "b"])
        with ai.llm_call(manager, model="gpt-4o", provider="openai", purpose="synthesis") as llm:
            llm.record_usage(input_tokens=812, output_tokens=164, cache_hit=True)
            llm.set_response_model("gpt-4o-2024-08-06")
        assert run.recording
    spans = by_name(exporter)
    assert set(spans) == {"invoke_agent research-agent", "phase planning", "execute_tool memo_search", "chat gpt-4o"}
    root = spans["invoke_agent research-agent"]
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "research-agent"
    assert root.attributes["user.id"] == "123"
    assert root.attributes["session.id"] == "s-9"
    assert root.attributes["gen_ai.conversation.id"] == "s-9"

    llm = spans["chat gpt-4o"]
    assert llm.kind.name == "CLIENT"
    assert llm.parent.span_id == root.context.span_id
    assert llm.attributes["gen_ai.operation.name"] == "chat"
    assert llm.attributes["gen_ai.provider.name"] == "openai"
    assert llm.attributes["gen_ai.request.model"] == "gpt-4o"
    assert llm.attributes["gen_ai.response.model"] == "gpt-4o-2024-08-06"
    assert llm.attributes["gen_ai.usage.input_tokens"] == 812
    assert llm.attributes["gen_ai.usage.output_tokens"] == 164
    assert llm.attributes["contrail.ai.cache_hit"] is True
    assert llm.attributes["contrail.ai.purpose"] == "synthesis"
    for child in ("phase planning", "execute_tool memo_search", "chat gpt-4o"):
        attrs = spans[child].attributes
        assert attrs["user.id"] == "123" and attrs["session.id"] == "s-9"
        assert attrs["gen_ai.agent.name"] == "research-agent"
        assert spans[child].parent.span_id == root.context.span_id

    tool = spans["execute_tool memo_search"]
    assert tool.attributes["gen_ai.operation.name"] == "execute_tool"
    assert tool.attributes["gen_ai.tool.name"] == "memo_search"
    assert spans["phase planning"].attributes["contrail.ai.phase"] == "planning"
    # record_content defaults to off: no inputs, outputs or prompts
    assert "gen_ai.tool.call.arguments" not in tool.attributes
    assert "gen_ai.tool.call.result" not in tool.attributes


def test_identity_does_not_leak_after_the_run(exporter):
    manager = make_manager(exporter)
    with ai.agent_run(manager, "a", user_id="u1"):
        pass
    with ai.tool_call(manager, "outside"):
        pass
    assert "user.id" not in by_name(exporter)["execute_tool outside"].attributes


def test_content_is_recorded_redacted_and_truncated_when_enabled(exporter):
    manager = make_manager(exporter, record_content=True, max_attribute_length=120)
    secret_input = ("mail bob@example.com with Authorization: Bearer abc.def-123 "
                    "key sk-proj-ABCDEF1234567890 password=hunter2 and {\"api_key\": \"xyz\"}")
    with ai.tool_call(manager, "send", input=secret_input) as tool:
        tool.set_output("x" * 500)
    with ai.llm_call(manager, model="m", prompt=[{"role": "system", "content": "token=abc123"},
                                                 {"role": "user", "content": "hi carol@corp.io"}]) as llm:
        llm.set_response("reply to dave@x.org")
    spans = by_name(exporter)
    arguments = spans["execute_tool send"].attributes["gen_ai.tool.call.arguments"]
    for leaked in ("bob@example.com", "abc.def-123", "sk-proj-ABCDEF1234567890", "hunter2", "xyz"):
        assert leaked not in arguments
    assert "[EMAIL]" in arguments and "Bearer [REDACTED]" in arguments and "[REDACTED_KEY]" in arguments
    assert "password=[REDACTED]" in arguments
    result = spans["execute_tool send"].attributes["gen_ai.tool.call.result"]
    assert len(result) == 120 and result.endswith(ai.TRUNCATION_MARK)
    messages = spans["chat m"].attributes["gen_ai.input.messages"]
    assert "abc123" not in messages and "carol@corp.io" not in messages and '"role": "system"' in messages
    assert "dave@x.org" not in spans["chat m"].attributes["gen_ai.output.messages"]


def test_exception_marks_error_records_event_and_propagates(exporter):
    manager = make_manager(exporter)
    with pytest.raises(KeyError):
        with ai.agent_run(manager, "agent"):
            with ai.tool_call(manager, "lookup"):
                raise KeyError("missing")
    spans = by_name(exporter)
    for name in ("execute_tool lookup", "invoke_agent agent"):
        span = spans[name]
        assert span.status.status_code.name == "ERROR"
        assert "KeyError" in span.status.description
        assert [e.name for e in span.events] == ["exception"]
        assert span.events[0].attributes["exception.type"] == "KeyError"


def test_set_error_marks_without_raising(exporter):
    manager = make_manager(exporter)
    with ai.tool_call(manager, "flaky") as tool:
        tool.set_error(TimeoutError("slow upstream"))
    span = by_name(exporter)["execute_tool flaky"]
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "TimeoutError"


def test_async_with_and_concurrent_tasks_keep_their_own_identity(exporter):
    manager = make_manager(exporter)

    async def one_run(user):
        async with ai.agent_run(manager, "agent", user_id=user):
            await asyncio.sleep(0.01)
            async with ai.llm_call(manager, model="gpt-4o-mini") as llm:
                await asyncio.sleep(0.01)
                llm.record_usage(input_tokens=10, output_tokens=2)

    async def main():
        await asyncio.gather(one_run("u1"), one_run("u2"))

    asyncio.run(main())
    spans = exporter.get_finished_spans()
    runs = {s.context.span_id: s.attributes["user.id"] for s in spans if s.name == "invoke_agent agent"}
    calls = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(calls) == 2
    for call in calls:
        assert call.attributes["user.id"] == runs[call.parent.span_id]
    assert sorted(runs.values()) == ["u1", "u2"]


def test_decorators_on_sync_and_async_functions(exporter):
    manager = make_manager(exporter)

    @ai.tool_call(manager, "adder")
    def add(a, b):
        return a + b

    @ai.agent_run(manager, "async-agent", session_id="s1")
    async def run():
        return add(1, 2)

    assert asyncio.run(run()) == 3
    assert add(2, 2) == 4
    spans = exporter.get_finished_spans()
    assert [s.name for s in spans].count("execute_tool adder") == 2
    nested = [s for s in spans if s.name == "execute_tool adder" and s.parent is not None]
    assert len(nested) == 1 and nested[0].attributes["session.id"] == "s1"


def test_usage_accumulates_over_streamed_chunks(exporter):
    manager = make_manager(exporter)
    with ai.llm_call(manager, model="m", temperature=0.2) as llm:
        llm.record_usage(input_tokens=100, output_tokens=5)
        llm.record_usage(output_tokens=7, cache_read_tokens=40)
        llm.record_usage(input_tokens="junk")
    attrs = by_name(exporter)["chat m"].attributes
    assert attrs["gen_ai.usage.input_tokens"] == 100
    assert attrs["gen_ai.usage.output_tokens"] == 12
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 40
    assert attrs["contrail.ai.cache_hit"] is True
    assert attrs["gen_ai.request.temperature"] == 0.2


def test_disabled_tracing_yields_noop_handles(exporter):
    manager = make_manager(exporter, enabled=False)
    with ai.agent_run(manager, "a", user_id="u") as run:
        with ai.llm_call(manager, model="m", prompt="p") as llm:
            llm.record_usage(input_tokens=1, output_tokens=1, cache_hit=True)
            llm.set_response("r")
            llm.set_response_model("m2")
        with ai.tool_call(manager, "t", input="i") as tool:
            tool.set_output("o")
            tool.set_error(ValueError("x"))
    assert run.span is None and not run.recording
    assert exporter.get_finished_spans() == ()
    with pytest.raises(RuntimeError):
        with ai.phase(manager, "p"):
            raise RuntimeError("still raised")


def test_manager_delegations_when_available(exporter):
    manager_module = pytest.importorskip("tracer.manager", reason="TracingManager not in this tree yet")
    manager = manager_module.TracingManager(service_name="ai-test", enabled=False)
    with manager.agent_run("a", user_id="u") as run:
        with manager.llm_call(model="m") as llm:
            llm.record_usage(input_tokens=1)
    assert run.span is None
