"""The dashboard, driven with real clicks in headless Chromium against real collected traces."""

from __future__ import annotations

import math
import re

import pytest

from . import traffic
from .conftest import check_doc_image, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


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
    # the whole traces' durations also hold the Celery task's queue wait, which a loaded machine stretches:
    # the verdict is the one the two traces' own durations give
    a, b = page.locator("#c-a").input_value(), page.locator("#c-b").input_value()
    a_ms, b_ms = (stack.api(f"/traces/{trace_id}")["summary"]["duration_ms"] for trace_id in (a, b))
    verdict = "slower" if b_ms > a_ms else "faster"
    assert re.search(rf"B is \S+ \S+ {verdict} \(\+1 spans\)", page.locator("#compare-summary").inner_text())
    assert page.locator("#compare-hint").count() == 0
    screenshot(page, "compare")
    page.console.assert_clean()

    # opened bare (from the navigation bar), the page says how to pick two traces
    page.goto("/compare")
    hint = page.locator("#compare-hint")
    assert "Compare selected" in hint.inner_text()
    assert hint.locator("a").get_attribute("href") == "/"
    page.console.assert_clean()


def test_unknown_trace_shows_only_the_message(page, stack):
    """A trace id nobody stored: a message, and no empty waterfall or export buttons that lead to 404s."""
    missing = "ab" * 16
    page.goto(f"/trace/{missing}")
    page.wait_for_function("window.__contrail && window.__contrail.traceLoadError !== undefined")
    error = page.locator("#trace-error")
    assert error.is_visible() and f"No trace {missing} is stored" in error.inner_text()
    for selector in ("#copy-ai", "#compare-link", "#export-json", ".trace-body"):
        assert page.locator(selector).is_hidden(), selector
    # the only console entry is the API's 404 for the trace itself
    assert all("404" in e for e in page.console.errors), page.console.errors


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
    # p95 per model is a real figure: the nearest-rank p95 of the calls /ai/traces reports
    calls = [c for t in stack.api("/ai/traces", lookback="24h", limit=200)["traces"] for c in t["llm_calls"]]
    for model in ("test-model-large", "test-model-small"):
        durations = sorted(c["duration_ms"] for c in calls if c["model"] == model)
        expected = durations[max(0, math.ceil(0.95 * len(durations)) - 1)]
        cell = page.locator(f'#models-table tbody tr[data-model="{model}"] td[data-col="p95"]').inner_text()
        assert cell.endswith(" ms") and float(cell.split()[0]) == pytest.approx(expected, rel=0.01, abs=0.01), (model, cell, durations)
    assert "every LLM call" in page.locator("#models-note").inner_text()
    # the agent traces table reads the /ai/traces shape: agent, result, counts, tokens (no NaN, no "?")
    agent_rows = page.locator("#ai-traces-table tbody tr[data-trace-id]")
    assert agent_rows.count() == 2
    cells = agent_rows.first.locator("td").all_inner_texts()
    assert cells[1:3] == ["helper", "ok"] and cells[4:7] == ["2", "1", "1,250"], cells
    # the test models have no price: their cost says so instead of showing $0.0000 as if free
    assert "test-model-large" in stack.api("/ai/usage", lookback="24h")["unpriced_models"]
    assert cells[7] == "unpriced", cells
    for model in ("test-model-large", "test-model-small"):
        cost = page.locator(f'#models-table tbody tr[data-model="{model}"] td[data-col="cost"]')
        assert cost.inner_text() == "unpriced" and "CONTRAIL_PRICE_TABLE" in cost.get_attribute("title")
    text = page.locator("main").inner_text()
    assert not {"NaN", "undefined", "null", "?"} & set(re.split(r"[\s·]+", text)), text
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


