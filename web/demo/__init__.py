"""The demo system: a small AI-agent backend that gives every dashboard page something true to show.

    gateway (Flask)  POST /ask ── agent run: planning → retrieval (HTTP) → synthesis (LLM call)
        │ requests, traceparent
    retrieval (Flask) POST /retrieve ── Celery tasks on queue "retrieval" (search tools, a slow
        │ Celery, Redis broker          vector-db dependency, retries, timeouts) and "rerank"
    retrieval-worker (Celery worker)
    model.py: a deterministic stand-in language model with token counts and a prompt cache
    loadgen.py: one question every 1-2 s

``contrail up --demo`` runs all of it on the stack's own Redis (the Celery
broker uses database 1); docker-compose.yml runs it as separate containers.
Configuration is read from ``DEMO_*`` variables (tracing itself from the
usual ``CONTRAIL_*`` settings).
"""

from __future__ import annotations

import os
import sys

GATEWAY_SERVICE = "gateway"
RETRIEVAL_SERVICE = "retrieval"
WORKER_SERVICE = "retrieval-worker"
QUEUES = ("retrieval", "rerank")


def broker_url() -> str:
    return os.environ.get("DEMO_BROKER_URL", "redis://127.0.0.1:6379/1")


def retrieval_url() -> str:
    return os.environ.get("DEMO_RETRIEVAL_URL", "http://127.0.0.1:8001").rstrip("/")


def gateway_url() -> str:
    return os.environ.get("DEMO_GATEWAY_URL", "http://127.0.0.1:8000").rstrip("/")


def seed() -> int:
    try:
        return int(os.environ.get("DEMO_SEED", "42"))
    except ValueError:
        return 42


def demo_specs(env: dict[str, str], redis_url: str, broker_url: str, gateway_port: int | None = None,
               retrieval_port: int | None = None) -> list:
    """The demo children for ``contrail up --demo``, in start order (see web/stack.py)."""
    from web.stack import ChildSpec, free_port

    gateway_port = gateway_port or free_port()
    retrieval_port = retrieval_port or free_port()
    demo_env = dict(env)
    demo_env.update({
        "CONTRAIL_REDIS_URL": redis_url,
        "DEMO_BROKER_URL": broker_url,
        "DEMO_RETRIEVAL_URL": f"http://127.0.0.1:{retrieval_port}",
        "DEMO_GATEWAY_URL": f"http://127.0.0.1:{gateway_port}",
    })
    # The stack's own settings are not the demo's business.
    for key in ("CONTRAIL_WEB_PORT", "CONTRAIL_WEB_HOST", "CONTRAIL_CONSUMER_NAME"):
        demo_env.pop(key, None)
    python = sys.executable

    def gunicorn(module: str, port: int) -> list[str]:
        return [python, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "8",
                "--graceful-timeout", "5", "--log-level", "warning", f"{module}:create_app()"]

    return [
        ChildSpec("demo-worker", [python, "-m", "celery", "-A", "web.demo.retrieval:celery_app", "worker",
                                  "--queues", ",".join(QUEUES), "--concurrency", "2", "--hostname", "demo@%h",
                                  "--loglevel", "WARNING", "--without-gossip", "--without-mingle"], demo_env),
        ChildSpec("demo-retrieval", gunicorn("web.demo.retrieval", retrieval_port), demo_env),
        ChildSpec("demo-gateway", gunicorn("web.demo.gateway", gateway_port), demo_env),
        ChildSpec("demo-loadgen", [python, "-m", "web.demo.loadgen", "--api-url",
                                   f"http://127.0.0.1:{gateway_port}", "--wait"], demo_env),
    ]
