"""Hostile session and user ids, agent, tool and model names and recorded content on the AI session, user and
LLM call pages, with the Content-Security-Policy enforced: all of it shows as text, nothing runs."""

from __future__ import annotations

import time
from urllib.parse import quote

import pytest
import requests

from tests.support.servers import wait_until
from tracer import TracingManager

from .conftest import ConsoleWatch, Stack, running_stack
from .test_security import LINK, MODEL, WATCH, XSS, assert_inert, until

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

SESSION = f"s{XSS}"
# A user id that is link markup: the pages link to /ai/users/<the id, URL-encoded>, so its host must differ from
# the shared payloads' evil.invalid (which assert_inert looks for in any href); injected_links looks for this one.
USER = 'u<a href="https://bad.invalid/">click</a>'

AGENT = f"agent{XSS}"
TOOL = f"tool{LINK}"


@pytest.fixture(scope="module")
def hostile_ai(chromium, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("hostile-ai")
    with running_stack(workdir) as (base_url, redis_url, _, collector, log_path):
        manager = TracingManager(service_name="svc", redis_url=redis_url, schedule_delay=0.05,
                                 data_dir=str(workdir / "tracer"), record_content=True)
        try:
            with manager.agent_run(AGENT, user_id=USER, session_id=SESSION) as run:
                trace_id = format(run.span.get_span_context().trace_id, "032x")
                with manager.phase(f"phase{XSS}"):
                    with manager.tool_call(TOOL, input=XSS) as tool:
                        tool.set_output(LINK)
                with manager.llm_call(model=MODEL, prompt=[{"role": f"user{XSS}", "content": f"hi {XSS}"}],
                                      **{f"gen_ai.request.param{XSS}": LINK}) as llm:
                    time.sleep(0.002)
                    llm.record_usage(input_tokens=10, output_tokens=2)
                    llm.set_response(f"answer {LINK}", tool_calls=[{"id": XSS, "name": TOOL, "arguments": {XSS: LINK}}])
                llm_span = format(llm.span.get_span_context().span_id, "016x")
            assert manager.flush(10), manager.get_tracer_info()
        finally:
            manager.shutdown()
        stack = Stack(base_url, {"trace": trace_id, "llm": llm_span}, big_trace_id="")

        def collected():
            assert collector.poll() is None, log_path.read_text()
            return len(stack.api("/ai/traces", lookback="1h")["traces"]) == 1
        wait_until(collected, timeout=90, interval=0.5, message="the collector to store the hostile agent trace")
        yield stack


@pytest.fixture
def page(chromium, hostile_ai):
    context = chromium.new_context(viewport={"width": 1440, "height": 900}, base_url=hostile_ai.base_url)
    context.add_init_script(WATCH)
    page = context.new_page()
    page.set_default_timeout(15000)
    page.console = ConsoleWatch(page)
    yield page
    context.close()


def injected_links(page):
    return page.evaluate("[...document.querySelectorAll('a[href^=\"https://bad.invalid\"]')].length")


def test_ai_page_session_and_user_tables_show_hostile_ids_as_text(page, hostile_ai):
    page.goto("/ai?lookback=1h")
    until(page, "window.__contrail && window.__contrail.aiReady && window.__contrail.aiSessions === 1")
    assert SESSION in page.locator("#ai-sessions-table").inner_text()
    assert USER in page.locator("#ai-users-table").inner_text()
    assert injected_links(page) == 0
    assert_inert(page, "ai page")


def test_session_page_shows_hostile_names_as_text(page, hostile_ai):
    page.goto(f"/ai/sessions/{quote(SESSION, safe='')}")
    until(page, "window.__contrail && window.__contrail.sessionReady")
    assert page.locator("#session-id").inner_text() == SESSION
    text = page.locator("#session-runs").inner_text()
    assert AGENT in text and f"Tool: {TOOL}" in text and f"LLM: {MODEL}" in text
    assert USER in page.locator("#session-summary").inner_text()
    assert injected_links(page) == 0
    assert_inert(page, "session page")


def test_user_page_shows_hostile_names_as_text(page, hostile_ai):
    page.goto(f"/ai/users/{quote(USER, safe='')}?lookback=1h")
    until(page, "window.__contrail && window.__contrail.userReady && window.__contrail.userSessions === 1")
    assert page.locator("#user-id").inner_text() == USER
    assert SESSION in page.locator("#user-sessions").inner_text()
    assert MODEL in page.locator("#user-models").inner_text()
    assert injected_links(page) == 0
    assert_inert(page, "user page")


def test_llm_call_viewer_shows_hostile_content_as_text(page, hostile_ai):
    page.goto(f"/ai/llm/{hostile_ai.ids['trace']}/{hostile_ai.ids['llm']}")
    until(page, "window.__contrail && window.__contrail.llmReady")
    assert f"hi {XSS}" in page.locator("#prompt-messages").inner_text()
    assert f"answer {LINK}" in page.locator("#completion-messages").inner_text()
    assert TOOL in page.locator("#tool-calls").inner_text()
    assert f"param{XSS}" in page.locator("#llm-parameters").inner_text()
    assert injected_links(page) == 0
    assert_inert(page, "llm call viewer")


def test_bad_ids_are_answered_with_400_pages(hostile_ai):
    for path in ("/ai/sessions/%01", "/ai/users/%20", f"/ai/llm/{quote(XSS, safe='')}/x"):
        response = requests.get(hostile_ai.base_url + path, timeout=10)
        assert response.status_code == 400, path
        assert "<img" not in response.text  # the echoed value is escaped
