"""Real traces for the CLI tests: spans from two TracingManagers, stored by the real collector."""

from __future__ import annotations

import threading

import pytest
from click.testing import CliRunner

from collector_worker.settings import CollectorSettings
from contrail_cli.main import cli
from tests.support.servers import wait_until


@pytest.fixture
def run_cli():
    """Invoke ``contrail <args>`` in-process; stdout and stderr are kept apart."""
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(cli, list(args), env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def collector_settings(redis_url, sqlite_url, tmp_path):
    stream = f"contrail:cli-test:{tmp_path.name}"  # a stream of its own: strays from other tests never land here
    return CollectorSettings.load(env={}, redis_url=redis_url, database_url=sqlite_url, data_dir=str(tmp_path / "data"),
                                  stream=stream,
                                  quiet_period="0.2s", block="0.2s", consumer_name="cli-test-collector")


@pytest.fixture
def collector(collector_settings):
    """A real collector consuming the private Redis into SQLite, in a thread of this process."""
    from collector_worker.consumer import run_consumer
    from collector_worker.storage import open_engine

    engine = open_engine(collector_settings.database_url)  # schema in place before anyone reads
    stop = threading.Event()
    thread = threading.Thread(target=run_consumer, args=(collector_settings,),
                              kwargs={"stop_event": stop, "engine": engine}, daemon=True)
    thread.start()
    yield collector_settings
    stop.set()
    thread.join(30)
    engine.dispose()
    assert not thread.is_alive()


@pytest.fixture
def stored_trace(collector, tmp_path):
    """One trace across services ``checkout`` → ``payments`` with a failed span; returns its id."""
    from collector_worker.storage import open_engine
    from collector_worker.storage.queries import TraceQuery, search_traces
    from tracer import TracingManager

    common = dict(redis_url=collector.redis_url, stream=collector.stream, data_dir=str(tmp_path / "tracer"),
                  schedule_delay="0.05s")
    checkout = TracingManager(service_name="checkout", **common)
    payments = TracingManager(service_name="payments", **common)
    with checkout.span("POST /orders", kind="server", **{"order.id": 42, "customer.tier": "gold"}) as root:
        with checkout.span("validate cart"):
            pass
        with checkout.span("call payments", kind="client") as call:
            carrier = checkout.inject_span_context(call, {})
            remote = payments.start_span("charge card", parent_span=payments.extract_span_context(carrier),
                                         kind="server", tags={"payment.provider": "acme"})
            payments.finish_span(remote, error=RuntimeError("card declined"))
    trace_id = format(root.get_span_context().trace_id, "032x")
    for manager in (checkout, payments):
        manager.flush(10)
        manager.shutdown()

    engine = open_engine(collector.database_url, migrate=False)

    def finalized():
        with engine.connect() as conn:
            found = search_traces(conn, TraceQuery(limit=5))["traces"]
        return any(t["trace_id"] == trace_id and t["span_count"] == 4 for t in found)

    wait_until(finalized, timeout=30, message="the collector to store and finalize the trace")
    engine.dispose()
    return trace_id


def db_args(settings) -> list[str]:
    return ["--database-url", settings.database_url]
