"""The tracer's otlp exporter into another Contrail that wants a token: headers from contrail.toml reach the
receiver and the spans a second collector's database; a wrong token is counted as failed, never stored."""

from __future__ import annotations

from tests.e2e.test_forwarding import _authorized_trace
from tests.support.servers import wait_until
from tests.web.conftest import serve  # noqa: F401  (a real web app on a loopback port)
from tracer import TracingManager


def _work(tracing):
    with tracing.span("handle", kind="server") as root:
        with tracing.span("render"):
            pass
    return format(root.get_span_context().trace_id, "032x")


def test_otlp_export_with_headers_from_the_config_file(stack_env, start_collector, serve, redis_url,  # noqa: F811
                                                       tmp_path, monkeypatch):
    from web import create_app

    second_db = f"sqlite:///{tmp_path / 'second.db'}"
    start_collector({**stack_env, "CONTRAIL_STREAM": "contrail:second", "CONTRAIL_DATABASE_URL": second_db})
    receiver_app = create_app({"DATABASE_URL": second_db, "REDIS_URL": redis_url, "STREAM": "contrail:second",
                               "INGEST_TOKEN": "s3cret", "API_TOKEN": "reader", "TESTING": True})
    endpoint = serve(receiver_app) + "/v1/traces"
    config = tmp_path / "contrail.toml"
    config.write_text(f'[tracer]\nexporters = ["redis", "otlp"]\notlp_endpoint = "{endpoint}"\n'
                      '[tracer.otlp_headers]\nauthorization = "Bearer s3cret"\n')
    monkeypatch.setenv("CONTRAIL_CONFIG", str(config))

    tracing = TracingManager(service_name="otlp-service", redis_url=redis_url, spool_dir=str(tmp_path / "spool"))
    try:
        trace_id = _work(tracing)
        assert tracing.flush(10)
        assert tracing.get_tracer_info()["exporters"]["otlp"] == {"received": 2, "exported": 2, "failed": 0,
                                                                  "last_error": None}
    finally:
        tracing.shutdown()
    body = wait_until(lambda: _authorized_trace(receiver_app.test_client(), trace_id, 2), timeout=60,
                      message="the exported trace in the second DB")
    assert {(s["name"], s["kind"], s["service"]) for s in body["spans"]} == {("handle", "server", "otlp-service"),
                                                                             ("render", "internal", "otlp-service")}

    wrong = TracingManager(service_name="otlp-service", redis_url=redis_url, spool_dir=str(tmp_path / "spool2"),
                           otlp_headers="authorization=Bearer%20wrong")  # a keyword beats the file
    try:
        refused_id = _work(wrong)
        wrong.flush(10)
        otlp = wrong.get_tracer_info()["exporters"]["otlp"]
    finally:
        wrong.shutdown()
    assert (otlp["exported"], otlp["failed"]) == (0, 2) and "wrong" not in repr(wrong.settings)
    assert _authorized_trace(receiver_app.test_client(), refused_id, 2) is None
