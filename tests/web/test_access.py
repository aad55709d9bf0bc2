"""Access control, health probes, status and Prometheus metrics."""

from __future__ import annotations


import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otlp_encode
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.support.servers import free_port
from tests.web.test_otlp import finished_spans

TOKENS = {"API_TOKEN": "admin-secret", "READ_TOKEN": "reader-secret", "INGEST_TOKEN": "ingest-secret"}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(make_app):
    return make_app(**TOKENS).test_client()


def protobuf_body():
    return otlp_encode(finished_spans()).SerializeToString()


def test_without_tokens_everything_is_open(client):
    assert client.get("/api/v1/traces").status_code == 200
    assert client.get("/metrics").status_code == 200
    assert client.post("/v1/traces", data=protobuf_body(), content_type="application/x-protobuf").status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/traces", "/api/v1/services", "/metrics", "/api/v1/status"])
def test_reads_need_a_token(secured, path):
    response = secured.get(path)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = secured.get(path, headers=bearer("guess"))
    assert wrong.status_code == 401 and "invalid_token" in wrong.headers["WWW-Authenticate"]
    assert secured.get(path, headers={"Authorization": "Basic YTpi"}).status_code == 401
    assert secured.get(path, headers=bearer("admin-secret")).status_code == 200
    assert secured.get(path, headers=bearer("reader-secret")).status_code == 200
    refused = secured.get(path, headers=bearer("ingest-secret"))
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden"


def test_ingest_needs_the_ingest_or_api_token(secured):
    body = protobuf_body()
    post = lambda headers: secured.post("/v1/traces", data=body, content_type="application/x-protobuf",  # noqa: E731
                                        headers=headers)
    assert post({}).status_code == 401
    assert post(bearer("reader-secret")).status_code == 403
    assert post(bearer("ingest-secret")).status_code == 200
    assert post(bearer("admin-secret")).status_code == 200


def test_read_token_cannot_write_the_api(secured):
    response = secured.post("/api/v1/traces", headers=bearer("reader-secret"))
    assert response.status_code == 403
    assert secured.post("/api/v1/traces", headers=bearer("admin-secret")).status_code == 405


def test_probes_and_spec_stay_open(secured):
    assert secured.get("/healthz").status_code == 200
    assert secured.get("/readyz").status_code == 200
    assert secured.get("/api/v1/openapi.json").status_code == 200


def test_official_exporter_with_token_header(make_app, serve, redis_url):
    base = serve(make_app(**TOKENS))
    spans = finished_spans()
    denied = OTLPSpanExporter(endpoint=base + "/v1/traces", timeout=5)
    assert denied.export(spans) == SpanExportResult.FAILURE
    allowed = OTLPSpanExporter(endpoint=base + "/v1/traces", headers={"Authorization": "Bearer ingest-secret"},
                               timeout=5)
    assert allowed.export(spans) == SpanExportResult.SUCCESS
    import redis

    assert redis.Redis.from_url(redis_url).xlen("contrail:spans") == 1


def test_readyz_reports_what_is_down(make_app, client):
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json() == {"status": "ready",
                                                              "checks": {"database": "ok", "redis": "ok"}}
    down = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client().get("/readyz")
    assert down.status_code == 503
    body = down.get_json()
    assert body["status"] == "not_ready" and body["checks"]["database"] == "ok"
    assert "Connection" in body["checks"]["redis"]


def test_status_and_metrics_read_the_stream(client, dataset, redis_url):
    client.post("/v1/traces", data=protobuf_body(), content_type="application/x-protobuf")
    assert client.get("/api/v1/status").get_json()["storage"] is None  # the status bar's poll counts no rows
    assert client.get("/api/v1/status?storage=maybe").status_code == 400
    status = client.get("/api/v1/status?storage=true").get_json()
    assert status["stream"]["stream_length"] == 1 and status["database"] == "ok"
    assert status["last_finalized_ns"] > 0 and status["last_finalized_time"].endswith("Z")
    tables = {t["name"]: t for t in status["storage"]["tables"]}
    assert tables["traces"]["rows"] == 5 and tables["trace_blocks"]["rows"] == 5 and tables["names"]["rows"] > 0
    assert tables["traces"]["oldest_ns"] == dataset.base_ns
    assert tables["traces"]["newest_ns"] == dataset.spans["orphan"]["start_ns"]  # the latest trace to start
    assert tables["stats"]["oldest_ns"] is None and tables["llm_usage"]["rows"] == 0
    assert status["storage"]["total_bytes"] > 0
    if status["storage"]["bytes_source"] != "page_count":
        assert tables["traces"]["bytes"] > 0
    client.get("/api/v1/traces")
    text = client.get("/metrics").get_data(as_text=True)
    assert "contrail_stream_up 1.0" in text
    assert "contrail_stream_stream_length 1.0" in text and "contrail_stream_lag 1.0" in text
    assert "contrail_stream_dead_letters 0.0" in text
    assert 'contrail_api_request_duration_seconds_count{method="GET",route="/api/v1/traces",status="200"} 1.0' \
        in text
    assert "contrail_otlp_spans_received_total 2.0" in text


