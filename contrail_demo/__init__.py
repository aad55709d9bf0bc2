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
