"""Two Flask services for the end-to-end test: A calls B over HTTP, B enqueues a Celery task.

Run as ``python -m tests.celery.apps.services a|b PORT``; service A finds B
through CONTRAIL_TEST_SERVICE_B_URL.
"""

from __future__ import annotations

import os
import sys

import requests
from flask import Flask, jsonify


def create_service_a(tracing) -> Flask:
    app = Flask("service_a")
    tracing.instrument_flask(app)
    tracing.instrument_requests()

    @app.get("/orders/<int:order_id>")
    def place_order(order_id: int):
        response = requests.post(f"{os.environ['CONTRAIL_TEST_SERVICE_B_URL']}/enqueue/{order_id}", timeout=10)
        return jsonify({"order": order_id, "queued": response.json()}), response.status_code

    @app.get("/broken")
    def broken():
        return jsonify({"error": "down"}), 503

    return app


def create_service_b(tracing) -> Flask:
    from tests.celery.apps.tasks import pipeline

    app = Flask("service_b")
    tracing.instrument_flask(app)

    @app.post("/enqueue/<int:order_id>")
    def enqueue(order_id: int):
        return jsonify({"task_id": pipeline.delay().id})

    return app


def main() -> None:
    which, port = sys.argv[1], int(sys.argv[2])
    if which == "a":
        from tracer.manager import TracingManager

        app = create_service_a(TracingManager(service_name="service-a"))
    else:
        from tests.celery.apps.tasks import tracing  # service B shares the Celery app's manager

        app = create_service_b(tracing)
    app.run(host="127.0.0.1", port=port, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
