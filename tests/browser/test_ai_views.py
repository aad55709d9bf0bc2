"""AI session, user and LLM call pages, driven in headless Chromium over traces a real collector stored."""

from __future__ import annotations

import time

import pytest
import requests

from tests.support.servers import wait_until
from tracer.manager import TracingManager

from .conftest import Stack, check_doc_image, running_stack, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

SECRET_EMAIL = "ana.lima@example.com"
PROMPT = [{"role": "system", "content": "You plan trips. Be brief."},
          {"role": "user", "content": f"Weather in Lisbon this weekend? Write to {SECRET_EMAIL}."}]
QUIET_PROMPT = "The quiet prompt nobody may read"


def _run(manager, session, user, question, fail=False, model="contrail-standin-1", tool_calls=None):
    """One agent run: a phase, a tool call, an LLM call; returns the trace id."""
    with manager.span("POST /ask", kind="server") as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        try:
            with manager.agent_run("trip-planner", user_id=user, session_id=session):
                with manager.phase("planning"):
                    time.sleep(0.002)
                with manager.tool_call("forecast", input={"city": "Lisbon"}) as tool:
                    time.sleep(0.002)
                    tool.set_output("sunny, 24C")
                with manager.llm_call(model=model, provider="contrail-demo", purpose="answer",
                                      prompt=[*PROMPT[:1], {"role": "user", "content": question}],
                                      temperature=0.3, max_tokens=200) as llm:
                    time.sleep(0.003)
                    llm.record_usage(input_tokens=120, output_tokens=40)
                    llm.set_response("Sunny, about 24C. Pack light.", tool_calls=tool_calls)
                if fail:
                    raise RuntimeError("planner gave up")
        except RuntimeError:
            pass
    return trace_id