def test_span_details_never_print_absent_values(page, stack):
    """Every span's detail panel, including odd shapes, leaves absent values out instead of printing null."""
    for role in ("error", "agent", "odd"):
        page.goto(f"/trace/{stack.ids[role]}")
        ready(page, "traceReady")
        rows = page.locator("#waterfall .wf-row")
        for i in range(rows.count()):
            rows.nth(i).click()
            page.wait_for_function(f"window.__contrail.selectedSpanId === document.querySelectorAll('#waterfall .wf-row')[{i}].dataset.spanId")
            text = page.locator("#span-detail").inner_text()
            words = set(re.split(r"[\s:·,()]+", text))
            assert not {"null", "nullnull", "undefined", "NaN"} & words, text
        assert not {"null", "undefined", "NaN"} & set(re.split(r"[\s:·,()]+", page.locator(".trace-header").inner_text()))
    # the odd trace: a link to a whole trace, an exception without a message
    page.locator("#waterfall .wf-row", has_text="odd root").click()
    links = page.locator("#detail-body ul.links").first.inner_text()
    assert f"trace {stack.ids['ok'][:12]}… (the whole trace)" in links and "odd child (this trace)" in links
    page.locator("#waterfall .wf-row", has_text="odd child").click()
    assert page.locator("#detail-body .exception").inner_text().strip() == "ValueError"
    page.console.assert_clean()


def _boxes(page, row):
    return page.evaluate("""(row) => {
      const box = (el) => { if (!el) return null; const r = el.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom}; };
      return {row: box(row), name: box(row.querySelector('.wf-name')), track: box(row.querySelector('.wf-track')),
              label: box(row.querySelector('.wf-label')), bar: box(row.querySelector('.wf-bar')), wait: box(row.querySelector('.wf-wait')),
              inside: row.querySelector('.wf-label').classList.contains('wf-label-inside'),
              clipped: row.querySelector('.wf-label').scrollWidth > row.querySelector('.wf-label').clientWidth + 1};
    }""", row.element_handle())


