"""The latency heat map and the live tail on the search page, in headless Chromium against a real collector."""

from __future__ import annotations

import os
import random
import time

import pytest
import redis
import requests

from tests.support.servers import wait_until
from tracer.codec import encode_span_dicts

from .conftest import SCREENSHOTS, ConsoleWatch, check_doc_image, running_stack, screenshot, watched_page

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

MINUTE_NS = 60 * 10**9
HEAT_SERVICE, HEAT_OPERATION = "shop", "GET /cart"


def root_span(trace_id: str, service: str, operation: str, start_ns: int, duration_ns: int, error: bool) -> dict:
    return {"trace_id": trace_id, "span_id": os.urandom(8).hex(), "parent_span_id": None, "name": operation,
            "kind": "server", "start_ns": start_ns, "end_ns": start_ns + duration_ns,
            "status_code": "error" if error else "unset", "service": service, "resource": {"service.name": service},
            "attributes": {}, "events": [], "links": []}


def publish(redis_url: str, spans: list[dict]) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd("contrail:spans", encode_span_dicts(spans))
    finally:
        client.close()


class Stack:
    def __init__(self, base_url: str, redis_url: str, truth: list[dict]):
        self.base_url, self.redis_url, self.truth = base_url, redis_url, truth

    def api(self, path: str, **params):
        response = requests.get(f"{self.base_url}/api/v1{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()


@pytest.fixture(scope="module")
def stack(chromium, tmp_path_factory):
    """Redis, a collector and the web app, with 80 one-span traces of known start, duration and status."""
    workdir = tmp_path_factory.mktemp("heatmap-stack")
    with running_stack(workdir) as (base_url, redis_url, _, collector, log_path):
        rng = random.Random(11)
        now = time.time_ns()
        truth, spans = [], []
        for i in range(80):
            trace_id = os.urandom(16).hex()
            service, operation = (HEAT_SERVICE, HEAT_OPERATION) if i % 4 else ("other", "GET /x")
            start = now - 50 * MINUTE_NS + rng.randrange(45 * MINUTE_NS)
            duration = int(10 ** rng.uniform(6, 9.3))  # 1 ms .. 2 s
            error = rng.random() < 0.25
            spans.append(root_span(trace_id, service, operation, start, duration, error))
            truth.append({"trace_id": trace_id, "service": service, "operation": operation, "start_ns": start,
                          "duration_ns": duration, "error": error})
        for i in range(6):  # calls to another service, one of them an LLM call: the report's dependency map and AI cost
            trace_id, root_id = os.urandom(16).hex(), os.urandom(8).hex()
            start = now - 20 * MINUTE_NS + i * MINUTE_NS
            root = {**root_span(trace_id, "assistant", "POST /ask", start, 400_000_000, False), "span_id": root_id}
            call = {**root_span(trace_id, "llm-gateway", "chat gpt-4o-mini", start + 1_000_000, 300_000_000, i == 0),
                    "parent_span_id": root_id, "kind": "client",
                    "attributes": {"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                                   "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300}}
            spans += [root, call]
            truth.append({"trace_id": trace_id, "service": "assistant", "operation": "POST /ask", "start_ns": start,
                          "duration_ns": 400_000_000, "error": i == 0})
        for i in range(8):  # a batch service with many operations (more lines than a chart shows), and old traffic
            trace_id = os.urandom(16).hex()
            service, operation = ("archive", "GET /old") if i == 7 else ("batch", f"job-{i}")
            start = now - (40 if i == 7 else 10) * MINUTE_NS + i * 1_000_000_000
            spans.append(root_span(trace_id, service, operation, start, (i + 1) * 3_000_000, False))
            truth.append({"trace_id": trace_id, "service": service, "operation": operation, "start_ns": start,
                          "duration_ns": (i + 1) * 3_000_000, "error": False})
        publish(redis_url, spans)
        stack = Stack(base_url, redis_url, truth)

        def collected():
            assert collector.poll() is None, log_path.read_text()
            return stack.api("/traces", lookback="1h", limit=1)["total"] >= len(truth)

        wait_until(collected, timeout=90, interval=0.5, message="the collector to finalize the seeded traces")
        yield stack


@pytest.fixture
def page(chromium, stack):
    with watched_page(chromium, stack.base_url, height=1100, timeout_ms=20000) as page:
        yield page


def test_heat_map_selection_lists_exactly_the_traces_of_the_region(page, stack):
    query = {"lookback": "1h", "service": HEAT_SERVICE, "operation": HEAT_OPERATION}
    page.goto(f"/?lookback=1h&service={HEAT_SERVICE}&operation={HEAT_OPERATION.replace(' ', '%20')}")
    page.wait_for_function("window.__contrail && window.__contrail.heatmapCells > 0")
    heatmap = stack.api("/stats/heatmap", **query)
    cols, rows = heatmap["columns"], heatmap["rows"]
    mine = [t for t in stack.truth if t["service"] == HEAT_SERVICE]
    # what the page draws is what the API counts, and every seeded trace is in it
    assert page.locator("#heatmap rect.hm-cell").count() == len(heatmap["cells"])
    assert heatmap["count"] == len(mine) and heatmap["error_count"] == sum(t["error"] for t in mine)
    assert page.locator("#heatmap rect.hm-error").count() == sum(1 for c in heatmap["cells"] if c[3])

    # drag from the lower-left to the upper-right of a region: the middle columns, the middle duration rows
    c0, c1 = len(cols) // 4, 3 * len(cols) // 4
    r0, r1 = rows[len(rows) // 4]["row"], rows[3 * len(rows) // 4]["row"]

    def centre(col: int, row: int):
        index = next(i for i, r in enumerate(rows) if r["row"] == row)
        box = page.locator("#heatmap svg").bounding_box()
        plot_w, plot_h = box["width"] - 64 - 8, box["height"] - 6 - 22
        cw, rh = plot_w / len(cols), plot_h / len(rows)
        return box["x"] + 64 + (col + 0.5) * cw, box["y"] + 6 + plot_h - (index + 0.5) * rh

    page.locator("#heatmap-panel").scroll_into_view_if_needed()
    page.mouse.move(*centre(c0, r0))
    page.mouse.down()
    page.mouse.move(*centre((c0 + c1) // 2, r1), steps=4)
    page.mouse.move(*centre(c1, r1), steps=4)
    page.mouse.up()
    page.wait_for_function("window.__contrail.selectionReady === true")

    low = next(r for r in rows if r["row"] == r0)["min_ns"]
    high = next(r for r in rows if r["row"] == r1)["max_ns"]
    start, end = cols[c0]["start_ns"], cols[c1]["end_ns"]
    expected = {t["trace_id"] for t in mine if start <= t["start_ns"] < end and low <= t["duration_ns"] <= high}
    assert expected, "the region should hold some of the seeded traces"
    listed = {r.get_attribute("data-trace-id") for r in page.locator("#selection-body tr[data-trace-id]").all()}
    assert listed == expected
    assert set(page.evaluate("window.__contrail.selectionIds")) == expected
    counted = sum(n for c, r, n, _ in heatmap["cells"] if c0 <= c <= c1 and r0 <= r <= r1)
    assert counted == len(expected)
    assert page.locator("#selection-title").inner_text().startswith(f"{len(expected)} trace")
    failing = {t["trace_id"] for t in mine if t["trace_id"] in expected and t["error"]}
    assert {r.get_attribute("data-trace-id") for r in page.locator("#selection-body tr.row-error").all()} == failing
    screenshot(page, "heatmap")

    # the keyboard selects too: from the bottom-left cell, arrows to the busiest cell, Shift+arrows one more
    # column to the right and one row up, Enter
    busiest = max(heatmap["cells"], key=lambda cell: (cell[2], -cell[0]))
    row_index = next(i for i, r in enumerate(rows) if r["row"] == busiest[1])
    target_col, target_row = min(busiest[0], len(cols) - 2), min(row_index, len(rows) - 2)
    page.click("#selection-clear")
    page.focus("#heatmap svg")
    for _ in range(len(cols) + len(rows)):  # to the bottom-left corner first
        page.keyboard.press("ArrowLeft")
        page.keyboard.press("ArrowDown")
    for _ in range(target_col):
        page.keyboard.press("ArrowRight")
    for _ in range(target_row):
        page.keyboard.press("ArrowUp")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowUp")
    page.evaluate("window.__contrail.selectionReady = false")
    page.keyboard.press("Enter")
    page.wait_for_function("window.__contrail.selectionReady === true")
    start, end = cols[target_col]["start_ns"], cols[target_col + 1]["end_ns"]
    low, high = rows[target_row]["min_ns"], rows[target_row + 1]["max_ns"]
    expected = {t["trace_id"] for t in mine if start <= t["start_ns"] < end and low <= t["duration_ns"] <= high}
    assert expected
    assert set(page.evaluate("window.__contrail.selectionIds")) == expected

    # "Search with these bounds" runs the trace search over the same region
    page.click("#selection-apply")
    page.wait_for_url("**min_duration=**")
    page.wait_for_function("window.__contrail.searchResults !== undefined")
    page.wait_for_function(f"document.querySelectorAll('#results-body tr[data-trace-id]').length >= {len(expected)}")
    page.console.assert_clean()


def test_downloaded_report_opens_offline_with_its_charts(page, stack, chromium, tmp_path):
    page.goto("/services?lookback=24h")
    page.wait_for_function("window.__contrail && window.__contrail.servicesReady")
    with page.expect_download() as download:
        page.click("#download-report")
    path = tmp_path / "report.html"
    download.value.save_as(str(path))
    page.console.assert_clean()

    # open it with the network switched off, recording every request the page makes
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, offline=True)
    try:
        offline = context.new_page()
        console = ConsoleWatch(offline)
        requests_made: list[str] = []
        offline.on("request", lambda request: requests_made.append(request.url))
        offline.goto(path.as_uri())
        offline.wait_for_load_state("load")
        assert requests_made == [path.as_uri()]  # the file itself, nothing else
        assert offline.locator("script, link[rel=stylesheet], img, iframe").count() == 0
        for chart in ("throughput", "latency", "heatmap", "dependencies", "cost", "tokens"):
            assert offline.locator(f'svg[data-chart="{chart}"]').count() == 1, chart
        assert offline.locator('svg[data-chart="heatmap"] rect.cell').count() >= 10
        assert offline.locator('svg[data-chart="throughput"] rect').count() >= 2  # hourly bars over a day
        assert offline.locator('svg[data-chart="dependencies"] line.edge').count() == 1  # assistant -> llm-gateway
        cards = offline.locator("#red .card b").all_inner_texts()
        assert cards[0] == f"{len(stack.truth):,}"  # every seeded trace started within the day
        assert "gpt-4o-mini" in offline.locator("#ai").inner_text()
        example = next(t for t in stack.truth if t["service"] == "assistant" and t["error"])
        assert example["trace_id"] in offline.locator("#failing").inner_html()  # a failing trace as an example
        offline.screenshot(path=str(SCREENSHOTS / "report.png"), full_page=False)
        console.assert_clean()
    finally:
        context.close()


def test_red_charts_top_operations_others_shared_legend_hover_and_empty_state(page, stack):
    page.goto("/services?lookback=1h&top=5")
    page.wait_for_function("window.__contrail && window.__contrail.servicesReady && window.__contrail.chartSeries")
    operations = {(s["service"], s["operation"]) for s in stack.api("/stats", lookback="1h")["series"]}
    assert len(operations) > 5 and {(t["service"], t["operation"]) for t in stack.truth} <= operations
    labels = page.evaluate("window.__contrail.chartLabels")
    assert len(labels) == 6 and labels[-1] == f"others ({len(operations) - 5})"
    legend = page.locator("#chart-legend button")
    assert legend.count() == 6
    assert page.locator("#chart-rate .legendtext").count() == 0  # no legend inside the charts
    # the five busiest are named: shop's cart (60 traces) and the other service's (20) lead
    assert labels[0] == f"{HEAT_SERVICE} · {HEAT_OPERATION}" and labels[1] == "other · GET /x"
    assert page.evaluate("document.getElementById('chart-rate').data.length") == 6
    assert "others" not in page.evaluate("document.getElementById('chart-latency').data.map(t => t.meta).join()")

    # one click in the legend hides the series in all three charts
    key = legend.nth(1).get_attribute("data-key")
    legend.nth(1).click()
    assert legend.nth(1).get_attribute("aria-pressed") == "false"
    for chart in ("chart-rate", "chart-errors", "chart-latency"):
        states = page.evaluate(f"document.getElementById('{chart}').data.filter(t => t.meta === {key!r}).map(t => t.visible)")
        assert states and all(state == "legendonly" for state in states), chart

    # hovering the rate chart shows the same moment in the other two
    plot = page.locator("#chart-rate .nsewdrag").first
    plot.scroll_into_view_if_needed()
    box = plot.bounding_box()
    for fraction in (0.97, 0.9, 0.8, 0.7):
        page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
        if page.evaluate("window.__contrail.sharedHover || 0"):
            break
    page.wait_for_function("window.__contrail.sharedHover >= 1")
    page.wait_for_function("document.querySelector('#chart-latency .hoverlayer').childElementCount > 0")
    screenshot(page, "services-charts")

    # per service: the lines are services
    page.select_option("#s-group", "service")
    page.click("#services-form button[type=submit]")
    page.wait_for_function("window.__contrail.chartLabels && window.__contrail.chartLabels.includes('batch')")
    assert "batch · job-0" not in page.evaluate("window.__contrail.chartLabels")

    # one operation's span heat map: its counts are the operation's spans; a selection links to the search
    page.goto(f"/services?lookback=1h&service={HEAT_SERVICE}&operation={HEAT_OPERATION.replace(' ', '%20')}")
    page.wait_for_function("window.__contrail && window.__contrail.opHeatmapCells > 0")
    spans = stack.api("/stats/heatmap", lookback="1h", scope="span", service=HEAT_SERVICE, operation=HEAT_OPERATION)
    assert spans["count"] == sum(1 for t in stack.truth if t["service"] == HEAT_SERVICE and t["operation"] == HEAT_OPERATION)
    assert page.locator("#op-heatmap rect.hm-cell").count() == len(spans["cells"])
    page.locator("#op-heatmap-panel").scroll_into_view_if_needed()
    page.locator("#op-heatmap rect.hm-cell").first.click()
    link = page.locator("#op-heatmap-selection a")
    href = link.get_attribute("href")
    assert f"service={HEAT_SERVICE}" in href and "min_duration=" in href and "start=" in href

    # a selection without data says so instead of drawing empty axes
    page.goto("/services?lookback=15m&service=archive")
    page.wait_for_function("window.__contrail && window.__contrail.servicesReady")
    for chart in ("chart-rate", "chart-errors", "chart-latency"):
        assert "No requests for this selection" in page.locator(f"#{chart}").inner_text()
    page.console.assert_clean()


def test_live_tail_shows_a_trace_published_during_the_test_and_pauses(page, stack):
    page.goto(f"/?lookback=1h&service={HEAT_SERVICE}")
    page.wait_for_function("window.__contrail && window.__contrail.searchResults !== undefined")
    page.click("#tail-toggle")
    page.wait_for_function("window.__contrail.tailPolls >= 1")
    assert page.locator("#tail-toggle").get_attribute("aria-pressed") == "true"
    before = set(page.evaluate("window.__contrail.tailIds"))

    now = time.time_ns()
    fresh, elsewhere = os.urandom(16).hex(), os.urandom(16).hex()
    publish(stack.redis_url, [root_span(fresh, HEAT_SERVICE, "POST /checkout", now, 12_000_000, True),
                              root_span(elsewhere, "other", "GET /x", now, 5_000_000, False)])
    page.wait_for_selector(f'#tail-body tr[data-trace-id="{fresh}"]')
    assert fresh not in before
    row = page.locator(f'#tail-body tr[data-trace-id="{fresh}"]')
    assert "row-error" in row.get_attribute("class") and "POST /checkout" in row.inner_text()
    assert page.locator("#tail-body tr").first.get_attribute("data-trace-id") == fresh  # newest on top
    # the service filter applies: the other service's trace, finalized with it, is not shown
    wait_until(lambda: stack.api(f"/traces/{elsewhere}"), timeout=30, message="the other trace to be stored")
    assert page.locator(f'#tail-body tr[data-trace-id="{elsewhere}"]').count() == 0
    page.locator("#tail-panel").scroll_into_view_if_needed()
    screenshot(page, "livetail")

    # paused: a trace finalized meanwhile stays out until the tail resumes
    page.click("#tail-toggle")
    assert page.locator("#tail-toggle").inner_text() == "Resume"
    polls = page.evaluate("window.__contrail.tailPolls")
    later = os.urandom(16).hex()
    publish(stack.redis_url, [root_span(later, HEAT_SERVICE, "GET /cart", time.time_ns(), 3_000_000, False)])
    wait_until(lambda: any(t["trace_id"] == later for t in stack.api("/traces/tail", service=HEAT_SERVICE,
                                                                          limit=50)["traces"]),
               timeout=30, interval=0.3, message="the later trace to be finalized")
    assert page.evaluate("window.__contrail.tailPolls") == polls
    assert page.locator(f'#tail-body tr[data-trace-id="{later}"]').count() == 0
    page.click("#tail-toggle")
    page.wait_for_selector(f'#tail-body tr[data-trace-id="{later}"]')
    page.console.assert_clean()


def test_doc_images_are_screenshots_of_these_views(stack):
    """docs/dashboard.md shows these views; CONTRAIL_UPDATE_DOC_IMAGES=1 refreshes the images from this run's."""
    for name in ("heatmap", "livetail", "report", "services-charts"):
        check_doc_image(name, name, "this module's tests")
