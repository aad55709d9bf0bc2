"""The code-level flame graph of a profiled span in Chromium: a real tracer profiles a request, a real collector
stores the profile with its trace, the trace page draws the flame graph and names the hot function."""

from __future__ import annotations

import hashlib
import time

import pytest
import requests

from tests.support.servers import wait_until
from tracer import TracingManager

from .conftest import running_stack, screenshot, watched_page


def render_invoice(lines: int) -> bytes:
    digest = b"invoice"
    for _ in range(lines):
        digest = hashlib.sha256(digest).digest()
    return digest


def fetch_customer() -> None:
    time.sleep(0.1)


def build_invoice() -> None:
    fetch_customer()
    deadline = time.perf_counter() + 0.4
    while time.perf_counter() < deadline:
        render_invoice(3000)


@pytest.fixture(scope="module")
def profile_stack(chromium, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("profile-stack")
    with running_stack(workdir) as (base_url, redis_url, _, collector, log_path):
        tracing = TracingManager(service_name="billing", redis_url=redis_url, spool_dir=str(workdir / "spool"),
                                 system_metrics=True, metrics_interval=1)
        with tracing.span("POST /invoice"):
            with tracing.span("build invoice") as span:
                with tracing.profile("invoice"):
                    build_invoice()
                context = span.get_span_context()
        trace_id, span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
        assert tracing.flush(10)
        tracing.shutdown()

        def stored():
            assert collector.poll() is None, log_path.read_text()
            if requests.get(f"{base_url}/api/v1/traces/{trace_id}", timeout=10).status_code != 200:
                return False
            rss = requests.get(f"{base_url}/api/v1/metrics/process.memory.rss?service=billing", timeout=10).json()
            profiles = requests.get(f"{base_url}/api/v1/traces/{trace_id}/profiles", timeout=10).json()["profiles"]
            return profiles and rss["points"]

        wait_until(stored, timeout=60, message="the collector to store the trace, its profile and system metrics")
        yield base_url, trace_id, span_id


@pytest.fixture
def profile_page(chromium, profile_stack):
    with watched_page(chromium, profile_stack[0]) as page:
        yield page


def test_the_flame_graph_of_a_profiled_span_names_the_function_that_burned_its_time(profile_page, profile_stack):
    page, (_, trace_id, span_id) = profile_page, profile_stack
    page.goto(f"/trace/{trace_id}?span={span_id}")
    page.wait_for_function("window.__contrail && window.__contrail.profilesReady")
    assert page.locator("#tab-profile").is_visible()
    button = page.locator("#detail-body .profile-link button")
    assert button.inner_text() == "Flame graph: invoice"
    assert page.locator("#detail-body .profile-link code").inner_text().startswith("render_invoice (")
    button.click()
    assert page.locator("#view-profile").is_visible() and page.locator("#view-waterfall").is_hidden()
    assert page.evaluate("window.__contrail.profileShown") == span_id

    frames = page.locator("#code-flame .cf-frame")
    root_samples = int(frames.first.get_attribute("data-samples"))
    hot = page.locator('#code-flame .cf-frame[data-name^="render_invoice ("]')
    assert hot.count() >= 1
    assert int(hot.first.get_attribute("data-samples")) > root_samples / 2
    assert "render_invoice" in (hot.first.locator("text").text_content() or "")  # wide enough to be labelled
    parent = page.locator('#code-flame .cf-frame[data-name^="build_invoice ("]')
    assert int(parent.first.get_attribute("data-samples")) >= int(hot.first.get_attribute("data-samples"))
    first_row = page.locator("#profile-functions tbody tr").first
    assert first_row.locator("code").inner_text() == "render_invoice"
    screenshot(page, "profile")

    hot.first.click()  # zoom to the hot function: it becomes the full-width frame
    assert page.evaluate("window.__contrail.codeFlameZoom").startswith("render_invoice (")
    width = page.evaluate("document.querySelector('#code-flame svg').getAttribute('width')")
    zoomed = page.locator('#code-flame .cf-frame[data-name^="render_invoice ("] rect').last
    assert float(zoomed.get_attribute("width")) >= float(width) - 1
    page.locator("#profile-reset").click()
    assert page.locator('#code-flame .cf-frame[data-name^="fetch_customer ("]').count() == 1
    profile_page.console.assert_clean()


def test_the_services_page_shows_an_operations_latency_cpu_and_merged_flame_graph_together(profile_page):
    page = profile_page
    page.goto("/services?service=billing&operation=build%20invoice&lookback=1h")
    page.wait_for_function("window.__contrail && window.__contrail.servicesReady")
    assert page.evaluate("window.__contrail.operationProfiles") == 1
    assert page.locator("#profile-panel").is_visible()
    assert page.locator("#op-profile-summary").inner_text().startswith("1 profile, ")
    assert page.locator("#op-functions tbody tr").first.locator("code").inner_text() == "render_invoice"
    assert page.locator('#op-flame .cf-frame[data-name^="render_invoice ("]').count() >= 1
    assert page.locator("#system-charts").is_visible() and page.locator("#chart-latency").is_visible()
    page.locator("#profile-panel").scroll_into_view_if_needed()
    screenshot(page, "operation")

    page.goto("/services?service=billing&operation=POST%20%2Finvoice&lookback=1h")  # no profile of its own
    page.wait_for_function("window.__contrail && window.__contrail.servicesReady")
    assert page.evaluate("window.__contrail.operationProfiles") == 0
    assert page.locator("#profile-panel").is_hidden()
    profile_page.console.assert_clean()
