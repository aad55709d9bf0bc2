"""Loops in traces the real collector assembled: spans sent by TracingManagers through the Redis stream to a
collector, read back with the storage queries, then distilled and drawn.

The assembler rightly puts every member of a sequential loop on the critical path; these tests prove the
exporters fold such loops anyway and keep what follows the loop (an error) in the tree.
"""

from __future__ import annotations

import pytest

from collector_worker.exporters import export_trace
from collector_worker.exporters.distiller import DEFAULT_BUDGET_CHARS
from collector_worker.storage import open_engine
from collector_worker.storage.queries import get_trace, search_traces, TraceQuery
from tests.ai.test_exports import mermaid_parser  # noqa: F401  (mermaid's own parser under node)
from tests.cli.conftest import collector, collector_settings  # noqa: F401  (a real collector over real Redis)
from tests.support.servers import wait_until
from tracer import TracingManager

LOOP = 1000


def _send_and_read_back(settings, tmp_path, build) -> dict:
    """Run ``build(manager)`` under a real tracer, wait for the collector to finalize, return the API trace."""
    manager = TracingManager(service_name="agent", redis_url=settings.redis_url, stream=settings.stream,
                             data_dir=str(tmp_path / "tracer"), schedule_delay="0.05s")
    trace_id, span_count = build(manager)
    manager.flush(30)
    manager.shutdown()
    engine = open_engine(settings.database_url, migrate=False)

    def finalized():
        with engine.connect() as conn:
            found = search_traces(conn, TraceQuery(limit=5))["traces"]
        return any(t["trace_id"] == trace_id and t["span_count"] == span_count for t in found)

    try:
        wait_until(finalized, timeout=60, message="the collector to store and finalize the trace")
        with engine.connect() as conn:
            return get_trace(conn, trace_id)
    finally:
        engine.dispose()


def _tool_loop_then_error(manager):
    with manager.span("invoke_agent planner", kind="server") as root:
        for i in range(LOOP):
            with manager.span("execute_tool lookup", **{"gen_ai.tool.name": "lookup", "call.index": i}):
                pass
        failing = manager.start_span("write answer")
        manager.finish_span(failing, error=RuntimeError("disk full"))
    return format(root.get_span_context().trace_id, "032x"), LOOP + 2


@pytest.fixture
def loop_trace(collector, tmp_path):  # noqa: F811
    return _send_and_read_back(collector, tmp_path, _tool_loop_then_error)


def test_collector_marks_every_loop_member_critical(loop_trace):
    """The condition the exporters must handle: a sequential loop is all on the critical path."""
    tools = [s for s in loop_trace["spans"] if s["name"] == "execute_tool lookup"]
    assert len(tools) == LOOP
    assert sum(1 for s in tools if s["critical_path"]) > LOOP // 2


def test_distiller_folds_a_critical_loop_and_keeps_the_error_after_it(loop_trace):
    _, text = export_trace(loop_trace, "text")
    assert len(text) <= DEFAULT_BUDGET_CHARS
    assert "output cut" not in text and "elided" not in text
    tree = text.split("errors (")[0]
    fold = [line for line in tree.splitlines() if "execute_tool lookup [agent] × " in line]
    assert len(fold) == 1, text
    assert f"× {LOOP} similar" in fold[0] and " total (p50 " in fold[0] and ", max " in fold[0]
    assert tree.count("execute_tool lookup") <= 3  # the fold and its slowest member, not a line per call
    assert "(slowest of the folded)" in tree
    failing = next(line for line in tree.splitlines() if "write answer [agent]" in line)
    assert "ERROR" in failing
    assert "disk full" in text.split("errors (")[1]


def test_distiller_keeps_a_failing_loop_member_visible(collector, tmp_path):  # noqa: F811
    def loop_with_one_failure(manager):
        with manager.span("run batch", kind="server") as root:
            for i in range(300):
                span = manager.start_span("execute_tool lookup")
                manager.finish_span(span, error=ValueError("no such key") if i == 137 else None)
        return format(root.get_span_context().trace_id, "032x"), 301

    trace = _send_and_read_back(collector, tmp_path, loop_with_one_failure)
    _, text = export_trace(trace, "text")
    tree = text.split("errors (")[0]
    assert "execute_tool lookup [agent] × 300 similar" in tree and "1 ERROR" in tree
    member = [line for line in tree.splitlines() if "(failed" in line]
    assert len(member) == 1 and "ERROR" in member[0], text
    assert "no such key" in text.split("errors (")[1]


def test_mermaid_flowchart_folds_the_loop(loop_trace, mermaid_parser):  # noqa: F811
    _, text = export_trace(loop_trace, "mermaid", diagram="flowchart")
    assert mermaid_parser([text]) == [{"ok": True, "type": "flowchart-v2"}]
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    nodes = [line for line in lines if '["' in line]
    assert len(nodes) < 10, text
    assert any(f"execute_tool lookup x {LOOP} - agent - " in line for line in nodes)
    assert any("slowest of the folded" in line for line in lines)
    assert any("write answer - agent - " in line and "error RuntimeError disk full" in line for line in nodes)
