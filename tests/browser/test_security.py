"""Hostile span data in every dashboard view, with the Content-Security-Policy enforced.

Service names, span names, attribute keys and values, events, status and
exception messages, agent, phase, tool and model names carry markup and
script. Every view must show them as text: no script runs, no element is
injected (in the page or in Plotly's SVG), and the pages work under the
dashboard's own Content-Security-Policy (no violation, no console error).

This module runs its own small stack (Redis, a collector process, the web app)
so the hostile names do not show up in the other page tests and their screenshots.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.support.servers import free_port, wait_until
from tracer import TracingManager

from .conftest import ConsoleWatch, Stack, _serve, running_stack
from .traffic import remote_parent

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

XSS = '<img src=x onerror="window.__xss=1">'
LINK = '<a href="https://evil.invalid/">click</a>'
SERVICE_A = f"shop{XSS}"
SERVICE_B = f"api{LINK}"
ROOT_OP = f"GET /{LINK}{XSS}"
MODEL = f"model{LINK}{XSS}"

HOSTILE_ELEMENTS = ('img[src="x"], [onerror], [onload], script:not([src]), [href*="evil.invalid"], '
                    '[*|href*="evil.invalid"]')
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation",
  (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


def hostile_request(managers: dict[str, TracingManager], slow: bool) -> str:
    a, b = managers["a"], managers["b"]
    with a.span(ROOT_OP, kind="server", **{f"key{XSS}": f"value{XSS}", "link": LINK,
                                           "url": "javascript:window.__xss=2"}) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        a.checkpoint(f"event{XSS}", **{"detail": LINK})
        with a.agent_run(f"agent{XSS}"):
            with a.phase(f"phase{LINK}"):
                with a.llm_call(model=MODEL, provider=f"provider{XSS}") as call:
                    time.sleep(0.004 if slow else 0.001)
                    call.record_usage(input_tokens=50, output_tokens=10)
            with a.tool_call(f"tool{XSS}"):
                pass
        with a.span(f"call {LINK}", kind="client"):
            headers = a.inject_span_context()
            with remote_parent(b, headers):
                try:
                    with b.span(f"db{XSS}", kind="server", **{"db.statement": f"SELECT '{XSS}'"}):
                        if slow:
                            with b.span(f"extra{XSS}"):
                                time.sleep(0.003)
                        raise RuntimeError(f"failed {XSS} {LINK}")
                except RuntimeError:
                    pass
    return trace_id


@pytest.fixture(scope="module")
def hostile(chromium, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hostile-stack")
    with running_stack(workdir) as (base_url, redis_url, database_url, collector, log_path):
        managers = {key: TracingManager(service_name=name, redis_url=redis_url, schedule_delay=0.05,
                                        data_dir=str(workdir / "tracer"))
                    for key, name in (("a", SERVICE_A), ("b", SERVICE_B))}
        try:
            ids = {"fast": hostile_request(managers, slow=False), "slow": hostile_request(managers, slow=True)}
            for manager in managers.values():
                assert manager.flush(10), manager.get_tracer_info()
        finally:
            for manager in managers.values():
                manager.shutdown()
        stack = Stack(base_url, ids, big_trace_id="")
        stack.database_url, stack.redis_url = database_url, redis_url

        def collected():
            assert collector.poll() is None, log_path.read_text()
            return (all(requests.get(f"{base_url}/api/v1/traces/{t}", timeout=10).status_code == 200
                        for t in ids.values())
                    and stack.api("/traces", lookback="1h")["total"] == 2
                    and len(stack.api("/ai/traces", lookback="1h")["traces"]) == 2)

        wait_until(collected, timeout=90, interval=0.5, message="the collector to store the hostile traces")
        yield stack


@pytest.fixture
def page(chromium, hostile):
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, base_url=hostile.base_url)
    context.add_init_script(WATCH)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.console = ConsoleWatch(page)
    yield page
    context.close()


def until(page, expression: str, timeout: float = 15.0):
    """Poll a JavaScript expression from outside the page (wait_for_function would need eval, which CSP forbids)."""
    return wait_until(lambda: page.evaluate(expression), timeout=timeout, interval=0.1, message=expression)


def assert_inert(page, where: str):
    """No payload ran, no hostile element exists, the policy was never violated, the console is clean."""
    assert page.evaluate("window.__xss") is None, f"{where}: a payload ran"
    injected = page.evaluate(f"[...document.querySelectorAll({HOSTILE_ELEMENTS!r})].map(e => e.outerHTML.slice(0, 120))")
    assert injected == [], f"{where}: markup from span data became elements: {injected}"
    violations = page.evaluate("window.__violations")
    assert violations == [], f"{where}: Content-Security-Policy violations: {violations}"
    page.console.assert_clean()


def test_dashboard_responses_carry_the_security_headers(hostile):
    for path in ("/", f"/trace/{hostile.ids['fast']}", "/assets/api.js", "/api/v1/traces"):
        headers = requests.get(hostile.base_url + path, timeout=10).headers
        policy = headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in policy and "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_search_shows_hostile_names_as_text(page, hostile):
    page.goto("/?lookback=1h")
    until(page, "document.querySelectorAll('#results-body tr[data-trace-id]').length === 2")
    until(page, "document.querySelector('#scatter').data && document.querySelector('#scatter .scatterlayer .point')")
    table = page.locator("#results-body").inner_text()
    assert SERVICE_A in table and ROOT_OP in table
    # the scatter's hover label shows the names as text, not as Plotly markup
    point = page.locator("#scatter .scatterlayer .point").first.bounding_box()
    page.mouse.move(point["x"] + point["width"] / 2, point["y"] + point["height"] / 2)
    until(page, "document.querySelector('#scatter .hovertext')")
    assert SERVICE_A in page.locator("#scatter .hovertext").first.text_content()
    page.select_option("#f-service", SERVICE_A)  # the filter lists the name as an option's text
    assert_inert(page, "search")


def test_trace_views_show_hostile_data_as_text(page, hostile):
    page.goto(f"/trace/{hostile.ids['slow']}")
    until(page, "window.__contrail && window.__contrail.traceReady")
    rows = page.locator("#waterfall .wf-row")
    assert rows.count() >= 8
    assert ROOT_OP in page.locator("#waterfall").inner_text()
    for i in range(rows.count()):  # every span's detail panel
        rows.nth(i).click()
        until(page, f"window.__contrail.selectedSpanId === document.querySelectorAll('#waterfall .wf-row')[{i}].dataset.spanId")
    rows.first.click()
    until(page, "document.querySelector('#detail-title').textContent.includes('GET /')")
    detail = page.locator("#detail-body").inner_text()
    assert f"value{XSS}" in detail and f"key{XSS}" in detail and f"event{XSS}" in detail
    page.locator("#waterfall .wf-row", has_text=f"db{XSS}").click()
    until(page, "document.querySelector('#detail-title').textContent.includes('db<img')")
    assert f"failed {XSS} {LINK}" in page.locator("#detail-body").inner_text()
    page.fill("#trace-find", "evil.invalid")
    until(page, "document.querySelectorAll('#waterfall .wf-row.is-match').length >= 1")
    page.fill("#trace-find", "")
    page.click("#tab-flame")
    box = page.locator("#flame").bounding_box()
    page.mouse.move(box["x"] + 40, box["y"] + 10)
    until(page, "document.querySelector('#flame').title !== ''")
    assert SERVICE_A in page.evaluate("document.querySelector('#flame').title")
    page.click("#tab-stats")
    assert f"db{XSS}" in page.locator("#stats-table").inner_text()
    assert_inert(page, "trace")


def test_compare_shows_hostile_names_as_text(page, hostile):
    page.goto(f"/compare?a={hostile.ids['fast']}&b={hostile.ids['slow']}")
    until(page, "window.__contrail && window.__contrail.compareRows")
    assert f"extra{XSS}" in page.locator("#compare-table").inner_text()
    assert_inert(page, "compare")


def test_services_show_hostile_names_as_text(page, hostile):
    page.goto("/services?lookback=1h")
    until(page, "window.__contrail && window.__contrail.servicesReady")
    for chart in ("chart-rate", "chart-errors", "chart-latency"):
        until(page, f"document.getElementById('{chart}').data && document.getElementById('{chart}').data.length")
    until(page, "document.querySelector('#chart-legend button')")  # one legend for the three charts, below them
    legend = " ".join(page.locator("#chart-legend").all_text_contents())
    assert SERVICE_A in legend or SERVICE_B in legend, legend
    until(page, "document.querySelectorAll('#service-map .map-node').length >= 2")
    assert SERVICE_B in page.locator("#ops-table").inner_text()
    page.locator("#service-map .map-node").first.click()
    until(page, "window.location.search.includes('service=')")
    assert_inert(page, "services")


def test_ai_page_shows_hostile_names_as_text(page, hostile):
    page.goto("/ai?lookback=1h")
    until(page, "window.__contrail && window.__contrail.aiReady")
    assert MODEL in page.locator("#models-table").inner_text()
    until(page, "document.querySelector('#chart-tokens .xtick')")
    ticks = " ".join(page.locator("#chart-tokens .xtick").all_text_contents())
    assert MODEL in ticks, ticks
    until(page, "window.__contrail.aiSteps > 0")
    steps = page.locator("#ai-steps").inner_text()
    assert f"tool{XSS}" in steps and f"phase{LINK}" in steps
    assert f"agent{XSS}" in page.locator("#ai-traces-table").inner_text()
    assert_inert(page, "ai")


def test_bad_trace_id_page_echoes_the_value_as_text(page, hostile):
    response = page.goto("/trace/" + requests.utils.quote(XSS, safe=""))
    assert response.status == 400
    assert XSS in page.locator("main").inner_text()
    page.console.errors.clear()  # the page's own 400 status is logged by the browser
    assert_inert(page, "message page")


TOKEN = "read-token-" + "7" * 32


@pytest.fixture(scope="module")
def guarded(hostile):
    """The same data behind a read token."""
    from web.app import create_app

    app = create_app({"DATABASE_URL": hostile.database_url, "REDIS_URL": hostile.redis_url, "READ_TOKEN": TOKEN})
    port = free_port()
    server, _ = _serve(app, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()


def test_with_a_token_the_dashboard_asks_once_and_exports_with_it(chromium, guarded, hostile):
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, base_url=guarded, accept_downloads=True)
    context.add_init_script(WATCH)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.console = ConsoleWatch(page)
    prompts = []

    def answer(dialog):
        prompts.append(dialog.message)
        dialog.accept(TOKEN)

    page.on("dialog", answer)
    try:
        trace_id = hostile.ids["fast"]
        page.goto(f"/trace/{trace_id}")
        until(page, "window.__contrail && window.__contrail.traceReady")
        assert len(prompts) == 1 and "token" in prompts[0]
        assert requests.get(f"{guarded}/api/v1/traces/{trace_id}/export", timeout=10).status_code == 401
        with page.expect_download() as download:
            page.click("#export-json")
        exported = Path(download.value.path()).read_text()
        assert trace_id in exported and '"error"' not in exported[:40]
        assert download.value.suggested_filename == f"trace-{trace_id}.json"
        page.console.errors[:] = [e for e in page.console.errors if "401" not in e]  # the first, unauthenticated call
        assert_inert(page, "trace page behind a token")
    finally:
        context.close()
