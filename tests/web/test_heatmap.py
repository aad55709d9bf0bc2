"""GET /api/v1/stats/heatmap, /stats/heatmap/traces and /traces/tail on SQLite and PostgreSQL."""

from __future__ import annotations

import random
import time

import pytest

from collector_worker.finalizer import finalize_ready, on_spans_stored
from collector_worker.storage import open_engine
from collector_worker.storage.writer import store_spans
from tests.web.seed import new_trace_id, span, store
from web.settings import WebSettings

MINUTE_NS = 60 * 10**9


def store_now(database_url: str, spans: list[dict]) -> None:
    """Store and finalize as a collector would now: the traces' finalized_ns is the present, not a fixed time."""
    engine = open_engine(database_url)
    try:
        with engine.begin() as conn:
            on_spans_stored(conn, store_spans(conn, spans, received_ns=time.time_ns() - 5 * 10**9))
        settings = WebSettings.load(env={}, quiet_period="1s")
        while finalize_ready(engine, settings, "tests", now_ns=time.time_ns()):
            pass
    finally:
        engine.dispose()


def seeded_traces(database_url, base_ns: int, n: int = 60, seed: int = 3, now: bool = False,
                  spread_ns: int = 20 * MINUTE_NS) -> list[dict]:
    """``n`` traces over ``spread_ns`` (20 minutes) from ``base_ns``: two root services, durations 1 ms..4 s, some failing.

    Returns the ground truth per trace: id, root service, start, duration (ns) and whether it failed.
    """
    rng = random.Random(seed)
    truth, spans = [], []
    for i in range(n):
        trace_id = new_trace_id()
        service = ("gateway", "billing")[i % 2]
        start = base_ns + rng.randrange(spread_ns)
        duration_ms = round(10 ** rng.uniform(0, 3.6), 3)
        failed = rng.random() < 0.3
        root = span(trace_id, "POST /pay" if service == "billing" else "GET /home", service, start_ns=start,
                    duration_ms=duration_ms, kind="server", status="error" if failed else "ok")
        child = span(trace_id, "query", "db", start_ns=start + 1000, duration_ms=duration_ms / 3,
                     parent=root["span_id"])
        spans += [root, child]
        truth.append({"trace_id": trace_id, "service": service, "operation": root["name"], "start_ns": start,
                      "duration_ns": root["end_ns"] - root["start_ns"], "error": failed})
    (store_now if now else store)(database_url, spans)
    return truth


def get(client, path, **query):
    response = client.get(path, query_string=query)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def cell_of(heatmap: dict, start_ns: int, duration_ns: int) -> tuple[int, int] | None:
    """Where a trace of this start and duration belongs, by the column and row bounds the API answered."""
    col = next((i for i, c in enumerate(heatmap["columns"]) if c["start_ns"] <= start_ns < c["end_ns"]), None)
    row = next((r["row"] for r in heatmap["rows"] if r["min_ns"] <= duration_ns <= r["max_ns"]), None)
    return None if col is None or row is None else (col, row)


