"""The text distiller on a small agent trace and on a 10k-span trace, with budgets."""

from __future__ import annotations

import pytest

from collector_worker.exporters import export_trace
from collector_worker.exporters.distiller import DEFAULT_BUDGET_CHARS
from tests.ai.traces import agent_trace, large_trace


def test_small_trace_shows_tree_times_critical_path_folds_and_errors():
    mimetype, text = export_trace(agent_trace(), "text")
    assert mimetype.startswith("text/plain")
    lines = text.splitlines()
    assert lines[0].startswith("trace 4bf92f3577b34da6a3ce929d0e0e4736 · 812ms · 14 spans · 3 services")
    root = next(line for line in lines if "POST /ask [gateway]" in line)
    assert root.startswith("* POST /ask [gateway] total 812ms self 12.4ms")
    assert "http.route=/ask" in root
    # critical path: root -> agent run -> LLM call -> provider; the failing tool is off it
    critical = [line.strip() for line in lines if line.lstrip().startswith("* ")]
    assert [c.split(" [")[0] for c in critical] == ["* POST /ask", "* invoke_agent research-agent",
                                                      "* chat gpt-4o", "* POST /v1/chat/completions"]
    tool = next(line for line in lines if "execute_tool memo_search" in line and "ERROR" in line)
    assert not tool.lstrip().startswith("*")
    # nesting by indentation: the tool call sits under the retrieval server span
    server = next(line for line in lines if "GET /search [retrieval]" in line)
    assert len(tool) - len(tool.lstrip()) > len(server) - len(server.lstrip())
    assert "SELECT memos [gateway] × 6 similar, 39.0ms total (p50 6.5ms, max 9.0ms)" in text
    errors_at = lines.index("errors (1):")
    assert "TimeoutError: upstream timed out" in lines[errors_at + 1]
    assert "elided" not in text


@pytest.mark.parametrize("budget,unit", [(400, "tokens"), (4000, "chars"), (1200, "chars"), (600, "chars")])
def test_budget_is_honoured_on_small_trace_keeping_critical_path_and_errors(budget, unit):
    _, text = export_trace(agent_trace(), "text", budget=budget, budget_unit=unit)
    limit = budget * 4 if unit == "tokens" else budget
    assert len(text) <= limit
    assert "* POST /ask" in text
    assert "TimeoutError: upstream timed out" in text


@pytest.fixture(scope="module")
def big():
    trace = large_trace()
    assert len(trace["spans"]) >= 10_000
    return trace


def test_large_trace_fits_default_budget_of_a_few_thousand_tokens(big):
    _, text = export_trace(big, "text")
    assert len(text) <= DEFAULT_BUDGET_CHARS
    assert len(text) / 4 < 5000
    assert "10002 spans" in text.splitlines()[0]
    assert "* POST /batch [gateway]" in text and "* write report [gateway]" in text
    assert "psycopg.errors.DeadlockDetected: deadlock detected" in text
    # every handler's repeated queries are either folded or elided, never listed one by one
    assert text.count("SELECT items WHERE id") <= 3


@pytest.mark.parametrize("budget", [6000, 3000, 1200, 700])
def test_large_trace_budget_trims_off_path_detail_and_says_so(big, budget):
    _, text = export_trace(big, "text", budget=budget)
    assert len(text) <= budget
    assert "* POST /batch" in text
    assert "deadlock detected" in text
    elided = next(line for line in text.splitlines() if line.startswith("elided: "))
    assert f"to fit {budget} chars" in elided
    reported = int(elided.split()[1])
    assert 0 < reported <= 10_000


def test_tighter_budgets_never_produce_more_text(big):
    sizes = [len(export_trace(big, "text", budget=b)[1]) for b in (12000, 6000, 3000, 1500)]
    assert sizes == sorted(sizes, reverse=True)


def test_budget_in_tokens_and_bad_arguments():
    _, text = export_trace(large_trace(groups=30, per_group=20), "text", budget=200, budget_unit="tokens")
    assert len(text) <= 800
    with pytest.raises(ValueError):
        export_trace(agent_trace(), "text", budget=0)
    with pytest.raises(ValueError):
        export_trace(agent_trace(), "text", budget_unit="words")
    with pytest.raises(ValueError):
        export_trace(agent_trace(), "yaml")


def test_folding_of_numbered_siblings_shows_an_example_subtree():
    _, text = export_trace(large_trace(groups=30, per_group=5), "text")
    assert "handle <n> batch" not in text  # handler names differ by letters, not numbers
    from tests.ai.traces import TraceBuilder

    b = TraceBuilder()
    root = b.span("job", "w", 0, 100)
    for i in range(12):
        item = b.span(f"process item {i}", "w", i * 8, 7 + (i == 5), root)
        b.span("fetch", "w", i * 8 + 1, 5, item, status="error" if i == 9 else "unset", message="boom")
    _, text = export_trace(b.build(), "text")
    assert "process item <n> [w] × 11 similar" in text or "process item <n> [w] × 12 similar" in text
    assert "× 12 similar, 85.0ms total (p50 7.0ms, max 8.0ms) +12 spans below (1 ERROR below)" in text
    assert "process item 5 [w] total 8.0ms self 3.0ms (slowest of the folded)" in text
    assert "process item 9 [w] total 7.0ms self 2.0ms (errors below)" in text  # shown with its failing child
    assert "fetch [w] total 5.0ms self 5.0ms ERROR" in text
    assert "boom" in text.split("errors (")[1]


def test_trace_without_assembly_fields_still_distils():
    trace = agent_trace()
    for span in trace["spans"]:
        del span["critical_path"], span["self_time_ms"], span["depth"]
    _, text = export_trace(trace, "text")
    assert "* POST /ask [gateway] total 812ms self 12.4ms" in text
    assert "* chat gpt-4o" in text


def test_error_lines_name_the_exception_type_once():
    from tests.ai.traces import TraceBuilder

    b = TraceBuilder()
    root = b.span("run demo.search", "worker", 0, 50, kind="consumer")
    b.span("execute_tool vector_search", "worker", 1, 40, root, status="error",
           message="Retry: Retry in 0.2s: VectorDBUnavailable('503')",
           exception=("celery.exceptions.Retry", "Retry in 0.2s: VectorDBUnavailable('503')"))
    _, text = export_trace(b.build(), "text")
    line = text.split("errors (1):")[1].strip()
    assert line.endswith(": celery.exceptions.Retry: Retry in 0.2s: VectorDBUnavailable('503')"), line


@pytest.mark.parametrize("budget", [500, 300, 200])
def test_a_budget_too_small_for_the_tree_still_starts_with_the_header(budget):
    _, text = export_trace(agent_trace(), "text", budget=budget)
    assert len(text) <= budget
    assert text.startswith("trace 4bf92f3577b34da6a3ce929d0e0e4736 · 812ms · 14 spans"), text
    assert "output cut to fit the budget" in text
