"""A collector forwarding what it stores to an OTLP endpoint: Contrail's own receiver feeding a second
collector, and an endpoint that is down (ingest goes on, the loss is counted)."""

from __future__ import annotations

import json

import redis

from tests.e2e.test_original_api import _trace
from tests.support.servers import wait_until
from tests.web.conftest import serve  # noqa: F401  (a real web app on a loopback port)
from tracer import TracingManager
from tracer.settings import Settings


def _send_trace(redis_url, tmp_path) -> str:
    tracing = TracingManager(service_name="fwd-service", enabled=True, redis_url=redis_url,
                             spool_dir=str(tmp_path / "spool"))
    try:
        parent = tracing.start_span("request")
        child = tracing.start_span("query", parent_span=parent)
        tracing.finish_span(child)
        tracing.finish_span(parent)
        assert tracing.flush(10)
        return format(parent.get_span_context().trace_id, "032x")
    finally:
        tracing.shutdown()


def _collector_report(redis_url, stream="contrail:spans"):
    reports = redis.Redis.from_url(redis_url).hgetall(f"{stream}:collectors")
    return [json.loads(value) for value in reports.values()]


def test_stored_spans_are_forwarded_into_a_second_contrail(stack_env, start_collector, serve,  # noqa: F811
                                                           redis_url, tmp_path):
    from web import create_app

    second_db = f"sqlite:///{tmp_path / 'second.db'}"
    start_collector({**stack_env, "CONTRAIL_STREAM": "contrail:second", "CONTRAIL_DATABASE_URL": second_db})
    receiver_app = create_app({"DATABASE_URL": second_db, "REDIS_URL": redis_url, "STREAM": "contrail:second",
                               "TESTING": True})
    receiver = serve(receiver_app)
    start_collector({**stack_env, "CONTRAIL_FORWARD_ENDPOINT": f"{receiver}/v1/traces",
                     "CONTRAIL_REPORT_INTERVAL": "0.5s"})

    trace_id = _send_trace(redis_url, tmp_path)

    first = create_app(settings=Settings.load(env=stack_env)).test_client()
    body = wait_until(lambda: _trace(first, trace_id, 2), timeout=60, message="the trace in the first DB")
    copy = wait_until(lambda: _trace(receiver_app.test_client(), trace_id, 2), timeout=60,
                      message="the forwarded trace in the second DB")
    assert {(s["name"], s["span_id"], s["parent_span_id"]) for s in copy["spans"]} == \
        {(s["name"], s["span_id"], s["parent_span_id"]) for s in body["spans"]}
    assert {s["service"] for s in copy["spans"]} == {"fwd-service"}
    wait_until(lambda: [r for r in _collector_report(redis_url) if r["forwarded_spans"] == 2], timeout=60,
               message="forwarded_spans in the collector report")


def test_an_endpoint_that_is_down_does_not_stop_ingest(stack_env, start_collector, redis_url, tmp_path):
    from web import create_app

    start_collector({**stack_env, "CONTRAIL_FORWARD_ENDPOINT": "http://127.0.0.1:9/v1/traces",
                     "CONTRAIL_REPORT_INTERVAL": "0.5s"})

    trace_id = _send_trace(redis_url, tmp_path)

    first = create_app(settings=Settings.load(env=stack_env)).test_client()
    wait_until(lambda: _trace(first, trace_id, 2), timeout=60, message="the trace stored while forwarding fails")
    [report] = wait_until(lambda: [r for r in _collector_report(redis_url) if r["forward_dropped"] == 2],
                          timeout=60, message="forward_dropped in the collector report")
    assert report["forward_errors"] >= 1 and report["forwarded_spans"] == 0 and report["spans_stored"] == 2