def test_heatmap_counts_every_trace_in_its_cell_with_errors(client, database_url):
    base = (time.time_ns() // MINUTE_NS - 40) * MINUTE_NS
    truth = seeded_traces(database_url, base)
    heatmap = get(client, "/api/v1/stats/heatmap", lookback="1h", step="5m")
    assert heatmap["scope"] == "trace" and heatmap["step_s"] == 300 and heatmap["resolution"] == 60
    expected: dict[tuple[int, int], list[int]] = {}
    for t in truth:
        cell = cell_of(heatmap, t["start_ns"], t["duration_ns"])
        assert cell is not None, t
        counts = expected.setdefault(cell, [0, 0])
        counts[0] += 1
        counts[1] += t["error"]
    got = {(c, r): [n, e] for c, r, n, e in heatmap["cells"]}
    assert got == expected
    assert heatmap["count"] == len(truth) and heatmap["error_count"] == sum(t["error"] for t in truth) > 0
    # rows are contiguous, each starting one nanosecond above the one below
    rows = heatmap["rows"]
    assert all(b["min_ns"] == a["max_ns"] + 1 for a, b in zip(rows, rows[1:]))

    billing = get(client, "/api/v1/stats/heatmap", lookback="1h", step="5m", service="billing")
    assert billing["count"] == sum(t["service"] == "billing" for t in truth)


def test_heatmap_of_spans_per_operation(client, database_url):
    base = (time.time_ns() // MINUTE_NS - 40) * MINUTE_NS
    truth = seeded_traces(database_url, base, n=20)
    heatmap = get(client, "/api/v1/stats/heatmap", lookback="1h", scope="span", service="db", operation="query")
    assert heatmap["count"] == len(truth) and heatmap["error_count"] == 0
    assert heatmap["step_s"] == 60  # an hour drawn in 60 one-minute columns


def test_region_traces_are_exactly_the_traces_counted_in_the_region(client, database_url):
    base = (time.time_ns() // MINUTE_NS - 40) * MINUTE_NS
    truth = seeded_traces(database_url, base)
    heatmap = get(client, "/api/v1/stats/heatmap", lookback="1h", step="5m", service="gateway",
                  operation="GET /home")
    rows = heatmap["rows"]
    cols = heatmap["columns"]
    # the busiest cell, then a region of two columns x the middle rows
    busiest = max(heatmap["cells"], key=lambda cell: cell[2])
    regions = [(busiest[0], busiest[0], busiest[1], busiest[1])]
    regions.append((1, 3, rows[len(rows) // 3]["row"], rows[2 * len(rows) // 3]["row"]))
    for c0, c1, r0, r1 in regions:
        low = next(r for r in rows if r["row"] == r0)["min_ns"]
        high = next(r for r in rows if r["row"] == r1)["max_ns"]
        answer = get(client, "/api/v1/stats/heatmap/traces", service="gateway", operation="GET /home",
                     start=cols[c0]["start_ns"], end=cols[c1]["end_ns"], min_duration=f"{low}ns",
                     max_duration=f"{high}ns", limit=1000)
        expected = {t["trace_id"] for t in truth if t["service"] == "gateway"
                    and cols[c0]["start_ns"] <= t["start_ns"] < cols[c1]["end_ns"] and low <= t["duration_ns"] <= high}
        counted = sum(n for c, r, n, _ in heatmap["cells"] if c0 <= c <= c1 and r0 <= r <= r1)
        assert {t["trace_id"] for t in answer["traces"]} == expected
        assert answer["total"] == len(expected) == counted
    errors = get(client, "/api/v1/stats/heatmap/traces", start=base, end=base + 30 * MINUTE_NS, status="error",
                 limit=1000)
    assert {t["trace_id"] for t in errors["traces"]} == {t["trace_id"] for t in truth if t["error"]}
    # paging by cursor walks every trace once
    seen, cursor = [], None
    while True:
        page = get(client, "/api/v1/stats/heatmap/traces", start=base, end=base + 30 * MINUTE_NS, limit=7,
                   sort="duration_desc", **({"cursor": cursor} if cursor else {}))
        seen += [t["trace_id"] for t in page["traces"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert sorted(seen) == sorted(t["trace_id"] for t in truth) and len(seen) == len(set(seen))


@pytest.mark.parametrize("path, query, parameter", [
    ("/api/v1/stats/heatmap", {"scope": "everything"}, "scope"),
    ("/api/v1/stats/heatmap", {"step": "30s"}, "step"),
    ("/api/v1/stats/heatmap", {"step": "1m", "lookback": "7d"}, "step"),
    ("/api/v1/stats/heatmap", {"lookback": "soon"}, "lookback"),
    ("/api/v1/stats/heatmap", {"service": "a\x00b"}, "service"),
    ("/api/v1/stats/heatmap/traces", {"end": "2026-01-01T00:00:00Z"}, "start"),
    ("/api/v1/stats/heatmap/traces", {"start": "2026-01-01T00:00:00Z"}, "end"),
    ("/api/v1/stats/heatmap/traces", {"start": "2026-01-01T01:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
    ("/api/v1/stats/heatmap/traces", {"start": "1", "end": "2", "min_duration": "2s", "max_duration": "1s"},
     "max_duration"),
    ("/api/v1/stats/heatmap/traces", {"start": "1", "end": "2", "cursor": "!!"}, "cursor"),
    ("/api/v1/stats/heatmap/traces", {"start": "1", "end": "2", "sort": "name"}, "sort"),
    ("/api/v1/traces/tail", {"cursor": "garbage"}, "cursor"),
    ("/api/v1/traces/tail", {"window": "2d"}, "window"),
    ("/api/v1/traces/tail", {"limit": "0"}, "limit"),
    ("/api/v1/traces/tail", {"status": "maybe"}, "status"),
])
def test_bad_parameters_are_400_naming_the_parameter(client, path, query, parameter):
    response = client.get(path, query_string=query)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "bad_parameter" and error["parameter"] == parameter and error["message"]


def test_tail_hands_out_each_finalized_trace_once_with_filters(client, database_url):
    now = time.time_ns()
    first = seeded_traces(database_url, now - 4 * MINUTE_NS, n=6, now=True, spread_ns=MINUTE_NS)
    opening = get(client, "/api/v1/traces/tail", limit=4)
    assert len(opening["traces"]) == 4 and opening["more"] is False
    finalized = [t["finalized_ns"] for t in opening["traces"]]
    assert finalized == sorted(finalized)  # oldest first, ending with the newest
    cursor = opening["cursor"]
    assert get(client, "/api/v1/traces/tail", cursor=cursor)["traces"] == []

    later = seeded_traces(database_url, now - 2 * MINUTE_NS, n=6, seed=9, now=True, spread_ns=MINUTE_NS)
    polled = get(client, "/api/v1/traces/tail", cursor=cursor)
    assert {t["trace_id"] for t in polled["traces"]} == {t["trace_id"] for t in later}
    assert get(client, "/api/v1/traces/tail", cursor=polled["cursor"])["traces"] == []
    # the search filters apply: only billing's failed traces
    filtered = get(client, "/api/v1/traces/tail", cursor=cursor, service="billing", status="error")
    assert {t["trace_id"] for t in filtered["traces"]} == {
        t["trace_id"] for t in later if t["service"] == "billing" and t["error"]}
    # a small page says there is more, and the cursor walks on without repeats
    page = get(client, "/api/v1/traces/tail", cursor=cursor, limit=4)
    rest = get(client, "/api/v1/traces/tail", cursor=page["cursor"], limit=4)
    assert page["more"] is True and rest["more"] is False
    assert {t["trace_id"] for t in page["traces"] + rest["traces"]} == {t["trace_id"] for t in later}
    # traces that started before the window are not tailed
    windowed = get(client, "/api/v1/traces/tail", window="150s")  # later started 1-2 minutes ago, first 3-4
    assert {t["trace_id"] for t in windowed["traces"]} == {t["trace_id"] for t in later}
    assert first


def test_stats_grouped_by_service_merge_the_operations_histograms(client, dataset):
    by_op = get(client, "/api/v1/stats", lookback="1h")
    by_service = get(client, "/api/v1/stats", lookback="1h", group_by="service")
    assert by_service["group_by"] == "service"
    services = {row["service"]: row for row in by_service["operations"]}
    assert set(services) == {row["service"] for row in by_op["operations"]}
    for name, row in services.items():
        ops = [o for o in by_op["operations"] if o["service"] == name]
        assert row["operation"] == "" and row["count"] == sum(o["count"] for o in ops)
        assert row["error_count"] == sum(o["error_count"] for o in ops)
    # retrieval: search 200 ms and 100 ms, rerank 50 ms -> the merged median is the 100 ms call (within 1 %)
    assert services["retrieval"]["p50_ms"] == pytest.approx(100.0, rel=0.01)
    assert services["retrieval"]["max_ms"] == pytest.approx(200.0, rel=0.01)
    assert {s["service"] for s in by_service["series"]} == set(services)
    assert client.get("/api/v1/stats?group_by=host").status_code == 400
