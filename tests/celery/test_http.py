"""Flask server spans through TracingManager.instrument_flask: route, status, and 5xx as ERROR."""

from __future__ import annotations

import pytest
import redis
from flask import Flask

from tests.celery.helpers import read_spans
from tests.support.servers import wait_until
from tracer.manager import TracingManager

pytestmark = pytest.mark.xdist_group("celery")


def test_flask_server_spans_record_route_status_and_5xx_error(celery_redis, tmp_path):
    url = f"redis://127.0.0.1:{celery_redis.port}/4"
    client = redis.Redis(port=celery_redis.port, db=4)
    client.delete("contrail:spans")
    tracing = TracingManager(service_name="http-test", redis_url=url, data_dir=str(tmp_path), schedule_delay="50ms")
    app = Flask("http_test")
    tracing.instrument_flask(app)
    tracing.instrument_flask(app)  # idempotent

    @app.get("/items/<int:item_id>")
    def item(item_id):
        return {"id": item_id}

    @app.get("/down")
    def down():
        return {"error": "down"}, 503

    web = app.test_client()
    assert web.get("/items/3").status_code == 200
    assert web.get("/down").status_code == 503
    tracing.flush(5)
    spans = wait_until(lambda: s if len(s := read_spans(client)) >= 2 else None, timeout=20, message="http spans")
    tracing.shutdown()
    by_name = {s["name"]: s for s in spans}
    assert set(by_name) == {"GET /items/<int:item_id>", "GET /down"}
    ok, bad = by_name["GET /items/<int:item_id>"], by_name["GET /down"]
    assert ok["kind"] == "server" and ok["status_code"] == "unset"
    assert ok["attributes"]["http.request.method"] == "GET"
    assert ok["attributes"]["http.route"] == "/items/<int:item_id>"
    assert ok["attributes"]["http.response.status_code"] == 200
    assert "client.address" in ok["attributes"]
    assert bad["status_code"] == "error" and bad["attributes"]["http.response.status_code"] == 503
