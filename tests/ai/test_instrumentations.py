"""OpenInference and OpenLLMetry spans show like Contrail's own llm_call: model, tokens, cost and content.

The real instrumentation packages drive the real ``openai`` client against an
OpenAI-compatible chat server in this test; their spans travel through a
TracingManager (Redis) or OTLP/HTTP (the web app) to a real ``contrail
collector`` process, and the AI API reads them back.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import requests

from collector_worker import pricing
from tests.browser.conftest import running_stack
from tests.conftest import IN_CI, ROOT
from tests.support.servers import wait_until

try:  # test-only packages of the dev extra
    import openai  # noqa: F401
    import openinference.instrumentation.openai  # noqa: F401
    import opentelemetry.instrumentation.openai  # noqa: F401
except ImportError as exc:
    if IN_CI:
        raise
    pytest.skip(f"the instrumentation test needs the dev extra: {exc}", allow_module_level=True)

USAGE = {"prompt_tokens": 21, "completion_tokens": 7, "total_tokens": 28, "prompt_tokens_details": {"cached_tokens": 5}}


def _chat_app():
    """A chat-completions endpoint that answers with text, one tool call and usage, like the real API."""
    from flask import Flask, jsonify, request

    app = Flask("chat-stub")

    @app.post("/v1/chat/completions")
    def completions():
        body = request.get_json()
        return jsonify({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1_700_000_000,
            "model": f"{body['model']}-2024-07-18",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": "Let me check. Reply to ops@example.com.",
                "tool_calls": [{"id": "call_1", "type": "function",
                                "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]}}],
            "usage": USAGE,
        })

    return app


@pytest.fixture(scope="module")
def model_url():
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, _chat_app(), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


@pytest.fixture(scope="module")
def contrail(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("instrumentations")) as (base_url, redis_url, _, collector, log):
        yield base_url, redis_url, collector, log


def _call(instrumentation, via, model_url, target, session, user, **env):
    done = subprocess.run([sys.executable, "-m", "tests.ai.instrumented_client", instrumentation, via, model_url,
                           target, session, user], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[-1]


def _llm_view(base_url, collector, log, trace_id):
    """The LLM call viewer's answer for the one LLM span of a trace, once the collector has finalized it."""
    api = f"{base_url}/api/v1"

    def finalized():
        assert collector.poll() is None, log.read_text()
        traces = requests.get(f"{api}/ai/traces", params={"lookback": "1h", "limit": 200}, timeout=10).json()
        return any(t["trace_id"] == trace_id for t in traces["traces"])
    wait_until(finalized, timeout=60, interval=0.3, message=f"trace {trace_id} to be collected and finalized")
    spans = requests.get(f"{api}/traces/{trace_id}", timeout=10).json()["spans"]
    (span,) = [s for s in spans if s["attributes"].get("gen_ai.usage.input_tokens") is not None]
    view = requests.get(f"{api}/ai/llm-calls/{trace_id}/{span['span_id']}", timeout=10)
    assert view.status_code == 200, view.text
    return view.json()


def _agent_trace(base_url, trace_id):
    def listed():
        traces = requests.get(f"{base_url}/api/v1/ai/traces", params={"lookback": "1h", "limit": 200},
                              timeout=10).json()["traces"]
        return next((t for t in traces if t["trace_id"] == trace_id), None)
    wait_until(lambda: listed() is not None, timeout=60, interval=0.3, message=f"{trace_id} in /ai/traces")
    return listed()


def _expected_cost():
    mini = pricing.EXAMPLE_PRICES["gpt-4o-mini"]
    return (16 * mini["input"] + 5 * mini["cached_input"] + 7 * mini["output"]) / 1000


def _assert_like_contrail(view, reference):
    """The fields a person reads in the viewer are the same as for Contrail's own llm_call of the same call."""
    for key in ("model", "provider", "usage", "cost", "priced", "parameters", "tool_calls"):
        assert view[key] == reference[key], (key, view[key], reference[key])
    assert view["content"]["recorded"] is True
    assert view["input_messages"] == reference["input_messages"]
    text = [p for m in view["output_messages"] for p in m["parts"] if p["type"] == "text"]
    assert text == [p for m in reference["output_messages"] for p in m["parts"] if p["type"] == "text"]