def test_waterfall_labels_do_not_overlap_names_bars_or_queue_wait(page, stack):
    page.goto(f"/trace/{stack.ids['error']}")
    ready(page, "traceReady")
    rows = page.locator("#waterfall .wf-row")
    for detail_open in (False, True):  # the detail panel narrows the waterfall
        if detail_open:
            rows.first.click()
            page.locator("#span-detail").wait_for(state="visible")
            page.wait_for_function("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
        for i in range(rows.count()):
            b = _boxes(page, rows.nth(i))
            name = rows.nth(i).locator(".wf-op").inner_text()
            label = b["label"]
            assert label["l"] >= b["track"]["l"] - 0.5, (name, "label runs into the name column", b)
            assert label["r"] <= b["row"]["r"] + 0.5, (name, "label runs off the row", b)
            for part in ("bar", "wait"):
                other = b[part]
                if other is None or (part == "bar" and b["inside"]):
                    continue
                overlap = min(label["r"], other["r"]) - max(label["l"], other["l"])
                assert overlap <= 0.5, (name, f"label covers the {part}", b)
            if b["inside"]:
                assert b["bar"]["l"] <= label["l"] and label["r"] <= b["bar"]["r"] + 0.5, (name, b)
    # the Celery consumer keeps its queue-wait segment and says how long it waited somewhere readable
    consumer = page.locator("#waterfall .wf-row", has_text="run process_order")
    assert consumer.locator(".wf-wait").count() == 1
    assert "waited 10.0 ms" in consumer.get_attribute("aria-label")
    page.console.assert_clean()


def test_flame_graph_keyboard_and_waterfall_keyboard_together(page, stack):
    page.goto(f"/trace/{stack.ids['error']}")
    ready(page, "traceReady")
    page.click("#tab-flame")
    flame = page.locator("#flame")
    assert flame.get_attribute("tabindex") == "0"
    flame.focus()
    page.keyboard.press("Home")
    focus = page.locator("#flame-focus")
    page.wait_for_function("document.querySelector('#flame-focus').textContent.includes('POST /checkout')")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("document.querySelector('#flame-focus').textContent.includes('GET /inventory/42')")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#flame-focus').textContent.includes('celery.send process_order')")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("document.querySelector('#flame-focus').textContent.includes('run process_order')")
    assert "error" in focus.inner_text() and "depth 3 of 4" in focus.inner_text()
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#detail-title').textContent === 'worker · run process_order'")
    selected = page.evaluate("window.__contrail.selectedSpanId")
    assert page.evaluate("window.__contrail.flameFocus") == selected
    page.keyboard.press("ArrowUp")
    page.wait_for_function("document.querySelector('#flame-focus').textContent.includes('celery.send process_order')")
    page.keyboard.press("+")  # zoom to the focused frame, then back out
    page.keyboard.press("-")
    assert page.evaluate("document.querySelector('#flame-canvas').width") > 0

    # back to the waterfall with the keyboard: the span picked in the flame graph is selected there
    page.focus("#tab-flame")
    page.keyboard.press("ArrowLeft")
    assert page.locator("#view-waterfall").is_visible()
    assert page.locator(f"#waterfall .wf-row.is-selected[data-span-id='{selected}']").count() == 1
    page.focus("#waterfall")
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#detail-title').textContent === 'worker · charge card'")
    page.keyboard.press("Home")
    page.keyboard.press("ArrowLeft")  # collapse the root
    page.wait_for_function("document.querySelectorAll('#waterfall .wf-row').length === 1")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelectorAll('#waterfall .wf-row').length === 7")
    page.console.assert_clean()


def test_bottleneck_hints_on_services_and_search(page, stack):
    hints = {(h["service"], h["operation"]): h for h in stack.api("/ai/bottlenecks")["bottlenecks"]}
    slower = hints[("billing", traffic.SLOWER_OPERATION)]
    failing = hints[("billing", traffic.FAILING_OPERATION)]
    assert slower["flag"] == "slower" and failing["flag"] == "more_errors"

    page.goto("/services?lookback=1h")
    ready(page, "servicesReady")
    page.wait_for_function("window.__contrail.bottlenecks !== undefined")
    items = page.locator("#hints-list li.hint")
    assert items.count() == len(hints)
    assert page.locator("#hints-count").inner_text() == f"{len(hints)} flagged"
    # per operation row: a flag with its reason, in numbers
    row = page.locator(f'#ops-table tbody tr[data-service="billing"][data-operation="{traffic.SLOWER_OPERATION}"]')
    flag = row.locator('.hint-flag[data-flag="slower"]')
    text = flag.inner_text()
    assert text.startswith("slower p95 ") and "→" in text and f"×{slower['p95_ratio']:.1f}" in text, text
    before, after = (float(part.split()[-2]) for part in text.split("(")[0].split("→"))
    assert before == pytest.approx(slower["baseline_p95_ms"], abs=0.1) and after == pytest.approx(slower["recent_p95_ms"], abs=0.1)
    row = page.locator(f'#ops-table tbody tr[data-service="billing"][data-operation="{traffic.FAILING_OPERATION}"]')
    assert row.locator('.hint-flag[data-flag="more_errors"]').inner_text() == "more errors error rate 0.0 % → 50.0 %"
    assert page.locator('#ops-table tbody tr[data-service="gateway"] .hint-flag').count() == 0
    # and its likely cause, as the API names it: the slower root's own code, the failing child's error
    assert slower["likely_cause"].startswith("its own code (self time) takes ")
    assert failing["likely_cause"].startswith("fails with ")
    for hint in (slower, failing):
        row = page.locator(f'#ops-table tbody tr[data-service="billing"][data-operation="{hint["operation"]}"]')
        assert row.locator(".hint-cause").inner_text() == f"likely: {hint['likely_cause']}"
    screenshot(page, "services-overview")

    # a hint opens its operation in the charts
    page.locator(f'#hints-list li.hint[data-operation="{traffic.SLOWER_OPERATION}"] button').click()
    page.wait_for_url("**operation=POST+%2Finvoice**")
    page.wait_for_function("[...document.querySelectorAll('#ops-table tbody tr')].every(r => r.dataset.operation === 'POST /invoice')")

    # the search page sums them up and links to each operation
    page.goto("/?lookback=1h")
    ready(page, "searchResults !== undefined")
    page.wait_for_function("window.__contrail.bottlenecks !== undefined")
    summary = page.locator("#hint-summary")
    assert summary.is_visible()
    assert summary.inner_text().startswith(f"{len(hints)} operations off baseline")
    link = summary.locator("a", has_text=f"billing · {traffic.SLOWER_OPERATION}")
    assert link.get_attribute("href") == "/services?service=billing&operation=POST%20%2Finvoice"
    page.console.assert_clean()


def test_doc_images_are_dashboard_screenshots(stack):
    """The README and docs show real screenshots; CONTRAIL_UPDATE_DOC_IMAGES=1 refreshes them from this run's.

    The suite does not rewrite tracked files unless asked, so a test run leaves the checkout clean.
    """
    for name, doc_name in (("search", "search"), ("trace", "trace"), ("services-overview", "services"), ("ai", "ai"),
                           ("metrics", "metrics"), ("profile", "profile"), ("operation", "operation")):
        check_doc_image(name, doc_name, "the page tests")
