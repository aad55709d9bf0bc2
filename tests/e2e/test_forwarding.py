"""A collector forwarding to an OTLP endpoint: what it stores (Contrail's own receiver feeding a second
collector), only what tail sampling kept (into an authenticated Contrail), and an endpoint that is down
(ingest goes on, the loss is counted)."""

from __future__ import annotations

import json

import redis

from tests.e2e.test_original_api import _trace
from tests.support.servers import wait_until
from tests.web.conftest import serve  # noqa: F401  (a real web app on a loopback port)
from tracer import TracingManager
from web.settings import WebSettings


def _send_trace(redis_url, tmp_path) -> str:
    tracing = TracingManager(service_name="fwd-service", enabled=True, redis_url=redis_url,
                             spool_dir=str(tmp_path / "spool"))
    try:
        parent = tracing.start_span("request")
        child = tracing.start_span("query", parent_span=parent)
        tracing.finish_span(child, error=RuntimeError("connection reset"))
        tracing.finish_span(parent)
        assert tracing.flush(10)
        return format(parent.get_span_context().trace_id, "032x")
    finally:
        tracing.shutdown()


def _shape(trace):
    """What forwarding must carry over unchanged, span by span."""
    return {(s["name"], s["span_id"], s["parent_span_id"], s["kind"], s["status"], s["status_message"],
             s["start_ns"], s["end_ns"], s["service"]) for s in trace["spans"]}


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

    first = create_app(settings=WebSettings.load(env=stack_env)).test_client()
    body = wait_until(lambda: _trace(first, trace_id, 2), timeout=60, message="the trace in the first DB")
    copy = wait_until(lambda: _trace(receiver_app.test_client(), trace_id, 2), timeout=60,
                      message="the forwarded trace in the second DB")
    assert _shape(copy) == _shape(body)
    assert {s["name"]: s["status"] for s in copy["spans"]} == {"request": "unset", "query": "error"}
    assert {s["service"] for s in copy["spans"]} == {"fwd-service"}
    wait_until(lambda: [r for r in _collector_report(redis_url) if r["forwarded_spans"] == 2], timeout=60,
               message="forwarded_spans in the collector report")


def test_an_endpoint_that_is_down_does_not_stop_ingest(stack_env, start_collector, redis_url, tmp_path):
    from web import create_app

    start_collector({**stack_env, "CONTRAIL_FORWARD_ENDPOINT": "http://127.0.0.1:9/v1/traces",
                     "CONTRAIL_REPORT_INTERVAL": "0.5s"})

    trace_id = _send_trace(redis_url, tmp_path)

    first = create_app(settings=WebSettings.load(env=stack_env)).test_client()
    wait_until(lambda: _trace(first, trace_id, 2), timeout=60, message="the trace stored while forwarding fails")
    [report] = wait_until(lambda: [r for r in _collector_report(redis_url) if r["forward_dropped"] == 2],
                          timeout=60, message="forward_dropped in the collector report")
    assert report["forward_errors"] >= 1 and report["forwarded_spans"] == 0 and report["spans_stored"] == 2


def _authorized_trace(client, trace_id, count):
    response = client.get(f"/api/v1/traces/{trace_id}", headers={"Authorization": "Bearer reader"})
    if response.status_code != 200:
        return None
    body = response.get_json()
    return body if body["summary"]["span_count"] == count else None


def test_only_kept_traces_are_forwarded_into_an_authenticated_contrail(stack_env, start_collector, serve,  # noqa: F811
                                                                       redis_url, tmp_path):
    """Tail sampling keeps errors only. The error trace arrives complete, its late span once more; the
    ordinary trace never arrives; the receiver wants its ingest token, sent through forward_headers. The
    collector reads these settings from its config file."""
    from web import create_app

    second_db = f"sqlite:///{tmp_path / 'second.db'}"
    start_collector({**stack_env, "CONTRAIL_STREAM": "contrail:second", "CONTRAIL_DATABASE_URL": second_db,
                     "CONTRAIL_REPORT_INTERVAL": "0.5s"})
    receiver_app = create_app({"DATABASE_URL": second_db, "REDIS_URL": redis_url, "STREAM": "contrail:second",
                               "INGEST_TOKEN": "s3cret", "API_TOKEN": "reader", "TESTING": True})
    receiver = serve(receiver_app)
    config = tmp_path / "collector.toml"  # the forwarding and sampling settings from a config file
    config.write_text(f'[collector]\nforward_endpoint = "{receiver}/v1/traces"\nforward_mode = "kept"\n'
                      'tail_sampling = true\ntail_keep_ratio = 0\ntail_slow_threshold = "1h"\n'
                      '[collector.forward_headers]\nauthorization = "Bearer s3cret"\n')
    first = start_collector({**stack_env, "CONTRAIL_CONFIG": str(config), "CONTRAIL_REPORT_INTERVAL": "0.5s"})
    first_api = create_app(settings=WebSettings.load(env=stack_env)).test_client()
    second_api = receiver_app.test_client()

    tracing = TracingManager(service_name="kept-service", enabled=True, redis_url=redis_url,
                             spool_dir=str(tmp_path / "spool"))
    try:
        failing = tracing.start_span("checkout")
        tracing.finish_span(tracing.start_span("charge", parent_span=failing), error=ValueError("card declined"))
        tracing.finish_span(failing)
        ordinary = tracing.start_span("browse")
        tracing.finish_span(tracing.start_span("list", parent_span=ordinary))
        tracing.finish_span(ordinary)
        assert tracing.flush(10)
        kept_id, dropped_id = (format(s.get_span_context().trace_id, "032x") for s in (failing, ordinary))
        wait_until(lambda: _trace(first_api, kept_id, 2), timeout=60, message="the error trace in the first DB")
        wait_until(lambda: _authorized_trace(second_api, kept_id, 2), timeout=60,
                   message="the error trace forwarded")

        tracing.finish_span(tracing.start_span("refund", parent_span=failing))  # late: after finalization
        assert tracing.flush(10)
    finally:
        tracing.shutdown()
    body = wait_until(lambda: _trace(first_api, kept_id, 3), timeout=60, message="the late span in the first DB")
    copy = wait_until(lambda: _authorized_trace(second_api, kept_id, 3), timeout=60,
                      message="the late span forwarded")
    assert _shape(copy) == _shape(body)
    wait_until(lambda: [r for r in _collector_report(redis_url) if r["traces_tail_dropped"] >= 1], timeout=60,
               message="the ordinary trace dropped by tail sampling")

    first.terminate()  # a clean stop sends what is queued and writes the final report
    first.wait(30)
    [report] = _collector_report(redis_url)
    assert (report["forwarded_spans"], report["forward_errors"], report["forward_dropped"]) == (3, 0, 0)
    wait_until(lambda: [r for r in _collector_report(redis_url, "contrail:second") if r["spans_stored"] == 3],
               timeout=60, message="the second collector storing what it received")
    assert second_api.get(f"/api/v1/traces/{dropped_id}", headers={"Authorization": "Bearer reader"}).status_code \
        == 404
    assert _trace(first_api, dropped_id, 2) is None  # dropped here too
