"""The dashboard, driven with real clicks in headless Chromium against real collected traces."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import ROOT

from .conftest import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

DOC_IMAGES = ROOT / "docs" / "images"


def ready(page, flag: str):
    page.wait_for_function(f"window.__contrail && window.__contrail.{flag}")


def test_search_open_trace_expand_collapse_detail_and_critical_path(page, stack):
    page.goto("/?lookback=1h&service=gateway")
    ready(page, "searchResults !== undefined")
    assert page.locator("#f-service").input_value() == "gateway"  # the form mirrors the URL
    rows = page.locator("#results-body tr")
    assert rows.count() >= 7
    total = stack.api("/traces", service="gateway", lookback="1h", limit=1)["total"]
    assert page.locator("#result-count").inner_text() == f"{total} traces match"  # the total, not the page size
    # errors are marked in the scatter plot and the table
    page.wait_for_function("document.querySelector('#scatter').data && document.querySelector('#scatter').data.length == 2")
    scatter = page.evaluate("document.querySelector('#scatter').data.map(t => [t.name, t.customdata.length])")
    assert dict(scatter)["error"] >= 1 and dict(scatter)["ok"] >= 6
    error_row = page.locator(f'#results-body tr[data-trace-id="{stack.ids["error"]}"]')
    assert "row-error" in error_row.get_attribute("class")

    # sort by duration with a click on the column header: the URL follows
    page.click('#results-table th[data-sort="duration"] button')
    page.wait_for_url("**sort=duration_desc**")
    page.wait_for_function("document.querySelector('#results-table th[data-sort=duration]').getAttribute('aria-sort') === 'descending'")
    durations = page.evaluate("window.__contrail.searchResults")
    assert durations >= 7
    screenshot(page, "search")

    # filter to errors through the form and open the failing trace
    page.select_option("#f-status", "error")
    page.click("#search-submit")
    page.wait_for_url("**status=error**")
    page.wait_for_function("[...document.querySelectorAll('#results-body tr[data-trace-id]')].every(r => r.classList.contains('row-error'))")
    found = {r.get_attribute("data-trace-id") for r in page.locator("#results-body tr[data-trace-id]").all()}
    assert stack.ids["error"] in found and stack.ids["ok"] not in found
    page.click(f'#results-body tr[data-trace-id="{stack.ids["error"]}"] a.trace-link')
    page.wait_for_url(f"**/trace/{stack.ids['error']}")
    ready(page, "traceReady")

    waterfall = page.locator("#waterfall")
    rows = waterfall.locator(".wf-row")
    total = rows.count()
    assert total == stack.api(f"/traces/{stack.ids['error']}")["summary"]["span_count"] == 7
    # errors marked, critical path highlighted, queue wait drawn as its own segment, self time shown
    assert waterfall.locator(".wf-row.is-error").count() >= 1
    assert waterfall.locator(".wf-row.is-critical").count() >= 2
    consumer = waterfall.locator(".wf-row", has_text="run process_order")
    assert consumer.locator(".wf-wait").count() == 1
    assert "self" in consumer.locator(".wf-label").inner_text()
    # span attributes are output-encoded: the markup in the "note" attribute stays text
    assert page.evaluate("window.__xss") is None

    # collapse the root with a click on its caret, expand again with the keyboard
    root = rows.first
    assert root.get_attribute("aria-expanded") == "true"
    root.locator("[data-toggle]").click()
    page.wait_for_function("document.querySelectorAll('#waterfall .wf-row').length === 1")
    assert rows.first.get_attribute("aria-expanded") == "false"
    waterfall.focus()
    page.keyboard.press("ArrowRight")
    page.wait_for_function(f"document.querySelectorAll('#waterfall .wf-row').length === {total}")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    detail = page.locator("#span-detail")
    detail.wait_for(state="visible")
    assert page.locator("#detail-title").inner_text() == "gateway · GET /inventory/42"

    # click the failing span: status, exception and stack trace in the detail panel
    waterfall.locator(".wf-row", has_text="charge card").click()
    page.wait_for_function("document.querySelector('#detail-title').textContent.includes('charge card')")
    body = page.locator("#detail-body")
    assert "card declined" in body.inner_text()
    assert "RuntimeError" in body.locator(".exception").inner_text()
    assert body.locator("pre.stack").count() == 1
    assert f"span={page.evaluate('window.__contrail.selectedSpanId')}" in page.url  # deep link to the span

    # the root's attributes show the markup as text
    waterfall.locator(".wf-row").first.click()
    page.wait_for_function("document.querySelector('#detail-title').textContent.includes('POST /checkout')")
    assert "<img src=x onerror=window.__xss=1>" in body.inner_text()
    assert body.locator("img").count() == 0
    assert "null" not in body.inner_text().split()  # absent fields are left out, not printed

    # critical path only
    page.check("#critical-only")
    critical = waterfall.locator(".wf-row").count()
    assert 2 <= critical < total
    assert waterfall.locator(".wf-row.is-critical").count() == critical
    page.uncheck("#critical-only")

    # search within the trace
    page.fill("#trace-find", "inventory")
    page.wait_for_function("document.querySelectorAll('#waterfall .wf-row.is-match').length >= 2")
    assert "match" in page.locator("#find-count").inner_text()
    page.fill("#trace-find", "")
    screenshot(page, "trace")

    # flame graph and statistics tabs
    page.click("#tab-flame")
    assert page.locator("#view-flame").is_visible()
    assert page.evaluate("document.querySelector('#flame-canvas').width") > 0
    page.click("#tab-stats")
    stats_rows = page.locator("#stats-table tbody tr")
    assert stats_rows.count() == 7  # every span has its own operation here
    assert "charge card" in page.locator("#stats-table").inner_text()
    screenshot(page, "trace-statistics")

    # Copy for AI puts the distilled text on the clipboard
    page.click("#copy-ai")
    page.wait_for_function("document.querySelector('#copy-status').textContent.startsWith('Copied')")
    clipboard = page.evaluate("navigator.clipboard.readText()")
    assert stack.ids["error"][:8] in clipboard or "POST /checkout" in clipboard
    page.console.assert_clean()


def test_compare_two_traces_of_the_same_flow(page, stack):
    page.goto("/?lookback=1h&service=gateway&operation=POST%20/checkout")
    ready(page, "searchResults !== undefined")
    page.check(f'#results-body input[data-trace-id="{stack.ids["ok"]}"]')
    page.check(f'#results-body input[data-trace-id="{stack.ids["slow"]}"]')
    page.click("#compare-selected")
    page.wait_for_url("**/compare?a=*&b=*")
    ready(page, "compareRows")
    assert {page.locator("#c-a").input_value(), page.locator("#c-b").input_value()} == {stack.ids["ok"], stack.ids["slow"]}
    table = page.locator("#compare-table tbody")
    appeared = table.locator('tr[data-change="appeared"]')
    assert appeared.count() == 1 and "recount stock" in appeared.inner_text()
    slower = table.locator('tr[data-change="slower"]', has_text="SELECT stock")
    assert slower.count() == 1
    assert "slower" in page.locator("#compare-summary").inner_text()
    screenshot(page, "compare")
    page.console.assert_clean()


def test_services_charts_and_service_map(page, stack):
    page.goto("/services?lookback=1h")
    ready(page, "servicesReady")
    for chart in ("chart-rate", "chart-errors", "chart-latency"):
        page.wait_for_function(f"document.getElementById('{chart}').data && document.getElementById('{chart}').data.length > 0")
        points = page.evaluate(f"document.getElementById('{chart}').data.reduce((n, t) => n + t.y.length, 0)")
        assert points > 0, chart
    assert page.locator("#chart-latency .main-svg").count() >= 1  # Plotly drew it
    edges = page.locator("#service-map path.map-edge")
    assert edges.count() >= 2
    pairs = {(e.get_attribute("data-caller"), e.get_attribute("data-callee")) for e in edges.all()}
    assert ("gateway", "inventory") in pairs and ("gateway", "worker") in pairs
    assert page.locator("#service-map .map-node").count() >= 3
    assert page.locator("#ops-table tbody tr").count() >= 3
    # clicking a node filters the charts to that service
    page.click('#service-map .map-node[data-service="inventory"]')
    page.wait_for_url("**service=inventory**")
    page.wait_for_function("[...document.querySelectorAll('#ops-table tbody tr td:first-child')].every(td => td.textContent === 'inventory')")
    screenshot(page, "services")
    page.console.assert_clean()


def test_ai_page_and_status_bar(page, stack):
    page.goto("/ai?lookback=24h")
    ready(page, "aiReady")
    status = page.locator("#status-text").inner_text()
    assert "dead letters" in status and "lag" in status
    assert "tracers " in status and "dropped" not in status  # the traffic's tracers reported, none dropped
    assert page.locator("#ai-error").is_hidden(), page.locator("#ai-error").inner_text()
    models = page.locator("#models-table tbody").inner_text()
    assert "test-model-large" in models and "test-model-small" in models
    page.wait_for_function("window.__contrail.aiSteps > 0")
    steps = page.locator("#ai-steps li")
    texts = [steps.nth(i).inner_text() for i in range(steps.count())]
    order = [next(i for i, t in enumerate(texts) if key in t) for key in ("Phase: plan", "test-model-small", "Tool: search_docs", "test-model-large")]
    assert order == sorted(order), texts
    screenshot(page, "ai")
    page.console.assert_clean()


def test_ten_thousand_span_trace_stays_responsive(page, stack):
    page.goto(f"/trace/{stack.big_trace_id}")
    ready(page, "waterfallFirstPaintMs")
    figures = page.evaluate("({firstPaint: window.__contrail.waterfallFirstPaintMs, fetch: window.__contrail.traceFetchMs,"
                            " build: window.__contrail.waterfallBuildMs, spans: window.__contrail.spanCount})")
    print(f"\n10k-span trace: waterfall first paint {figures['firstPaint']:.0f} ms after navigation start "
          f"(API fetch {figures['fetch']:.0f} ms, model + first render {figures['build']:.0f} ms)")
    assert figures["spans"] == 10_000
    rendered = page.locator("#waterfall .wf-row").count()
    assert 0 < rendered < 200  # virtualized: only the rows in view exist

    # scroll through the whole trace; every frame the page must keep answering
    for fraction in (0.25, 0.5, 0.75, 1.0):
        page.evaluate(f"(() => {{ const w = document.getElementById('waterfall'); w.scrollTop = w.scrollHeight * {fraction}; }})()")
        page.wait_for_function("new Promise(r => requestAnimationFrame(() => r(true)))")
        assert page.locator("#waterfall .wf-row").count() < 200
    last_index = page.evaluate("Math.max(...[...document.querySelectorAll('#waterfall .wf-row')].map(r => +r.dataset.index))")
    assert last_index == 9_999
    # keyboard navigation and search still work at this size
    page.focus("#waterfall")
    page.keyboard.press("Home")
    page.wait_for_function("document.getElementById('waterfall').scrollTop === 0")
    page.fill("#trace-find", "step-49")
    page.wait_for_function("document.querySelector('#find-count').textContent.includes('match')")
    page.press("#trace-find", "Enter")
    page.wait_for_function("document.querySelector('#detail-title').textContent.includes('step-49')")
    page.click("#tab-flame")
    assert page.evaluate("document.querySelector('#flame-canvas').width") > 0
    page.click("#tab-waterfall")
    screenshot(page, "trace-10k")
    page.console.assert_clean()


def test_readme_images_come_from_the_screenshots(stack):
    """The two README images are copies of this run's search and trace screenshots (kept small)."""
    source = ROOT / "artifacts" / "screenshots"
    for name in ("search", "trace"):
        path = source / f"{name}.png"
        if not path.exists():
            pytest.skip("run the page tests first to produce the screenshots")
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOC_IMAGES / f"dashboard-{name}.png")
        assert (DOC_IMAGES / f"dashboard-{name}.png").stat().st_size < 400_000
