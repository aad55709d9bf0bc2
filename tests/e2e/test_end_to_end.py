"""One trace across two service processes, a real collector subprocess and the API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.servers import wait_until

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def _run_service(script: str, env: dict, *args: str) -> dict:
    result = subprocess.run([sys.executable, str(HERE / script), *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_trace_across_two_services_reads_back_as_one(stack_env, collector):
    a = _run_service("service_a.py", stack_env)
    assert a["exported"] == 4
    b = _run_service("service_b.py", stack_env, json.dumps(a["carrier"]))

    from web.settings import WebSettings
    from web import create_app

    app = create_app(settings=WebSettings.load(env=stack_env))
    client = app.test_client()

    def finished_trace():
        response = client.get(f"/api/v1/traces/{a['trace_id']}")
        if response.status_code != 200:
            return None
        body = response.get_json()
        return body if body["summary"]["span_count"] == 6 else None

    try:
        body = wait_until(finished_trace, timeout=60, message="the trace in the API")
    except AssertionError:
        response = client.get(f"/api/v1/traces/{a['trace_id']}")
        collector.terminate()
        output = collector.communicate(timeout=20)[0]
        raise AssertionError(f"API said {response.status_code} {response.get_data(as_text=True)[:2000]}; "
                             f"collector output:\n{output[-3000:]}") from None
    spans = {s["name"]: s for s in body["spans"]}
    assert set(spans) == {"handle_order", "reserve_stock", "db.update", "charge_card", "invoice", "render_pdf"}
    assert spans["handle_order"]["parent_span_id"] is None
    assert spans["reserve_stock"]["parent_span_id"] == spans["handle_order"]["span_id"]
    assert spans["db.update"]["parent_span_id"] == spans["reserve_stock"]["span_id"]
    assert spans["charge_card"]["parent_span_id"] == spans["handle_order"]["span_id"]
    assert spans["invoice"]["parent_span_id"] == spans["reserve_stock"]["span_id"]
    assert spans["invoice"]["span_id"] == b["span_id"]
    assert spans["render_pdf"]["parent_span_id"] == spans["invoice"]["span_id"]
    assert {s["service"] for s in body["spans"]} == {"orders", "billing"}
    assert spans["charge_card"]["status"] == "error"
    assert any(e["name"] == "exception" and "card declined" in json.dumps(e["attributes"])
               for e in spans["charge_card"]["events"])
    summary = body["summary"]
    assert summary["root_service"] == "orders" and summary["root_operation"] == "handle_order"
    assert summary["services"] == ["billing", "orders"]
    assert summary["error_count"] == 1 and summary["incomplete"] is False

    # search reads finalized summaries: wait for the re-finalization that the late billing spans caused
    listing = wait_until(lambda: (lambda r: r if r["total"] else None)(
        client.get("/api/v1/traces?service=billing&limit=5").get_json()), timeout=30, message="search results")
    assert [t["trace_id"] for t in listing["traces"]] == [a["trace_id"]]
    assert listing["total"] == 1
