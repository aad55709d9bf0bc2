"""Application metrics end to end: a process records them, a real collector stores them, the API reads them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.servers import wait_until
from tests.web.test_openapi import check_conforms

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def test_recorded_metrics_read_back_as_sums_rates_gauges_and_percentiles(stack_env, collector):
    result = subprocess.run([sys.executable, str(HERE / "metrics_app.py")], env=stack_env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    recorded = json.loads(result.stdout.strip().splitlines()[-1])
    assert recorded["info"]["metric_points_exported"] >= 6 and recorded["info"]["metric_series_dropped"] == 0

    from web.settings import WebSettings
    from web import create_app

    app = create_app(settings=WebSettings.load(env=stack_env))
    client = app.test_client()
    window = "lookback=2h&step=1h&service=shop"

    def stored(path):
        def check():
            body = client.get(path).get_json()
            return body if body["points"] else None
        return check

    try:
        gauge = wait_until(stored(f"/api/v1/metrics/active_sessions?{window}"), timeout=60, message="the gauge")
    except AssertionError:
        collector.terminate()
        raise AssertionError(collector.communicate(timeout=20)[0][-3000:]) from None

    listing = client.get("/api/v1/metrics").get_json()["metrics"]
    by_name = {m["name"]: m for m in listing}
    assert by_name["llm_requests_total"]["services"] == ["shop"]
    assert by_name["llm_requests_total"]["kind"] == "counter"
    assert by_name["llm_requests_total"]["attributes"] == {"model": ["claude", "gpt"]}
    assert by_name["llm_request_duration"]["unit"] == "s"
    assert by_name["active_sessions"]["attributes"] == {"region": ["eu"]}

    counter = client.get(f"/api/v1/metrics/llm_requests_total?{window}").get_json()
    assert counter["series"] == 2
    assert sum(p["sum"] for p in counter["points"]) == 510
    assert all(p["rate"] == pytest.approx(p["sum"] / 3600) for p in counter["points"])
    gpt = client.get(f"/api/v1/metrics/llm_requests_total?{window}&model=gpt").get_json()
    assert gpt["series"] == 1 and sum(p["sum"] for p in gpt["points"]) == 410
    minutes = client.get("/api/v1/metrics/llm_requests_total?lookback=2h&step=1m&model=claude").get_json()
    assert minutes["resolution_s"] == 60 and sum(p["sum"] for p in minutes["points"]) == 100
    assert all(p["rate"] == pytest.approx(p["sum"] / 60) for p in minutes["points"])

    (point,) = gauge["points"]
    assert (point["last"], point["min"], point["max"]) == (5.0, 3.0, 9.0)

    (latency,) = client.get(f"/api/v1/metrics/llm_request_duration?{window}").get_json()["points"]
    durations = recorded["durations"]
    assert latency["count"] == 500 and latency["sum"] == pytest.approx(sum(durations))
    for label, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99)):
        exact = durations[int(q * (len(durations) - 1))]
        assert latency[label] == pytest.approx(exact, rel=0.025), label  # exponential buckets ~1 % + bins 1 %
    assert recorded["trace_id"] in {e["trace_id"] for e in latency["exemplars"]}

    for path in ("/api/v1/metrics", f"/api/v1/metrics/llm_request_duration?{window}",
                 f"/api/v1/metrics/llm_requests_total?{window}", f"/api/v1/metrics/active_sessions?{window}",
                 "/api/v1/metrics/unknown", "/api/v1/metrics/x?step=7s"):
        check_conforms(path, client.get(path))
