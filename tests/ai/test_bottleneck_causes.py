"""Bottleneck hints name their likely cause from stored traces and profiles: the slowest child operation,
Celery queue wait, an LLM call, the operation's own code and its hot function, the error it fails with."""

from __future__ import annotations

import time

import pytest

from collector_worker import profile_store
from collector_worker.storage import open_engine
from tests.web.seed import new_span_id, new_trace_id, span, store
from tests.web.test_openapi import check_conforms
from web.settings import WebSettings

MS = 1_000_000
MINUTE = 60_000 * MS
CALLS = 12


def request(service, operation, start_ns, duration_ms, children=(), attributes=None, kind="server"):
    """One trace: a root span and children ``(service, name, duration_ms, attributes, error)`` laid end to end; a
    failing child fails the root too."""
    trace_id, root = new_trace_id(), new_span_id()
    failed = any(child[4] for child in children)
    spans = [span(trace_id, operation, service, start_ns=start_ns, duration_ms=duration_ms, span_id=root, kind=kind,
                  attributes=attributes, status="error" if failed else "unset")]
    offset = 0.5
    for child_service, name, child_ms, child_attributes, error in children:
        spans.append(span(trace_id, name, child_service, start_ns=start_ns + int(offset * MS), duration_ms=child_ms,
                          parent=root, attributes=child_attributes, status="error" if error else "unset",
                          events=[{"name": "exception", "time_ns": start_ns + int(offset * MS),
                                   "attributes": {"exception.type": "CardDeclined",
                                                  "exception.message": "insufficient funds"}}] if error else None))
        offset += child_ms
    return spans


def history(now_ns):
    """An hour of baseline traffic an hour ago, then the last ten minutes where five operations went wrong."""
    spans = []
    for i in range(CALLS):
        old, new = now_ns - 70 * MINUTE + i * MINUTE, now_ns - 10 * MINUTE + i * 30_000 * MS
        spans += request("shop", "POST /checkout", old, 10 + i % 3, [("shop", "render", 2, None, False)])
        spans += request("shop", "POST /checkout", new, 100 + i % 3,
                         [("payments", "charge card", 80, None, False), ("shop", "render", 5, None, False)])
        spans += request("agent", "summarize", old, 12, [("agent", "chat gpt-4o", 8,
                                                          {"gen_ai.request.model": "gpt-4o"}, False)])
        spans += request("agent", "summarize", new, 200, [("agent", "load notes", 10, None, False),
                                                          ("agent", "chat gpt-4o", 180,
                                                           {"gen_ai.request.model": "gpt-4o"}, False)])
        spans += request("worker", "tasks.resize", old, 10, kind="consumer", attributes={"celery.queue_wait_ms": 1.0})
        spans += request("worker", "tasks.resize", new, 40, kind="consumer",
                         attributes={"celery.queue_wait_ms": 400.0})
        spans += request("reports", "GET /report", old, 20, [("reports", "query", 15, None, False)])
        spans += request("reports", "GET /report", new, 300, [("reports", "query", 15, None, False)])
        spans += request("shop", "POST /pay", old, 10, [("ledger", "charge ledger", 5, None, False)])
        failing = i % 2 == 0  # fails fast: the operation's slowest recent traces are its successes
        spans += request("shop", "POST /pay", new, 8 if failing else 10, [("ledger", "charge ledger", 5, None, failing)])
    return spans


def report_profile(now_ns):
    trace_id = new_trace_id()
    return {"trace_id": trace_id, "span_id": new_span_id(), "operation": "GET /report", "name": "report",
            "mode": "slow", "service": "reports", "resource": {}, "start_ns": now_ns - 5 * MINUTE,
            "end_ns": now_ns - 5 * MINUTE + 300 * MS, "interval_ns": 5 * MS, "samples": 60, "dropped": 0,
            "stacks": [("report (app/report.py:10);format_rows (app/report.py:40)", 50),
                       ("report (app/report.py:10);query (app/db.py:5)", 10)]}


@pytest.fixture
def client(database_url, data_dir):
    now_ns = time.time_ns()
    store(database_url, history(now_ns))
    engine = open_engine(database_url)
    try:
        profile_store.store_entry(engine, [report_profile(now_ns)])
    finally:
        engine.dispose()
    from web import create_app

    app = create_app(settings=WebSettings.load(env={}, database_url=database_url, data_dir=str(data_dir)))
    return app.test_client()


def test_each_flagged_operation_names_its_likely_cause(client):
    path = "/api/v1/ai/bottlenecks?recent=15m&baseline=2h"
    response = client.get(path)
    check_conforms(path, response)
    hints = {h["operation"]: h for h in response.get_json()["bottlenecks"]}
    assert set(hints) == {"POST /checkout", "summarize", "tasks.resize", "GET /report", "POST /pay",
                          "chat gpt-4o", "charge ledger"}  # the two children went wrong too

    checkout = hints["POST /checkout"]["causes"][0]
    assert (checkout["kind"], checkout["service"], checkout["operation"]) == ("child", "payments", "charge card")
    assert checkout["share"] == pytest.approx(80 / 101, abs=0.02)
    assert hints["POST /checkout"]["likely_cause"] == (
        f"its slowest child operation, payments · charge card, takes {checkout['share'] * 100:.0f} % of its time")

    llm = hints["summarize"]["causes"][0]
    assert (llm["kind"], llm["model"]) == ("llm_call", "gpt-4o") and llm["share"] == pytest.approx(0.9, abs=0.01)
    assert hints["summarize"]["likely_cause"] == "LLM calls (gpt-4o) take 90 % of its time"

    wait = hints["tasks.resize"]["causes"][0]
    assert wait["kind"] == "queue_wait" and wait["avg_ms"] == pytest.approx(400)
    assert wait["share"] == pytest.approx(400 / 440, abs=0.01)

    report = hints["GET /report"]
    assert [c["kind"] for c in report["causes"]][:2] == ["self_time", "hot_function"]
    assert report["causes"][1]["function"] == "format_rows (app/report.py:40)"
    assert report["likely_cause"] == ("its own code (self time) takes 95 % of its time; "
                                      "hot function format_rows (app/report.py:40): 83 % of its profile samples")

    pay = hints["POST /pay"]
    assert pay["flag"] == "more_errors"
    assert pay["causes"][0]["kind"] == "error"
    assert pay["likely_cause"].startswith("fails with CardDeclined: insufficient funds in ledger · charge ledger (")
    assert hints["charge ledger"]["likely_cause"].startswith("fails with CardDeclined: insufficient funds itself (")
    assert hints["chat gpt-4o"]["causes"][0]["kind"] == "self_time"