@pytest.fixture(scope="module")
def reference(contrail, model_url):
    base_url, redis_url, collector, log = contrail
    trace_id = _call("contrail", "contrail", model_url, redis_url, "ref-session", "ref-user")
    view = _llm_view(base_url, collector, log, trace_id)
    assert view["model"] == "gpt-4o-mini-2024-07-18" and view["usage"]["cache_read_tokens"] == 5
    assert view["cost"] == pytest.approx(_expected_cost(), abs=1e-6) and view["priced"] is True
    user_text = view["input_messages"][1]["parts"][0]["content"]
    assert "[EMAIL]" in user_text and "hunter2" not in user_text
    assert view["tool_calls"] == [{"id": "call_1", "name": "weather", "arguments": {"city": "Paris"}}]
    assert view["parameters"] == {"max_tokens": 64, "temperature": 0.2}
    return view


@pytest.mark.parametrize("instrumentation", ["openinference", "openllmetry"])
def test_instrumented_call_through_tracing_manager(contrail, model_url, reference, instrumentation):
    base_url, redis_url, collector, log = contrail
    session = f"{instrumentation}-session"
    trace_id = _call(instrumentation, "contrail", model_url, redis_url, session, "traveller")
    view = _llm_view(base_url, collector, log, trace_id)
    _assert_like_contrail(view, reference)
    assert "ops@example.com" not in str(view["output_messages"]) and "hunter2" not in str(view["input_messages"])
    run = _agent_trace(base_url, trace_id)
    assert run["session_id"] == session and run["agent"] == "trip-agent"
    (call,) = run["llm_calls"]
    assert (call["model"], call["input_tokens"], call["output_tokens"], call["cache_read_tokens"]) == \
        ("gpt-4o-mini-2024-07-18", 21, 7, 5)
    assert call["priced"] is True and call["cost"] == pytest.approx(_expected_cost(), abs=1e-6)
    session_view = requests.get(f"{base_url}/api/v1/ai/sessions/{session}", timeout=10).json()
    assert [r["trace_id"] for r in session_view["runs"]] == [trace_id]
    assert session_view["totals"]["input_tokens"] == 21 and session_view["user_ids"] == ["traveller"]


@pytest.mark.parametrize("instrumentation", ["openinference", "openllmetry"])
def test_instrumented_call_over_otlp(contrail, model_url, reference, instrumentation):
    base_url, _, collector, log = contrail
    session = f"{instrumentation}-otlp-session"
    trace_id = _call(instrumentation, "otlp", model_url, base_url, session, "otlp-user")
    view = _llm_view(base_url, collector, log, trace_id)
    _assert_like_contrail(view, reference)
    assert view["service"] == f"{instrumentation}-otlp"
    if instrumentation == "openinference":  # it carries the session and user of using_session / using_user
        assert (view["session_id"], view["user_id"]) == (session, "otlp-user")
        runs = requests.get(f"{base_url}/api/v1/ai/sessions/{session}", timeout=10).json()["runs"]
        assert [r["trace_id"] for r in runs] == [trace_id] and runs[0]["llm_calls"][0]["input_tokens"] == 21


@pytest.mark.parametrize("instrumentation, switch", [("openinference", {"OPENINFERENCE_HIDE_INPUTS": "true",
                                                                        "OPENINFERENCE_HIDE_OUTPUTS": "true"}),
                                                     ("openllmetry", {"TRACELOOP_TRACE_CONTENT": "false"})])
def test_content_the_instrumentation_did_not_record_is_marked_not_recorded(contrail, model_url, instrumentation,
                                                                           switch):
    base_url, redis_url, collector, log = contrail
    trace_id = _call(instrumentation, "contrail", model_url, redis_url, f"{instrumentation}-quiet", "quiet", **switch)
    view = _llm_view(base_url, collector, log, trace_id)
    assert view["usage"]["input_tokens"] == 21 and view["priced"] is True
    assert view["content"]["recorded"] is False, view
    assert view["input_messages"] is None and view["output_messages"] is None
