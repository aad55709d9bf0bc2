"""A Flask service traced by Contrail's Flask + requests instrumentation, speaking the protocol of the W3C
trace-context test harness: ``POST /test`` with a JSON list of ``{"url", "arguments"}`` calls each url with
its arguments. The conformance tests drive it; it can also be run for the public harness:

    python -m tests.tracer.trace_context_service --port 5000 --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse

import requests
from flask import Flask, request

from tracer import TracingManager


def create_service(manager: TracingManager) -> Flask:
    app = Flask("trace_context_service")
    manager.instrument_flask(app)
    manager.instrument_requests()

    @app.post("/test")
    def test():
        for item in request.get_json(force=True) or []:
            requests.post(item["url"], json=item.get("arguments", []), timeout=5)
        return "ok"

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    manager = TracingManager(service_name="trace-context-service", redis_url=args.redis_url)
    create_service(manager).run(host="127.0.0.1", port=args.port, threaded=True)


if __name__ == "__main__":
    main()
