"""The services page in Chromium shows a service's system metrics (CPU, RSS, threads, open files) next to its
RED charts: a real tracer records them, a real collector stores them."""

from __future__ import annotations

import pytest
import requests

from tests.support.servers import wait_until
from tracer import TracingManager

from .conftest import running_stack, screenshot, watched_page


@pytest.fixture(scope="module")
def system_stack(chromium, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("system-stack")
    with running_stack(workdir) as (base_url, redis_url, _, collector, log_path):
        shop = TracingManager(service_name="shop", redis_url=redis_url, spool_dir=str(workdir / "spool"),
                              system_metrics=True, metrics_interval=1)
        quiet = TracingManager(service_name="quiet", redis_url=redis_url, spool_dir=str(workdir / "spool"))
        for tracing in (shop, quiet):
            with tracing.span("GET /items"):
                pass
        wait_until(lambda: shop.get_tracer_info()["metric_points_exported"] >= 12, timeout=30,
                   message="three exports of the system metrics")
        for tracing in (shop, quiet):
            assert tracing.flush(10)
            tracing.shutdown()

        def stored():
            assert collector.poll() is None, log_path.read_text()
            services = {s["name"] for s in requests.get(f"{base_url}/api/v1/services", timeout=10).json()["services"]}
            rss = requests.get(f"{base_url}/api/v1/metrics/process.memory.rss?service=shop", timeout=10).json()
            return {"shop", "quiet"} <= services and rss["points"]

        wait_until(stored, timeout=60, message="the collector to store the traces and system metrics")
        yield base_url


@pytest.fixture
def services_page(chromium, system_stack):
    with watched_page(chromium, system_stack, height=1400) as page:
        yield page


def test_the_services_page_charts_a_services_cpu_and_memory_beside_its_red_charts(services_page, system_stack):
    page = services_page
    rss = requests.get(f"{system_stack}/api/v1/metrics/process.memory.rss?service=shop&lookback=1h",
                       timeout=10).json()["points"]
    page.goto("/services?service=shop&lookback=1h")
    page.wait_for_function("window.__contrail && window.__contrail.servicesReady")
    assert page.evaluate("window.__contrail.systemMetrics.service") == "shop"
    assert page.locator("#system-charts").is_visible() and page.locator("#system-empty").is_hidden()
    names = page.evaluate("document.getElementById('chart-rss').data.map((t) => t.name)")
    assert names == ["MB (mean)", "MB (max)"]
    shown = page.evaluate("document.getElementById('chart-rss').data[0].y")
    assert shown == pytest.approx([p["mean"] / 1e6 for p in rss], rel=1e-6) and min(shown) > 10
    cpu = page.evaluate("document.getElementById('chart-cpu').data.map((t) => t.name)")
    assert cpu == ["% (mean)", "% (max)"]
    threads = page.evaluate("document.getElementById('chart-threads').data.map((t) => t.name)")
    assert threads == ["threads (mean)", "open files (mean)"]
    assert page.locator("#chart-rate").is_visible()  # beside the RED charts of the same service
    screenshot(page, "services-system")

    page.select_option("#s-service", "quiet")
    page.locator("#services-form button[type=submit]").click()
    page.wait_for_function("window.__contrail.systemMetrics && window.__contrail.systemMetrics.service === 'quiet'")
    assert page.locator("#system-charts").is_hidden()
    assert page.locator("#system-empty").inner_text().startswith("No system metrics from quiet in this window")

    page.select_option("#s-service", "")
    page.locator("#services-form button[type=submit]").click()
    page.wait_for_function("window.__contrail.systemMetrics === null")
    assert page.locator("#system-empty").inner_text().startswith("Pick a service")
    services_page.console.assert_clean()
