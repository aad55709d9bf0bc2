"""The original notes' usage, pasted unchanged, read back from the API of a real collector; the same spans
exported over OTLP (the notes' Jaeger arguments) into Contrail's receiver and a second collector's database."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from tests.support.servers import wait_until
from tests.web.conftest import serve  # noqa: F401  (a real web app on a loopback port)
from tracer import TracingManager
from tracer.log_context import TraceContextFilter
from web.settings import WebSettings

SPANS = {"get_user", "SELECT users", "auth-service /verify", "process_request"}


def _original_usage(tracing, log):
    @tracing.with_tracing("get_user", tags={"component": "user-service"})
    def get_user(user_id):
        with tracing.trace_database_operation("SELECT", "users", f"SELECT * FROM users WHERE id = {user_id}"):
            pass
        with tracing.trace_external_call("auth-service", "/verify"):
            log.warning("slow auth for %s", user_id)
        return {"id": user_id, "name": "Ada"}

    span = tracing.start_span("process_request", tags={"user_id": 7})
    with_parent = tracing.inject_span_context(span, {})
    parent = tracing.extract_span_context(with_parent)
    child = tracing.start_span("cache_lookup", parent_span=parent)
    tracing.finish_span(child, logs={"event": "cache_miss", "key": "user:7"})
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=False):
        get_user(7)
    tracing.finish_span(span, tags={"http.status_code": 200}, logs=[{"event": "response_sent", "bytes": 512}])
    return span.get_span_context()


def _trace(client, trace_id, count):
    response = client.get(f"/api/v1/traces/{trace_id}")
    if response.status_code != 200:
        return None
    body = response.get_json()
    return body if body["summary"]["span_count"] == count else None


def test_original_usage_reads_back_from_the_api_and_from_a_second_contrail(stack_env, start_collector, serve,  # noqa: F811
                                                                           redis_url, tmp_path):
    from web import create_app

    start_collector(stack_env)
    second_db = f"sqlite:///{tmp_path / 'second.db'}"
    start_collector({**stack_env, "CONTRAIL_STREAM": "contrail:second", "CONTRAIL_DATABASE_URL": second_db})
    receiver_app = create_app({"DATABASE_URL": second_db, "REDIS_URL": redis_url, "STREAM": "contrail:second",
                               "TESTING": True})
    receiver = urlsplit(serve(receiver_app))

    lines = []
    log = logging.getLogger("user-service.e2e")
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((record.trace_id, record.getMessage()))
    handler.addFilter(TraceContextFilter())
    log.addHandler(handler)
    tracing = TracingManager(service_name="user-service", jaeger_host=receiver.hostname, jaeger_port=receiver.port,
                             enable_tracing=True, redis_url=redis_url, spool_dir=str(tmp_path / "spool"))
    try:
        context = _original_usage(tracing, log)
        info = tracing.get_tracer_info()
        assert info["tracer_initialized"] is True and info["enabled"] is True
        assert tracing.flush(10)
        info = tracing.get_tracer_info()
        assert info["spans_exported"] == 5 and info["exporters"]["jaeger"]["exported"] == 5
    finally:
        tracing.shutdown()
        log.removeHandler(handler)

    [(logged_trace_id, message)] = lines
    assert message == "slow auth for 7"
    first = create_app(settings=WebSettings.load(env=stack_env)).test_client()
    body = wait_until(lambda: _trace(first, logged_trace_id, 5), timeout=60, message="the trace from its log line")
    assert format(context.trace_id, "032x") == logged_trace_id
    spans = {s["name"]: s for s in body["spans"]}
    assert set(spans) == SPANS | {"cache_lookup"}
    assert spans["get_user"]["attributes"]["success"] is True and spans["get_user"]["status"] == "ok"
    assert spans["get_user"]["parent_span_id"] == spans["process_request"]["span_id"]
    assert spans["SELECT users"]["attributes"]["db.query.text"] == "SELECT * FROM users WHERE id = ?"
    assert [(e["name"], e["attributes"]) for e in spans["cache_lookup"]["events"]] == [("cache_miss",
                                                                                       {"key": "user:7"})]
    assert [(e["name"], e["attributes"]) for e in spans["process_request"]["events"]] == [("response_sent",
                                                                                         {"bytes": 512})]

    second = receiver_app.test_client()
    copy = wait_until(lambda: _trace(second, logged_trace_id, 5), timeout=60, message="the trace in the second DB")
    assert {(s["name"], s["span_id"], s["parent_span_id"]) for s in copy["spans"]} == \
        {(s["name"], s["span_id"], s["parent_span_id"]) for s in body["spans"]}
