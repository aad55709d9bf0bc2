"""Helpers for tracer tests: managers wired to the private Redis and a private spool."""

from __future__ import annotations

import pytest

from tracer import TracingManager


@pytest.fixture
def make_manager(redis_url, tmp_path):
    """Build TracingManagers against the test Redis; all are shut down after the test."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("service_name", "svc")
        kwargs.setdefault("redis_url", redis_url)
        kwargs.setdefault("spool_dir", str(tmp_path / "spool"))
        kwargs.setdefault("schedule_delay", 0.05)
        manager = TracingManager(**kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.shutdown(timeout=2)


from tests.web.conftest import serve  # noqa: E402,F401  (a real web app on a loopback port)

RECEIVED_STREAM = "contrail:received"


@pytest.fixture
def otlp_receiver(serve, redis_url, tmp_path):
    """Contrail's own OTLP/HTTP receiver, served for real; what it receives goes to RECEIVED_STREAM."""
    from web import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'receiver.db'}", "REDIS_URL": redis_url,
                      "STREAM": RECEIVED_STREAM, "TESTING": True})
    yield serve(app)
    app.extensions["contrail.resources"].close()
