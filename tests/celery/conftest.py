"""Celery test fixtures: a private Redis for broker, results and spans; session-scoped real workers.

The Celery tests get their own Redis server rather than the shared ``redis_url``
fixture, because that fixture empties Redis before each test and would delete
the broker's queue bindings under a worker that lives for the whole session.
DB 1 is the broker, DB 2 the result backend, DB 3 holds the span stream.
"""

from __future__ import annotations

import importlib
import os
import sys

import pytest
import redis

from tests.celery.helpers import Worker
from tests.support.servers import RedisServer

TASKS = "tests.celery.apps.tasks"


@pytest.fixture(scope="session")
def celery_redis():
    server = RedisServer.launch()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def celery_env(celery_redis, tmp_path_factory) -> dict[str, str]:
    base = f"redis://127.0.0.1:{celery_redis.port}"
    return {
        "CONTRAIL_TEST_BROKER_URL": f"{base}/1",
        "CONTRAIL_TEST_BACKEND_URL": f"{base}/2",
        "CONTRAIL_REDIS_URL": f"{base}/3",
        "CONTRAIL_SCHEDULE_DELAY": "50ms",
        "CONTRAIL_DATA_DIR": str(tmp_path_factory.mktemp("contrail-celery-data")),
        "CONTRAIL_SERVICE_NAME": "celery-worker",
        "PYTHONPATH": str(__import__("tests.celery.helpers", fromlist=["ROOT"]).ROOT),
    }


@pytest.fixture(scope="session")
def tasks(celery_env):
    """The test app imported in this process (the sending side), traced as service 'celery-client'."""
    saved = {k: os.environ.get(k) for k in celery_env}
    os.environ.update({**celery_env, "CONTRAIL_SERVICE_NAME": "celery-client", "CONTRAIL_TEST_QUEUE": "main"})
    try:
        sys.modules.pop(TASKS, None)
        module = importlib.import_module(TASKS)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ.pop("CONTRAIL_TEST_QUEUE", None)
    yield module
    module.tracing.shutdown()


@pytest.fixture(scope="session")
def worker(celery_env, tmp_path_factory):
    """The shared prefork worker on queue 'main'."""
    w = Worker(celery_env, "main", pool="prefork", concurrency=2, log_dir=tmp_path_factory.mktemp("logs")).start()
    yield w
    w.stop()


@pytest.fixture
def spans_client(celery_redis):
    client = redis.Redis(port=celery_redis.port, db=3)
    yield client
    client.close()
