"""The demo's API gateway: an AI agent answering questions (gunicorn: ``contrail_demo.gateway:create_app()``).

``POST /ask {"question": "...", "user_id": "u-1", "session_id": "s-1"?}`` runs
one agent run: a planning phase, retrieval over HTTP from the retrieval
service (which runs Celery tools), and a synthesis phase with an LLM call to
the stand-in model. The response carries the answer, token usage and the
trace id, so a caller can look the trace up (``contrail traces show <id>``).
"""

from __future__ import annotations

import re

import requests
from opentelemetry import trace

from tracer import TracingManager
from tracer.http import instrument_flask

from . import GATEWAY_SERVICE, retrieval_url
from .model import MODEL_NAME, PROVIDER, StandInModel

AGENT = "research-agent"
MAX_QUESTION = 500
STOP_WORDS = {"the", "and", "for", "how", "what", "why", "does", "with", "should", "when", "are", "our"}


def plan(question: str) -> dict:
    """Pick keywords and how many passages to fetch: long questions get more context."""
    words = [w for w in re.findall(r"[a-z]+", question.lower()) if len(w) > 2 and w not in STOP_WORDS]
    return {"keywords": words[:6], "top_k": 3 if len(words) < 8 else 5}


def create_app(retrieval: str | None = None):
    from flask import Flask, jsonify, request

    app = Flask("contrail-demo-gateway")
    tracing = TracingManager(service_name=GATEWAY_SERVICE)
    instrument_flask(tracing, app, excluded_urls="healthz")  # probes are not traffic
    tracing.instrument_requests()
    app.extensions["contrail_tracing"] = tracing  # so an embedding process can flush and shut it down
    model = StandInModel()
    http = requests.Session()
    base = (retrieval or retrieval_url()).rstrip("/")

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/ask")
    def ask():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _bad("send a JSON object: {\"question\": \"...\", \"user_id\": \"...\"}")
        question, user_id = body.get("question"), body.get("user_id", "anonymous")
        if not isinstance(question, str) or not question.strip():
            return _bad("question must be a non-empty string")
        if len(question) > MAX_QUESTION:
            return _bad(f"question is limited to {MAX_QUESTION} characters")
        if not isinstance(user_id, str) or len(user_id) > 100:
            return _bad("user_id must be a string of at most 100 characters")
        session_id = body.get("session_id")
        if session_id is not None and (not isinstance(session_id, str) or len(session_id) > 100):
            return _bad("session_id must be a string of at most 100 characters")
        question = question.strip()

        with tracing.agent_run(AGENT, user_id=user_id, session_id=session_id):
            with tracing.phase("planning"):
                steps = plan(question)
                tracing.checkpoint("plan ready", keywords=",".join(steps["keywords"]), top_k=steps["top_k"])
            with tracing.phase("retrieval"):
                passages, problems = _retrieve(http, base, question, steps["top_k"])
            with tracing.phase("synthesis"):
                prompt = [{"role": "user", "content": model.prompt_for(question, passages)}]
                with tracing.llm_call(model=MODEL_NAME, provider=PROVIDER, purpose="synthesis", prompt=prompt,
                                      temperature=0.0) as llm:  # content kept only with CONTRAIL_RECORD_CONTENT=true
                    completion = model.complete(question, passages)
                    llm.record_usage(input_tokens=completion.input_tokens, output_tokens=completion.output_tokens,
                                     cache_hit=completion.cache_hit)
                    llm.set_response(completion.text)
            trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        return jsonify({
            "answer": completion.text,
            "sources": len(passages),
            "problems": problems,
            "usage": {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens,
                      "cached_tokens": completion.cached_tokens},
            "trace_id": trace_id,
        })

    return app


def _retrieve(http: requests.Session, base: str, question: str, top_k: int) -> tuple[list[str], list[str]]:
    try:
        response = http.post(f"{base}/retrieve", json={"question": question, "top_k": top_k}, timeout=15)
    except requests.RequestException as exc:
        return [], [f"retrieval unreachable: {type(exc).__name__}"]
    try:
        data = response.json()
    except ValueError:
        return [], [f"retrieval answered {response.status_code} without JSON"]
    return list(data.get("passages") or []), list(data.get("errors") or [])


def _bad(message: str):
    from flask import jsonify

    return jsonify({"error": {"code": "bad_parameter", "message": message}}), 400