def test_tracer_reports_reach_status_metrics_and_their_route(client, redis_url, tmp_path):
    """A real TracingManager that drops spans (tiny queue) and one that samples everything out."""
    from tracer import TracingManager

    common = dict(redis_url=redis_url, data_dir=str(tmp_path), report_interval="0.1s")
    busy = TracingManager(service_name="busy", max_queue_size=2, schedule_delay=30, **common)
    quiet = TracingManager(service_name="quiet", sample_rate=0.0, **common)
    for manager in (busy, quiet):
        for _ in range(5):
            manager.finish_span(manager.start_span("work"))
        manager.shutdown()  # the last report is written at shutdown

    status = client.get("/api/v1/status").get_json()["tracers"]
    assert status["instances"] == 2
    assert status["spans_dropped"] == 3 and status["spans_sampled_out"] == 5 and status["spans_exported"] == 2
    assert status["services"]["busy"]["spans_dropped_queue_full"] == 3
    text = client.get("/metrics").get_data(as_text=True)
    assert 'contrail_tracer_spans_dropped{service="busy"} 3.0' in text
    assert 'contrail_tracer_spans_sampled_out{service="quiet"} 5.0' in text
    assert 'contrail_tracer_instances{service="quiet"} 1.0' in text
    listed = client.get("/api/v1/tracers").get_json()["tracers"]
    assert sorted((r["service"], r["spans_exported"]) for r in listed) == [("busy", 2), ("quiet", 0)]


def test_collector_reports_reach_status_and_metrics(client, redis_url):
    import redis

    from collector_worker.reports import build_collector_report, write_collector_report
    from web.settings import WebSettings

    server = redis.Redis.from_url(redis_url)
    for name, dropped in (("collector-a", 7), ("collector-b", 5)):
        settings = WebSettings.load(env={}, redis_url=redis_url, consumer_name=name)
        write_collector_report(server, settings, build_collector_report(
            {"spans_stored": 100, "dead_lettered": 1}, {"finalized": 20}, {"kept": 3, "dropped": dropped}))
    server.close()
    collectors = client.get("/api/v1/status").get_json()["collectors"]
    assert collectors["instances"] == 2 and collectors["traces_tail_dropped"] == 12
    assert collectors["spans_stored"] == 200 and collectors["traces_finalized"] == 40
    text = client.get("/metrics").get_data(as_text=True)
    assert 'contrail_collector_traces_tail_dropped_total{consumer="collector-a"} 7.0' in text
    assert 'contrail_collector_dead_lettered_total{consumer="collector-b"} 1.0' in text


def test_metrics_survive_a_dead_redis(make_app):
    client = make_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").test_client()
    response = client.get("/metrics")
    assert response.status_code == 200 and "contrail_stream_up 0.0" in response.get_data(as_text=True)
    status = client.get("/api/v1/status").get_json()
    assert "error" in status["stream"] and "error" in status["tracers"] and "error" in status["collectors"]
    assert client.get("/api/v1/tracers").get_json()["error"]["code"] == "unavailable"


@pytest.mark.parametrize("host", ["localhost", "localhost:8680", "127.0.0.1:8680", "[::1]:8680", "ui.localhost"])
def test_open_app_on_loopback_answers_local_host_names(client, host):
    assert client.get("/api/v1/traces", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("path", ["/api/v1/traces", "/", "/metrics"])
def test_open_app_on_loopback_refuses_other_host_names(client, path):
    """A page whose DNS name was re-pointed at 127.0.0.1 (DNS rebinding) must not read the open API."""
    response = client.get(path, headers={"Host": "attacker.example:8680"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "forbidden_host"
    refused = client.post("/v1/traces", data=protobuf_body(), content_type="application/x-protobuf",
                          headers={"Host": "attacker.example"})
    assert refused.status_code == 403


def test_with_a_token_any_host_name_is_served(make_app):
    tokened = make_app(**TOKENS).test_client()
    assert tokened.get("/api/v1/traces", headers={"Host": "traces.example", **bearer("reader-secret")}).status_code == 200


@pytest.fixture
def network_app(make_app):
    """An open app bound to all interfaces (``--host 0.0.0.0 --insecure``), as the old compose file ran it."""
    import dataclasses

    from web import create_app

    built = []

    def build(**changes):
        settings = dataclasses.replace(make_app().extensions["contrail.settings"], web_host="0.0.0.0", **changes)
        built.append(create_app(settings=settings))
        return built[-1].test_client()

    yield build
    for app in built:
        app.extensions["contrail.resources"].close()


def test_open_app_bound_to_all_interfaces_refuses_rebound_names(network_app):
    """DNS rebinding works against any bind address: without a token, a name is answered only when allowed."""
    client = network_app()
    refused = client.get("/api/v1/traces", headers={"Host": "attacker.example:8680"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "forbidden_host"
    for host in ("localhost:8680", "127.0.0.1:8680", "192.0.2.7:8680", "[2001:db8::7]:8680"):
        assert client.get("/api/v1/traces", headers={"Host": host}).status_code == 200, host


def test_allowed_hosts_setting_admits_listed_names(network_app):
    client = network_app(web_allowed_hosts="traces.example, ui.internal.")
    assert client.get("/api/v1/traces", headers={"Host": "traces.example"}).status_code == 200
    assert client.get("/api/v1/traces", headers={"Host": "UI.internal:8680"}).status_code == 200
    assert client.get("/api/v1/traces", headers={"Host": "other.example"}).status_code == 403


def test_request_metrics_keep_client_chosen_methods_out_of_their_labels(client):
    """Every label value is a new time series kept for the life of the worker: a client inventing methods
    must not grow them without bound."""
    for i in range(20):
        assert client.open("/api/v1/traces", method=f"X{i}METHOD").status_code == 405
        assert client.open(f"/no/such/path/{i}", method="GET").status_code == 404
    text = client.get("/metrics").get_data(as_text=True)
    series = [line for line in text.splitlines() if line.startswith("contrail_api_request_duration_seconds_count")]
    assert not any("X1METHOD" in line for line in series)
    assert any('method="other"' in line for line in series)
    unmatched = [line for line in series if 'route="<unmatched>"' in line]
    assert len(unmatched) == 2, unmatched  # 405 for the invented methods, 404 for the unknown paths
