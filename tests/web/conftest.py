"""Fixtures for the web tests: an app on a real database (SQLite and PostgreSQL) and a real Redis."""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from tests.support.servers import free_port, wait_until
from tests.web.seed import standard_dataset, store
from web import create_app


@pytest.fixture
def make_app(database_url, redis_url):
    apps = []

    def build(**config):
        app = create_app({"DATABASE_URL": database_url, "REDIS_URL": redis_url, "TESTING": True, **config})
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["contrail.resources"].close()


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def dataset(database_url):
    data = standard_dataset()
    store(database_url, data.all_spans)
    return data


@pytest.fixture
def serve():
    """Serve an app on a free loopback port in a thread; yields a function returning its base URL."""
    servers = []

    def start(app):
        port = free_port()
        server = make_server("127.0.0.1", port, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        base = f"http://127.0.0.1:{port}"
        import requests

        wait_until(lambda: requests.get(base + "/healthz", timeout=1).status_code == 200, timeout=10,
                   message="the web app")
        return base

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(5)
