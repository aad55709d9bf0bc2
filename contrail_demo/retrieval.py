"""The retrieval service: an HTTP front (Flask) that fans work out to Celery tools on two queues.

``POST /retrieve {"question", "top_k"}`` enqueues two search tools on queue
``retrieval`` and then a rerank on queue ``rerank``, and waits for them. The
search goes through a deliberately slow "vector-db" dependency; a seeded
random source makes a share of searches fail transiently (retried by Celery),
a few time out for good (the tool fails, the answer goes on without it).

Run the HTTP side with gunicorn (``contrail_demo.retrieval:create_app()``) and the
workers with ``celery -A contrail_demo.retrieval:celery_app worker --queues retrieval``
(and ``--queues rerank``).
"""

from __future__ import annotations

import random
import re
import threading
import time

from celery import Celery, signals
from celery.exceptions import TimeoutError as CeleryTimeout

from tracer import TracingManager
from tracer.http import instrument_flask

from . import RETRIEVAL_SERVICE, WORKER_SERVICE, broker_url, seed

RETRY_CHANCE = 0.15  # a search hits a transient vector-db error and is retried
TIMEOUT_CHANCE = 0.05  # a search times out for good
SLOW_DEPENDENCY_S = (0.12, 0.35)  # vector-db latency range
WAIT_S = 10.0  # longest the HTTP side waits for its tasks

CORPUS = {
    "Celery retries": "Tasks can retry with a countdown; each attempt runs again on a worker from the queue.",
    "Redis streams": "A stream keeps entries in order; consumer groups share them and acknowledge each one.",
    "Trace sampling": "Head sampling decides at the root; tail sampling keeps errors and slow traces.",
    "Queue wait": "The time a message waits in the broker before a worker starts it is latency users feel.",
    "LLM caching": "Providers cache repeated prompt prefixes; cached input tokens cost a fraction.",
    "Critical path": "The chain of spans that decides the total duration; shortening others does not help.",
    "Clock skew": "Hosts disagree on time; child spans can appear to start before their parents.",
    "Retention": "Old traces are deleted in bounded batches so the database never locks for long.",
    "Rate limits": "An API that refuses bursts needs backoff with jitter in every client.",
    "Vector search": "Embeddings place similar passages near each other; recall depends on the index.",
    "Idempotency": "Writing the same span twice must change nothing, so redelivery is safe.",
    "Backpressure": "A bounded queue drops and counts instead of slowing the application thread.",
}
MEMOS = {
    "memo-2026-03": "Team decided to keep seven days of traces and to alert on consumer lag above 10k.",
    "memo-2026-05": "The rerank step moved to its own queue so slow searches never starve it.",
    "memo-2026-08": "Incident: vector-db timeouts doubled p95 of /ask; added retries with short countdowns.",
}

celery_app = Celery("contrail-demo", broker=broker_url(), backend=broker_url())
celery_app.conf.update(
    task_routes={
        "demo.search_documents": {"queue": "retrieval"},
        "demo.search_memos": {"queue": "retrieval"},
        "demo.rerank": {"queue": "rerank"},
    },
    task_default_queue="retrieval",
    result_expires=3600,
    broker_connection_retry_on_startup=True,
    worker_prefetch_multiplier=1,
    task_acks_late=False,
)

_tracing: TracingManager | None = None
_rng = random.Random(seed())
_rng_lock = threading.Lock()


def tracing() -> TracingManager:
    """This process's tracer: ``retrieval-worker`` in a Celery worker, ``retrieval`` elsewhere."""
    global _tracing
    if _tracing is None:
        _tracing = TracingManager(service_name=RETRIEVAL_SERVICE, celery_app=celery_app)
    return _tracing


@signals.worker_init.connect
def _start_worker_tracing(**_kwargs) -> None:
    global _tracing
    _tracing = TracingManager(service_name=WORKER_SERVICE, celery_app=celery_app)


def _chance() -> float:
    with _rng_lock:
        return _rng.random()


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2}


def _rank(question: str, items: dict[str, str], top_k: int) -> list[str]:
    wanted = _words(question)
    scored = sorted(items.items(), key=lambda kv: (-len(wanted & _words(kv[0] + " " + kv[1])), kv[0]))
    return [f"{title}: {text}" for title, text in scored[:top_k]]


