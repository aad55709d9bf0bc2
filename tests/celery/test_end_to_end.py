"""One request through Flask service A → service B → Celery task → subtasks is one trace in the API.

Real processes throughout: two Flask services on loopback ports, a prefork
Celery worker, the Contrail collector writing SQLite, and the API app reading
it. Run once with the Redis broker and once with RabbitMQ.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid

import pytest
import requests

from tests.celery.helpers import ROOT, Worker
from tests.conftest import unavailable
from tests.support.servers import free_port, stop_process, wait_until

pytestmark = pytest.mark.xdist_group("celery")

RABBITMQ_URL = os.environ.get("CONTRAIL_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
T = "tests.celery.apps.tasks"


def rabbitmq_unavailable_reason() -> str | None:
    try:
        from kombu import Connection

        with Connection(RABBITMQ_URL, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return f"RabbitMQ unreachable at {RABBITMQ_URL}: {exc}"
    return None


class Process:
    def __init__(self, args: list[str], env: dict[str, str], log_path):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def stop(self) -> None:
        stop_process(self.process, 20, 10)
        self._log.close()


def _listening(port: int, process: Process) -> bool:
    if process.process.poll() is not None:
        raise AssertionError(f"service exited:\n{process.log()[-3000:]}")
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(params=["redis", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def broker_url(request, celery_env):
    if request.param == "redis":
        return celery_env["CONTRAIL_TEST_BROKER_URL"]
    reason = rabbitmq_unavailable_reason()
    if reason:
        unavailable(reason, f"RabbitMQ is required in CI: {reason}")
    return RABBITMQ_URL


@pytest.fixture
def stack(broker_url, celery_env, tmp_path):
    """Collector, worker and both services on one unique queue; everything stopped afterwards."""
    queue = f"e2e-{uuid.uuid4().hex[:10]}"
    env = {**os.environ, **celery_env, "CONTRAIL_TEST_BROKER_URL": broker_url, "CONTRAIL_TEST_QUEUE": queue,
           "CONTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'contrail.db'}", "CONTRAIL_QUIET_PERIOD": "1s",
           "CONTRAIL_CONSUMER_NAME": f"collector-{queue}"}
    started: list = []
    try:
        from redis import Redis

        Redis.from_url(env["CONTRAIL_REDIS_URL"]).delete("contrail:spans")  # this test's stream only
        started.append(Process([str(ROOT.parent / "venv" / "bin" / "contrail") if False else
                                os.path.join(os.path.dirname(sys.executable), "contrail"), "collector"],
                               env, tmp_path / "collector.log"))
        started.append(Worker(env, queue, pool="prefork", concurrency=2, log_dir=tmp_path).start())
        port_b, port_a = free_port(), free_port()
        b = Process([sys.executable, "-m", "tests.celery.apps.services", "b", str(port_b)],
                    {**env, "CONTRAIL_SERVICE_NAME": "service-b"}, tmp_path / "b.log")
        started.append(b)
        a = Process([sys.executable, "-m", "tests.celery.apps.services", "a", str(port_a)],
                    {**env, "CONTRAIL_TEST_SERVICE_B_URL": f"http://127.0.0.1:{port_b}"}, tmp_path / "a.log")
        started.append(a)
        wait_until(lambda: _listening(port_b, b), timeout=30, message="service B")
        wait_until(lambda: _listening(port_a, a), timeout=30, message="service A")
        yield {"env": env, "url_a": f"http://127.0.0.1:{port_a}"}
    finally:
        for process in reversed(started):
            process.stop()
        if broker_url.startswith("amqp"):
            try:
                from kombu import Connection

                with Connection(broker_url) as conn:
                    conn.default_channel.queue_delete(queue)
            except Exception:
                pass


def test_request_through_two_services_and_celery_is_one_trace(stack):
    response = requests.get(f"{stack['url_a']}/orders/7", timeout=30)
    assert response.status_code == 200, response.text

    from web.settings import WebSettings
    from web import create_app

    client = create_app(settings=WebSettings.load(env=stack["env"])).test_client()
    expected = 11  # 3 HTTP, pipeline publish + run, 2 subtask publishes, 2 flaky runs + 1 republish, 1 boom run

    def whole_trace():
        listing = client.get("/api/v1/traces?service=service-a&limit=10").get_json()
        if not listing or not listing.get("traces"):
            return None
        body = client.get(f"/api/v1/traces/{listing['traces'][0]['trace_id']}").get_json()
        return (listing, body) if body["summary"]["span_count"] >= expected else None

    try:
        listing, body = wait_until(whole_trace, timeout=60, message="the whole trace in the API")
    except AssertionError:
        from redis import Redis

        from tests.celery.helpers import read_spans

        seen = sorted((s["service"], s["name"], s["trace_id"][:8]) for s in read_spans(Redis.from_url(stack["env"]["CONTRAIL_REDIS_URL"])))
        traces = client.get("/api/v1/traces").get_json()["traces"]
        names = [sorted((x["service"], x["name"], x.get("attributes", {}).get("celery.retries"))
                        for x in client.get(f"/api/v1/traces/{t['trace_id']}").get_json()["spans"]) for t in traces]
        raise AssertionError(f"trace incomplete; API: {traces}; spans: {names}; stream: {seen}") from None
    assert listing["total"] == 1
    spans = body["spans"]
    assert len(spans) == expected, sorted(s["name"] for s in spans)
    assert {s["service"] for s in spans} == {"service-a", "service-b", "celery-worker"}
    by_id = {s["span_id"]: s for s in spans}

    def parent(span):
        return by_id[span["parent_span_id"]]

    def only(name):
        found = [s for s in spans if s["name"] == name]
        assert len(found) == 1, (name, sorted(s["name"] for s in spans))
        return found[0]

    server_a = only("GET /orders/<int:order_id>")
    assert server_a["parent_span_id"] is None and server_a["kind"] == "server"
    assert server_a["attributes"]["http.route"] == "/orders/<int:order_id>"
    assert server_a["attributes"]["http.response.status_code"] == 200
    assert server_a["attributes"]["client.address"] == "127.0.0.1"
    client_a = only("POST")
    assert client_a["kind"] == "client" and parent(client_a) is server_a and client_a["service"] == "service-a"
    server_b = only("POST /enqueue/<int:order_id>")
    assert server_b["kind"] == "server" and parent(server_b) is client_a and server_b["service"] == "service-b"
    publish = only(f"publish {T}.pipeline")
    assert publish["kind"] == "producer" and parent(publish) is server_b
    run = only(f"run {T}.pipeline")
    assert run["kind"] == "consumer" and parent(run) is publish
    assert run["attributes"]["celery.queue_wait_ms"] >= 0
    assert any(e["name"] == "celery.dequeued" for e in run["events"])
    assert parent(only(f"publish {T}.boom")) is run
    first_publish = [s for s in spans if s["name"] == f"publish {T}.flaky" and s["parent_span_id"] == run["span_id"]]
    assert len(first_publish) == 1

    attempts = sorted((s for s in spans if s["name"] == f"run {T}.flaky"),
                      key=lambda s: s["attributes"]["celery.retries"])
    assert [a["attributes"]["celery.retries"] for a in attempts] == [0, 1]
    assert parent(attempts[0]) is first_publish[0]
    republish = parent(attempts[1])
    assert republish["kind"] == "producer" and parent(republish) is attempts[0]
    assert attempts[0]["attributes"]["celery.state"] == "RETRY" and attempts[1]["attributes"]["celery.state"] == "SUCCESS"

    failed = only(f"run {T}.boom")
    assert parent(failed) is only(f"publish {T}.boom")
    assert failed["status"] == "error" and "payment declined" in failed["status_message"]
    assert any(e["name"] == "exception" for e in failed["events"])
    assert body["summary"]["error_count"] >= 1
    assert body["summary"]["root_service"] == "service-a"
