"""Latency histograms (1 % relative error, exact merges) and the statistics tables on both backends."""

from __future__ import annotations

import math
import random

import pytest

from collector_worker import stats
from collector_worker.stats import Histogram, bin_for, bin_value

MS = 1_000_000
S = 1_000_000_000
BASE = 1_700_002_800 * S  # an hour boundary
QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


def exact(sorted_values, q):
    return sorted_values[int(q * (len(sorted_values) - 1))]


def latencies(n, seed):
    rng = random.Random(seed)
    # log-normal around 20 ms with a long tail, plus a few sub-microsecond and multi-second values
    values = [max(1, int(rng.lognormvariate(math.log(20 * MS), 1.5))) for _ in range(n)]
    values[:3] = [1, 700, 90 * S]
    return values


def test_bin_value_within_one_percent_of_every_member():
    rng = random.Random(1)
    for _ in range(20000):
        d = int(10 ** rng.uniform(0.5, 13))
        v = bin_value(bin_for(d))
        assert abs(v - d) / d <= 0.01 + 1e-12, (d, v)
    assert bin_for(0) == 0 and bin_value(0) == 0.0
    assert abs(bin_value(bin_for(1)) - 1) <= 0.01


def test_percentiles_within_one_percent_on_100k_random_latencies():
    values = latencies(100_000, seed=42)
    h = Histogram()
    for v in values:
        h.add(v)
    ordered = sorted(values)
    assert h.count == len(values) and h.max == ordered[-1]
    for q in QUANTILES:
        want = exact(ordered, q)
        got = h.percentile(q)
        assert abs(got - want) / want <= 0.01, (q, got, want)
    assert h.percentile(1.0) == ordered[-1]


def test_merge_across_buckets_equals_one_histogram():
    values = latencies(30_000, seed=7)
    whole = Histogram()
    parts = [Histogram() for _ in range(12)]
    for i, v in enumerate(values):
        whole.add(v)
        parts[i % 12].add(v)
    merged = Histogram()
    for p in parts:
        merged.merge(p)
    assert dict(merged.bins) == dict(whole.bins) and merged.count == whole.count and merged.max == whole.max
    ordered = sorted(values)
    for q in QUANTILES:
        assert merged.percentile(q) == whole.percentile(q)
        assert abs(merged.percentile(q) - exact(ordered, q)) / exact(ordered, q) <= 0.01


def _span(i, start_ns, duration_ns, service="api", name="GET /", error=False):
    return {"trace_id": f"{i:032x}", "span_id": f"{i:016x}", "parent_span_id": None, "name": name,
            "kind": "server", "start_ns": start_ns, "end_ns": start_ns + duration_ns,
            "status_code": "error" if error else "ok", "service": service}


def test_record_and_query_merge_minutes_and_writers(engine):
    rng = random.Random(3)
    spans = []
    for i in range(6000):
        minute = i % 10
        start = BASE + minute * 60 * S + rng.randrange(60 * S)
        duration = max(1, int(rng.lognormvariate(math.log(20 * MS), 1.5)))
        spans.append(_span(i, start, duration, error=(i % 50 == 0)))
    spans.append(_span(99999, BASE, 5 * MS, service="db", name="SELECT"))
    # several "collectors" writing overlapping buckets in separate transactions
    for k in range(3):
        with engine.begin() as conn:
            stats.record_spans(conn, spans[k::3])

    with engine.connect() as conn:
        result = stats.query_stats(conn, service="api", start_ns=BASE, end_ns=BASE + 600 * S, step_s=60)
    [op] = result["operations"]
    assert op["service"] == "api" and op["operation"] == "GET /" and op["count"] == 6000
    assert op["error_count"] == 120 and op["error_rate"] == pytest.approx(0.02)
    assert op["throughput_per_s"] == pytest.approx(6000 / 600)
    durations = sorted(s["end_ns"] - s["start_ns"] for s in spans if s["service"] == "api")
    for name, q in stats.PERCENTILES:
        want = exact(durations, q) / MS
        assert abs(op[name] - want) / want <= 0.0101, (name, op[name], want)
    assert op["max_ms"] == pytest.approx(durations[-1] / MS, abs=0.001)
    assert op["avg_ms"] == pytest.approx(sum(durations) / len(durations) / MS, abs=0.001)
    [series] = result["series"]
    assert [p["bucket"] for p in series["points"]] == [BASE // S + m * 60 for m in range(10)]
    assert sum(p["count"] for p in series["points"]) == 6000
    assert series["points"][0]["time"].endswith("Z")

    # five-minute steps merge minute rows; the hourly rollup gives the same totals and percentiles
    with engine.connect() as conn:
        five = stats.query_stats(conn, start_ns=BASE, end_ns=BASE + 600 * S, step_s=300)
        hourly = stats.query_stats(conn, start_ns=BASE, end_ns=BASE + 3600 * S, step_s=3600)
    assert {o["service"] for o in five["operations"]} == {"api", "db"}
    api5 = [s for s in five["series"] if s["service"] == "api"][0]
    assert [p["count"] for p in api5["points"]] == [3000, 3000]
    assert hourly["resolution"] == 3600
    api_hourly = [o for o in hourly["operations"] if o["service"] == "api"][0]
    assert api_hourly["count"] == 6000 and api_hourly["p99_ms"] == op["p99_ms"]


def test_query_filters_and_empty_window(engine):
    with engine.begin() as conn:
        stats.record_spans(conn, [_span(1, BASE, 3 * MS), _span(2, BASE, 4 * MS, name="POST /")])
    with engine.connect() as conn:
        only = stats.query_stats(conn, service="api", operation="POST /", start_ns=BASE, end_ns=BASE + 60 * S)
        empty = stats.query_stats(conn, start_ns=BASE - 3600 * S, end_ns=BASE - 60 * S)
        traces = stats.query_stats(conn, start_ns=BASE, end_ns=BASE + 60 * S, scope="trace")
    assert [o["operation"] for o in only["operations"]] == ["POST /"]
    assert only["operations"][0]["p50_ms"] == pytest.approx(4.0, rel=0.01)
    assert empty == {"operations": [], "series": [], "resolution": 60, "step_s": 60}
    assert traces["operations"] == []


def test_add_spans_counts_like_adding_each_span():
    from collector_worker.stats import Accumulator

    spans = []
    for i in range(500):
        start = 1_700_000_000 * 1_000_000_000 + i * 7_919_000_000  # spread over minutes and hours
        spans.append({"service": ("api", "db", "x" * 300)[i % 3], "name": ("get", "put", "y" * 600)[i % 3],
                      "start_ns": start, "end_ns": start + (i * 104_729) % 9_000_000 - (5 if i % 50 == 0 else 0),
                      "status_code": "error" if i % 7 == 0 else "ok"})
    spans.append({"service": None, "name": None, "start_ns": 5, "end_ns": 5, "status_code": None})
    one, many = Accumulator(), Accumulator()
    for s in spans:
        one.add("span", str(s.get("service") or ""), str(s.get("name") or ""), s["start_ns"],
                s["end_ns"] - s["start_ns"], s.get("status_code") == "error")
    many.add_spans("span", spans)
    assert many.stats == one.stats
    assert {k: v for k, v in many.hist.items() if v} == {k: v for k, v in one.hist.items() if v}