class VectorDBUnavailable(Exception):
    """A transient vector-db error: worth a retry."""


# throws: the simulated vector-db timeout is part of the demo, so the worker logs it without a traceback
# (the task still fails, and its trace still shows the error).
@celery_app.task(bind=True, name="demo.search_documents", max_retries=2, throws=(TimeoutError,))
def search_documents(self, question: str, top_k: int = 3) -> list[str]:
    t = tracing()
    with t.tool_call("vector_search", input=question) as call:
        with t.trace_external_call("vector-db", endpoint="http://vector-db.internal/v1/query"):
            with _rng_lock:
                delay = _rng.uniform(*SLOW_DEPENDENCY_S)
            time.sleep(delay)
            roll = _chance()
            if roll < TIMEOUT_CHANCE:
                raise TimeoutError(f"vector-db did not answer within {SLOW_DEPENDENCY_S[1]:.2f}s")
            if roll < TIMEOUT_CHANCE + RETRY_CHANCE and self.request.retries < self.max_retries:
                error = VectorDBUnavailable("vector-db shard rebalancing (503)")
                t.checkpoint("transient error, retrying", attempt=self.request.retries + 1)
                raise self.retry(exc=error, countdown=0.2)
        results = _rank(question, CORPUS, top_k)
        call.set_output(results)
    return results


@celery_app.task(name="demo.search_memos")
def search_memos(question: str) -> list[str]:
    with tracing().tool_call("memo_search", input=question) as call:
        time.sleep(0.02)
        results = _rank(question, MEMOS, 1)
        call.set_output(results)
    return results


@celery_app.task(name="demo.rerank")
def rerank(question: str, passages: list[str], top_k: int = 3) -> list[str]:
    with tracing().tool_call("rerank", input={"question": question, "candidates": len(passages)}) as call:
        time.sleep(0.01 * len(passages))
        wanted = _words(question)
        ranked = sorted(passages, key=lambda p: (-len(wanted & _words(p)), p))[:top_k]
        call.set_output(ranked)
    return ranked


def retrieve(question: str, top_k: int = 3) -> dict:
    """Fan out the searches, rerank what came back; failed tools are reported, not fatal."""
    searches = [("vector_search", search_documents.delay(question, top_k)),
                ("memo_search", search_memos.delay(question))]
    passages: list[str] = []
    errors: list[str] = []
    deadline = time.monotonic() + WAIT_S
    for name, result in searches:
        try:
            value = result.get(timeout=max(0.1, deadline - time.monotonic()), propagate=False)
        except CeleryTimeout:
            errors.append(f"{name}: no answer within {WAIT_S:.0f}s")
            continue
        if result.failed() or isinstance(value, BaseException):
            errors.append(f"{name}: {type(value).__name__}: {value}")
        else:
            passages.extend(value)
    if passages:
        try:
            passages = rerank.delay(question, passages, top_k).get(
                timeout=max(0.1, deadline - time.monotonic()))
        except Exception as exc:  # a failed or late rerank: keep the unranked passages
            errors.append(f"rerank: {type(exc).__name__}: {exc}")
    return {"passages": passages, "errors": errors}


def create_app():
    """The retrieval HTTP service (gunicorn: ``contrail_demo.retrieval:create_app()``)."""
    from flask import Flask, jsonify, request

    app = Flask("contrail-demo-retrieval")
    t = tracing()
    instrument_flask(t, app, excluded_urls="healthz")  # probes are not traffic

    @app.get("/healthz")
    def healthz():
        return jsonify({"status": "ok"})

    @app.post("/retrieve")
    def retrieve_route():
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("question"), str) or not body["question"].strip():
            return jsonify({"error": {"code": "bad_parameter", "message": "JSON body with a question is required"}}), 400
        top_k = body.get("top_k", 3)
        if not isinstance(top_k, int) or not 1 <= top_k <= 10:
            return jsonify({"error": {"code": "bad_parameter", "message": "top_k must be 1..10"}}), 400
        result = retrieve(body["question"].strip()[:500], top_k)
        status = 200 if result["passages"] or not result["errors"] else 502
        return jsonify(result), status

    return app