@pytest.fixture(scope="module")
def stack(chromium, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ai-views")
    with running_stack(workdir) as (base_url, redis_url, _, collector, log_path):
        talkative = TracingManager(service_name="trip-app", redis_url=redis_url, schedule_delay=0.05,
                                   data_dir=str(workdir / "t1"), record_content=True)
        quiet = TracingManager(service_name="trip-app", redis_url=redis_url, schedule_delay=0.05,
                               data_dir=str(workdir / "t2"))
        try:
            ids = {"runs": []}
            ids["runs"].append(_run(talkative, "sess-42", "ana", PROMPT[1]["content"], tool_calls=[
                {"id": "call_7", "name": "book_hotel", "arguments": {"city": "Lisbon", "nights": 2}}]))
            time.sleep(0.01)
            ids["runs"].append(_run(talkative, "sess-42", "ana", "And on Monday?", fail=True))
            time.sleep(0.01)
            ids["runs"].append(_run(talkative, "sess-42", "ana", "Thanks!", model="house-model"))
            ids["quiet"] = _run(quiet, "sess-quiet", "bo", QUIET_PROMPT)
            for manager in (talkative, quiet):
                assert manager.flush(10), manager.get_tracer_info()
        finally:
            talkative.shutdown()
            quiet.shutdown()
        stack = Stack(base_url, ids, big_trace_id=None)

        def collected():
            assert collector.poll() is None, log_path.read_text()
            traces = stack.api("/ai/traces", lookback="1h", limit=50)["traces"]
            return len(traces) == 4
        wait_until(collected, timeout=90, interval=0.3, message="the collector to finalize the agent traces")
        yield stack


def _llm_span(stack, trace_id):
    spans = stack.api(f"/traces/{trace_id}")["spans"]
    (span,) = [s for s in spans if s["name"].startswith("chat ")]
    return span["span_id"]


def ready(page, flag):
    page.wait_for_function(f"window.__contrail && window.__contrail.{flag}")


def shot(page, name):
    """A screenshot once the status bar has its first answer (the docs show a settled page)."""
    page.wait_for_function("!document.querySelector('#status-text').textContent.includes('checking')")
    screenshot(page, name)


def test_session_page_lists_its_runs_in_order_with_steps_and_errors(page, stack):
    page.goto("/ai/sessions/sess-42")
    ready(page, "sessionReady")
    assert page.locator("#session-error").is_hidden(), page.locator("#session-error").inner_text()
    runs = page.locator("#session-runs > li.run")
    assert runs.count() == 3
    assert [runs.nth(i).get_attribute("data-trace-id") for i in range(3)] == stack.ids["runs"]  # oldest first
    assert [runs.nth(i).locator(".run-no").inner_text() for i in range(3)] == ["#1", "#2", "#3"]
    # the run whose agent raised is marked failed, with its error; the others are ok
    assert ["run-failed" in (runs.nth(i).get_attribute("class") or "") for i in range(3)] == [False, True, False]
    assert "planner gave up" in runs.nth(1).locator(".run-errors").inner_text()
    # each run's steps in the order they happened: phase, tool, LLM call (with tokens and cost)
    steps = runs.first.locator(".steps > li")
    labels = [steps.nth(i).locator("a").first.inner_text() for i in range(steps.count())]
    assert labels == ["Phase: planning", "Tool: forecast", "LLM: contrail-standin-1"], labels
    assert "120 in / 40 out tokens" in steps.nth(2).inner_text() and "$" in steps.nth(2).inner_text()
    assert steps.nth(2).locator("a.llm-link").get_attribute("href").startswith(f"/ai/llm/{stack.ids['runs'][0]}/")
    summary = page.locator("#session-summary").inner_text()
    assert "ana" in summary and "trip-planner" in summary and "3 (1 failed)" in summary
    cost = page.locator('#session-summary dd[data-col="cost"]')
    assert cost.inner_text().endswith("+ unpriced") and "CONTRAIL_PRICE_TABLE" in cost.get_attribute("title")
    shot(page, "ai-session")
    page.console.assert_clean()

    # runs come a page at a time (?limit=): the next page continues the order and the numbering
    page.goto("/ai/sessions/sess-42?limit=2")
    ready(page, "sessionRuns === 2")
    assert "2 of 3 runs shown" in page.locator("#runs-count").inner_text()
    page.click("#more-runs")
    page.wait_for_function("window.__contrail.sessionRuns === 3")
    assert [runs.nth(i).get_attribute("data-trace-id") for i in range(3)] == stack.ids["runs"]
    assert runs.nth(2).locator(".run-no").inner_text() == "#3" and page.locator("#more-runs").is_hidden()

    # the user link leads to the user's page: usage over time and their sessions
    page.click("#session-summary a[href='/ai/users/ana']")
    page.wait_for_url("**/ai/users/ana")
    ready(page, "userReady")
    assert page.locator("#user-error").is_hidden(), page.locator("#user-error").inner_text()
    assert [r.get_attribute("data-session-id") for r in page.locator("#user-sessions tbody tr").all()] == ["sess-42"]
    models = page.locator("#user-models tbody").inner_text()
    assert "contrail-standin-1" in models and "house-model" in models
    assert "house-model" in page.locator("#user-note").inner_text()
    page.wait_for_function("document.querySelector('#chart-user-cost').data && document.querySelector('#chart-user-cost').data.length === 2")
    shot(page, "ai-user")
    page.console.assert_clean()


def test_llm_viewer_shows_recorded_content_and_hides_unrecorded(page, stack):
    trace_id = stack.ids["runs"][0]
    page.goto(f"/ai/llm/{trace_id}/{_llm_span(stack, trace_id)}")
    ready(page, "llmReady")
    assert page.locator("#llm-error").is_hidden(), page.locator("#llm-error").inner_text()
    assert page.locator("#content-note").inner_text().startswith("Recorded content.")
    prompt = page.locator("#prompt-messages")
    assert prompt.locator(".message").count() == 2
    assert "Weather in Lisbon" in prompt.inner_text() and "[EMAIL]" in prompt.inner_text()
    assert SECRET_EMAIL not in page.content()  # redacted before it left the traced process
    assert "Sunny, about 24C" in page.locator("#completion-messages").inner_text()
    tool_calls = page.locator("#tool-calls").inner_text()
    assert "book_hotel" in tool_calls and '"nights": 2' in tool_calls
    parameters = page.locator("#llm-parameters").inner_text()
    assert "temperature" in parameters and "0.3" in parameters and "max_tokens" in parameters
    assert page.locator('#llm-summary dd[data-col="input-tokens"]').inner_text() == "120"
    assert page.locator('#llm-summary dd[data-col="output-tokens"]').inner_text() == "40"
    assert page.locator('#llm-summary dd[data-col="latency"]').inner_text().endswith("ms")
    assert page.locator('#llm-summary dd[data-col="cost"]').inner_text() == "$0.000056"  # the demo model is priced
    shot(page, "llm-call")
    page.console.assert_clean()

    # the trace page's span details lead to the viewer too
    page.goto(f"/trace/{trace_id}?span={_llm_span(stack, trace_id)}")
    ready(page, "traceReady")
    assert "Session sess-42" in page.locator("#detail-body .ai-links").inner_text()
    page.click("#open-llm-call")
    page.wait_for_url(f"**/ai/llm/{trace_id}/**")
    ready(page, "llmReady")
    assert "Weather in Lisbon" in page.locator("#prompt-messages").inner_text()
    page.console.assert_clean()

    quiet = stack.ids["quiet"]
    page.goto(f"/ai/llm/{quiet}/{_llm_span(stack, quiet)}")
    ready(page, "llmReady")
    note = page.locator("#content-note")
    assert note.inner_text().startswith("Content not recorded.") and "CONTRAIL_RECORD_CONTENT" in note.inner_text()
    assert "content-missing" in note.get_attribute("class")
    assert page.locator("#prompt-messages .message").count() == 0
    assert page.locator("#prompt-messages .not-recorded").inner_text() == "Not recorded."
    assert page.locator("#completion-messages .not-recorded").inner_text() == "Not recorded."
    assert QUIET_PROMPT not in page.content()
    assert page.locator('#llm-summary dd[data-col="input-tokens"]').inner_text() == "120"  # usage is not content
    shot(page, "llm-call-unrecorded")
    page.console.assert_clean()


def test_ai_page_reaches_sessions_and_users_and_finds_them_by_id(page, stack):
    page.goto("/ai?lookback=1h")
    ready(page, "aiReady")
    assert page.locator("#ai-error").is_hidden(), page.locator("#ai-error").inner_text()
    sessions = [r.get_attribute("data-session-id") for r in page.locator("#ai-sessions-table tbody tr").all()]
    assert sessions == ["sess-quiet", "sess-42"]  # latest run first
    users = {r.get_attribute("data-user-id") for r in page.locator("#ai-users-table tbody tr").all()}
    assert users == {"ana", "bo"}
    note = page.locator("#unpriced-note")
    assert note.is_visible() and "house-model" in note.inner_text() and "CONTRAIL_PRICE_TABLE" in note.inner_text()
    demo = page.locator('#models-table tbody tr[data-model="contrail-standin-1"] td[data-col="cost"]')
    assert demo.inner_text().startswith("$")
    page.locator("#ai-sessions-table").scroll_into_view_if_needed()
    shot(page, "ai-sessions")
    page.click("#ai-sessions-table a[href='/ai/sessions/sess-42']")
    page.wait_for_url("**/ai/sessions/sess-42")
    ready(page, "sessionReady")
    assert page.locator("#session-runs > li.run").count() == 3

    page.goto("/ai?lookback=1h")
    ready(page, "aiReady")
    page.select_option("#find-kind", "user")
    page.fill("#find-id", "bo")
    page.click("#ai-find button[type=submit]")
    page.wait_for_url("**/ai/users/bo")
    ready(page, "userReady")
    assert [r.get_attribute("data-session-id") for r in page.locator("#user-sessions tbody tr").all()] == ["sess-quiet"]

    page.goto("/ai/sessions/no-such-session")
    ready(page, "sessionReady")
    assert "no traces of session" in page.locator("#session-error").inner_text()
    assert requests.get(f"{stack.base_url}/ai/sessions/%01", timeout=10).status_code == 400
    page.console.errors.clear()  # the 404 of the unknown session is logged by the browser as a failed request


def test_doc_screenshots_of_the_ai_pages():
    """docs/dashboard.md shows these pages; CONTRAIL_UPDATE_DOC_IMAGES=1 refreshes the images from this run's."""
    for name in ("ai-sessions", "ai-session", "ai-user", "llm-call", "llm-call-unrecorded"):
        check_doc_image(name, name, "the AI view tests")
