"""The Metrics page in Chromium: a real tracer records metrics, a real collector stores them, the page charts
them and its exemplars open their trace."""

from __future__ import annotations

import pytest

from tests.support.servers import wait_until
from tracer import TracingManager

from .conftest import running_stack, screenshot, watched_page


@pytest.fixture(scope="module")
def metrics_stack(chromium, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("metrics-stack")
    with running_stack(workdir) as (base_url, redis_url, _, collector, log_path):
        tracing = TracingManager(service_name="shop", redis_url=redis_url, spool_dir=str(workdir / "spool"),
                                 metrics_interval=3600)
        latency = tracing.metrics.histogram("llm_request_duration", unit="s", description="LLM latency")
        with tracing.span("answer") as span:
            trace_id = format(span.get_span_context().trace_id, "032x")
            for i in range(200):
                latency.record(0.01 * (i + 1), model="gpt")
        tracing.metrics.counter("llm_requests_total").increment(200, model="gpt")
        assert tracing.flush(10)
        tracing.shutdown()
        import requests

        def stored():
            assert collector.poll() is None, log_path.read_text()
            body = requests.get(f"{base_url}/api/v1/metrics/llm_request_duration", timeout=10).json()
            return body["points"]

        wait_until(stored, timeout=60, message="the collector to store the metrics")
        yield base_url, trace_id


@pytest.fixture
def metrics_page(chromium, metrics_stack):
    with watched_page(chromium, metrics_stack[0]) as page:
        yield page


def test_metrics_page_charts_a_histogram_and_its_exemplars_open_the_trace(metrics_page, metrics_stack):
    page, (_, trace_id) = metrics_page, metrics_stack
    page.goto("/app-metrics?name=llm_request_duration&lookback=1h")
    page.wait_for_function("window.__contrail && window.__contrail.metricsReady")
    assert page.locator("#metrics-error").is_hidden(), page.locator("#metrics-error").inner_text()
    names = page.locator("#m-name option").all_inner_texts()
    assert set(names) == {"llm_request_duration", "llm_requests_total"}
    assert page.locator("#m-service option").all_inner_texts() == ["All services", "shop"]
    assert "histogram" in page.locator("#metric-about").inner_text()
    page.wait_for_function("document.getElementById('chart-metric').data && "
                           "document.getElementById('chart-metric').data.length === 4")  # p50, p95, p99, exemplars
    legend = page.evaluate("document.getElementById('chart-metric').data.map((t) => t.name)")
    assert legend == ["p50", "p95", "p99", "exemplars"]
    p95 = page.evaluate("document.getElementById('chart-metric').data[1].y[0]")
    assert p95 == pytest.approx(1.90, rel=0.03)  # the 190th of 200 values 0.01 .. 2.0
    screenshot(page, "metrics")

    page.select_option("#m-name", "llm_requests_total")
    page.wait_for_function("document.getElementById('chart-metric').data.length === 1")
    assert page.evaluate("document.getElementById('chart-metric').data[0].name") == "rate (per second)"

    page.select_option("#m-name", "llm_request_duration")
    link = page.locator("#exemplar-list a.exemplar-link").first
    link.wait_for()
    link.click()
    page.wait_for_url(f"**/trace/{trace_id}**")
    metrics_page.console.assert_clean()
