"""A process that calls a chat model through the real ``openai`` client under a real instrumentation.

Run by tests/ai/test_instrumentations.py (a process of its own, because the
instrumentations patch the ``openai`` module globally)::

    python -m tests.ai.instrumented_client INSTRUMENTATION VIA MODEL_URL TARGET SESSION USER

INSTRUMENTATION is ``openinference``, ``openllmetry`` or ``contrail`` (Contrail's
own ``llm_call`` recording the same call by hand, the reference); VIA is
``contrail`` (spans go through a TracingManager to Redis; TARGET is the Redis
URL) or ``otlp`` (an OpenTelemetry SDK exporting OTLP/HTTP to TARGET, the web
app). Prints the trace id of the call.
"""

from __future__ import annotations

import json
import sys

PROMPT = [{"role": "system", "content": "You plan trips."},
          {"role": "user", "content": "Weather in Paris? Mail ana@example.com, password=hunter2"}]
TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}}]


def _instrument(name: str, provider) -> None:
    if name == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor
    else:
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor
    OpenAIInstrumentor().instrument(tracer_provider=provider)


def _ask(model_url: str):
    import openai

    client = openai.OpenAI(base_url=model_url, api_key="sk-test-0123456789abcdef", max_retries=0)
    return client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, tools=TOOLS, temperature=0.2,
                                          max_tokens=64)


def _by_hand(manager, model_url: str) -> None:
    """Contrail's own llm_call around the same request, recording what the response says."""
    import openai

    client = openai.OpenAI(base_url=model_url, api_key="sk-test-0123456789abcdef", max_retries=0)
    with manager.llm_call(model="gpt-4o-mini", provider="openai", prompt=PROMPT, temperature=0.2,
                          max_tokens=64) as llm:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, tools=TOOLS,
                                                temperature=0.2, max_tokens=64)
        message = answer.choices[0].message
        llm.record_usage(input_tokens=answer.usage.prompt_tokens, output_tokens=answer.usage.completion_tokens,
                         cache_read_tokens=answer.usage.prompt_tokens_details.cached_tokens)
        llm.set_response_model(answer.model)
        llm.set_response(message.content, tool_calls=[
            {"id": call.id, "name": call.function.name, "arguments": json.loads(call.function.arguments)}
            for call in message.tool_calls or []])


def main(instrumentation: str, via: str, model_url: str, target: str, session: str, user: str) -> None:
    if via == "contrail":
        from tracer.manager import TracingManager

        manager = TracingManager(service_name=f"{instrumentation}-app", redis_url=target, schedule_delay=0.05,
                                 record_content=instrumentation == "contrail")
        if instrumentation != "contrail":
            _instrument(instrumentation, manager.tracer_provider)
        with manager.agent_run("trip-agent", user_id=user, session_id=session) as run:
            trace_id = format(run.span.get_span_context().trace_id, "032x")
            if instrumentation == "contrail":
                _by_hand(manager, model_url)
            else:
                _ask(model_url)
        assert manager.flush(20), manager.get_tracer_info()
        manager.shutdown()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        provider = TracerProvider(resource=Resource.create({"service.name": f"{instrumentation}-otlp"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{target}/v1/traces")))
        _instrument(instrumentation, provider)
        with provider.get_tracer("test-app").start_as_current_span("handle question") as root:
            trace_id = format(root.get_span_context().trace_id, "032x")
            if instrumentation == "openinference":
                from openinference.instrumentation import using_session, using_user

                with using_session(session), using_user(user):
                    _ask(model_url)
            else:
                _ask(model_url)
        provider.force_flush(20_000)
        provider.shutdown()
    print(trace_id, flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:7])
