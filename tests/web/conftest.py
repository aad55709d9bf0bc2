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


@pytest.fixture
def gunicorn_web(tmp_path, redis_url):
    """``contrail web`` under the real gunicorn server; call with extra CONTRAIL_* env and CLI args, get
    (base URL, process). Stopped at the end of the test."""
    import os
    import subprocess
    import sys

    import requests

    from tests.support.servers import stop_process

    processes = []

    def start(*args: str, **env: str):
        port = free_port()
        environ = {**os.environ, "CONTRAIL_DATA_DIR": str(tmp_path), "CONTRAIL_API_TOKEN": "",
                   "HOME": str(tmp_path), "CONTRAIL_STREAM": f"contrail:web:{tmp_path.name}", **env}
        process = subprocess.Popen(
            [sys.executable, "-m", "contrail_cli", "web", "--port", str(port), *args,
             "--database-url", environ.get("CONTRAIL_DATABASE_URL", f"sqlite:///{tmp_path / 'web.db'}"),
             "--redis-url", redis_url],
            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(base + "/healthz", timeout=1).ok, timeout=30, message="contrail web")
        return base, process

    yield start
    for process in processes:
        stop_process(process)


@pytest.fixture
def collector_process(tmp_path, redis_url):
    """A real collector process on the apps' stream (``contrail:spans``); yields its database URL."""
    import os
    import subprocess
    import sys

    from tests.support.servers import stop_process

    env = {**os.environ, "CONTRAIL_REDIS_URL": redis_url, "CONTRAIL_STREAM": "contrail:spans",
           "CONTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'collected.db'}", "CONTRAIL_DATA_DIR": str(tmp_path),
           "CONTRAIL_QUIET_PERIOD": "0.2s", "CONTRAIL_BLOCK": "0.2s",
           "CONTRAIL_CONSUMER_GROUP": f"tests-{tmp_path.name}"}
    process = subprocess.Popen([sys.executable, "-m", "contrail_cli", "collector"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    yield env["CONTRAIL_DATABASE_URL"]
    stop_process(process)
