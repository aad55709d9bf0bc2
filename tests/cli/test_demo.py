"""The demo system's parts: the stand-in model, the gateway's input handling, `contrail demo` errors."""

from __future__ import annotations

import json

import pytest

from tests.support.servers import free_port
from contrail_demo.model import StandInModel, count_tokens


def test_stand_in_model_is_deterministic_and_caches_repeated_prompts():
    waited: list[float] = []
    model = StandInModel(sleep=waited.append)
    passages = ["Queue wait: time in the broker", "Critical path: the chain that decides duration"]
    first = model.complete("Why does queue wait matter?", passages)
    again = model.complete("Why does queue wait matter?", passages)
    other = model.complete("What is retention?", [])
    assert first.text == again.text
    assert first.input_tokens == again.input_tokens == count_tokens(model.prompt_for("Why does queue wait matter?",
                                                                                    passages))
    assert first.output_tokens == count_tokens(first.text) > 0
    assert (first.cache_hit, again.cache_hit, other.cache_hit) == (False, True, False)
    assert again.cached_tokens == again.input_tokens
    assert waited[1] < waited[0]  # cached input is cheaper to process
    assert "could not find sources" in other.text


@pytest.fixture
def gateway(redis_url, monkeypatch):
    monkeypatch.setenv("CONTRAIL_REDIS_URL", redis_url)
    from contrail_demo.gateway import create_app

    app = create_app(retrieval=f"http://127.0.0.1:{free_port()}")  # nothing listens there
    yield app.test_client()
    app.extensions["contrail_tracing"].shutdown()  # no span of this test reaches a later test's Redis


@pytest.mark.parametrize("body", [None, [], {"question": ""}, {"question": 5}, {"question": "x" * 501},
                                  {"question": "ok?", "user_id": 7}, {"question": "ok?", "session_id": ["s"]}])
def test_gateway_rejects_bad_input_with_400(gateway, body):
    response = gateway.post("/ask", data=json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "bad_parameter"


def test_gateway_answers_degraded_when_retrieval_is_down(gateway):
    response = gateway.post("/ask", json={"question": "What is the critical path?", "user_id": "u-1"})
    assert response.status_code == 200
    data = response.get_json()
    assert data["sources"] == 0
    assert data["problems"] and "retrieval unreachable" in data["problems"][0]
    assert len(data["trace_id"]) == 32 and int(data["trace_id"], 16)
    assert data["usage"]["input_tokens"] > 0 and data["usage"]["output_tokens"] > 0


def test_demo_command_reports_an_unreachable_gateway(run_cli):
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("demo", "--api-url", url, "--requests", "2")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines() == [
        f"Error: cannot reach the demo gateway at {url} (ConnectionError): start it with 'contrail up --demo' "
        "or pass --api-url"]


def test_demo_command_rejects_bad_counts(run_cli):
    assert run_cli("demo", "--requests", "0").exit_code == 2
    assert run_cli("demo", "--concurrency", "-1").exit_code == 2


def test_demo_url_is_read_from_the_data_dir(run_cli, tmp_path, monkeypatch):
    from contrail_demo.cli import default_api_url
    from contrail_demo.gateway_url import remember_gateway_url

    monkeypatch.delenv("DEMO_GATEWAY_URL", raising=False)
    monkeypatch.setenv("CONTRAIL_DATA_DIR", str(tmp_path))
    assert default_api_url() == "http://127.0.0.1:8000"
    remember_gateway_url(tmp_path, "http://127.0.0.1:45678")
    assert default_api_url() == "http://127.0.0.1:45678"
    monkeypatch.setenv("DEMO_GATEWAY_URL", "http://gateway:8000")
    assert default_api_url() == "http://gateway:8000"
