"""OTLP JSON round trip through the OpenTelemetry proto classes; Mermaid validated by mermaid's own parser."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_worker.exporters import export_trace, timeline_events
from tests.ai.traces import TraceBuilder, agent_trace, large_trace
from tests.conftest import IN_CI, unavailable

HEX_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def otlp_json_to_proto3_json(value):
    """OTLP/JSON writes ids as hex where plain proto3 JSON expects base64; convert for json_format."""
    if isinstance(value, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in HEX_ID_FIELDS and isinstance(v, str)
                    else otlp_json_to_proto3_json(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [otlp_json_to_proto3_json(v) for v in value]
    return value


def test_otlp_export_round_trips_through_proto_classes():
    trace = agent_trace()
    trace["spans"][1]["links"] = [{"trace_id": "ab" * 16, "span_id": "cd" * 8, "attributes": {"link.kind": "x"}}]
    trace["spans"][0]["attributes"]["list.attr"] = ["a", "b"]
    trace["spans"][0]["attributes"]["ratio"] = 0.5
    trace["spans"][0]["attributes"]["flag"] = True
    mimetype, body = export_trace(trace, "otlp")
    assert mimetype == "application/json"
    request = ExportTraceServiceRequest()
    json_format.Parse(json.dumps(otlp_json_to_proto3_json(json.loads(body))), request)

    parsed = {}
    services = set()
    for resource_spans in request.resource_spans:
        attrs = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
        services.add(attrs["service.name"])
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                parsed[s.span_id.hex()] = (s, attrs["service.name"])
    assert services == {"gateway", "retrieval", "llm-proxy"}
    assert len(parsed) == len(trace["spans"])
    for original in trace["spans"]:
        s, service = parsed[original["span_id"]]
        assert s.trace_id.hex() == trace["trace_id"]
        assert service == original["service"]
        assert s.name == original["name"]
        assert s.start_time_unix_nano == original["start_ns"] and s.end_time_unix_nano == original["end_ns"]
        assert (s.parent_span_id.hex() or None) == original["parent_span_id"]
        assert s.kind == {"internal": 1, "server": 2, "client": 3, "producer": 4, "consumer": 5}[original["kind"]]
        assert s.status.code == {"unset": 0, "ok": 1, "error": 2}[original["status"]]
        assert len(s.events) == len(original["events"])
    root, _ = parsed[trace["spans"][0]["span_id"]]
    attrs = {kv.key: kv.value for kv in root.attributes}
    assert attrs["http.response.status_code"].int_value == 200
    assert list(v.string_value for v in attrs["list.attr"].array_value.values) == ["a", "b"]
    assert attrs["ratio"].double_value == 0.5 and attrs["flag"].bool_value is True
    failing = next(s for s, _ in parsed.values() if s.name == "execute_tool memo_search")
    assert failing.status.message == "upstream timed out"
    assert failing.events[0].attributes[0].key == "exception.type"
    linked, _ = parsed[trace["spans"][1]["span_id"]]
    assert linked.links[0].trace_id.hex() == "ab" * 16 and linked.links[0].span_id.hex() == "cd" * 8


def test_otlp_ids_are_hex_as_the_otlp_json_spec_requires():
    body = json.loads(export_trace(agent_trace(), "otlp")[1])
    span = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceId"] == agent_trace()["trace_id"]
    assert isinstance(span["startTimeUnixNano"], str)


def test_json_export_is_the_trace_itself():
    trace = agent_trace()
    mimetype, body = export_trace(trace, "json")
    assert mimetype == "application/json" and json.loads(body) == trace


def test_timeline_events_are_ordered_and_complete():
    trace = agent_trace()
    events = timeline_events(trace)
    times = [e["time_ns"] for e in events]
    assert times == sorted(times)
    assert sum(1 for e in events if e["type"] == "span_start") == len(trace["spans"])
    assert sum(1 for e in events if e["type"] == "span_end") == len(trace["spans"])
    error = next(e for e in events if e["type"] == "error")
    assert error["attributes"]["exception.type"] == "TimeoutError"
    assert events[0]["offset_ms"] == 0.0 and events[0]["name"] == "POST /ask"


# --------------------------------------------------------------------------- mermaid


MERMAID_CHECK = r"""
import { JSDOM } from 'jsdom';
import { readFileSync } from 'node:fs';
// flowchart labels go through DOMPurify, which needs a window: give it jsdom's before mermaid loads
const dom = new JSDOM('');
globalThis.window = dom.window;
globalThis.document = dom.window.document;
const { default: mermaid } = await import('mermaid');
const diagrams = JSON.parse(readFileSync(0, 'utf8'));
const results = [];
for (const text of diagrams) {
  try { const r = await mermaid.parse(text); results.push({ok: true, type: r.diagramType}); }
  catch (e) { results.push({ok: false, error: String(e.message || e).slice(0, 500)}); }
}
console.log(JSON.stringify(results));
"""


@pytest.fixture(scope="session")
def mermaid_parser(tmp_path_factory):
    """mermaid from npm, installed outside the repository; its parse() runs under node on jsdom's DOM."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        unavailable("node/npm not installed", "node and npm are required in CI for the Mermaid parser check")
    directory = tmp_path_factory.mktemp("mermaid")
    (directory / "package.json").write_text('{"private": true, "type": "module"}')
    packages = ["mermaid@11", "jsdom@29"]
    result = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--prefer-offline", *packages],
                            cwd=directory, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        if IN_CI:
            pytest.fail(f"npm install mermaid failed: {result.stderr[-500:]}")
        pytest.skip(f"npm install mermaid failed (offline?): {result.stderr[-200:]}")
    (directory / "check.mjs").write_text(MERMAID_CHECK)

    def parse(diagrams: list[str]) -> list[dict]:
        run = subprocess.run([node, "check.mjs"], cwd=directory, input=json.dumps(diagrams),
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout.strip().splitlines()[-1])

    return parse


def hostile_trace():
    """Names with every character Mermaid treats specially, services that collide once sanitised."""
    b = TraceBuilder()
    root = b.span("GET /a;b#c%%d <x> {y} [z] \"q\" `t` a:b", "front end", 0, 100, kind="server")
    call = b.span("POST /x->>y --> z", "front end", 1, 50, root, kind="client")
    b.span("handle: 'x' ; end", "front-end", 2, 45, call, kind="server", status="error",
           message="boom; #1 %% <script>")
    producer = b.span("publish", "front end", 60, 1, root, kind="producer")
    b.span("consume end", "queue worker", 70, 20, producer, kind="consumer")
    return b.build()


def test_mermaid_output_parses_with_mermaid(mermaid_parser):
    single = TraceBuilder()
    single.span("lonely", "only", 0, 5)
    diagrams = [export_trace(t, "mermaid")[1] for t in (agent_trace(), hostile_trace(), large_trace(20, 10),
                                                        single.build())]
    diagrams.append("sequenceDiagram\n    A->>: missing target\n")  # proves the parser rejects bad input
    results = mermaid_parser(diagrams)
    assert results[:-1] == [{"ok": True, "type": "sequence"}] * 4, results
    assert results[-1]["ok"] is False


def test_mermaid_structure():
    _, text = export_trace(agent_trace(), "mermaid")
    lines = text.splitlines()
    assert lines[0] == "sequenceDiagram"
    assert "    participant s_gateway as gateway" in lines
    assert "    participant s_llm_proxy as llm-proxy" in lines
    calls = [line.strip() for line in lines if "->>" in line and "-->>" not in line]
    assert calls == ["s_gateway->>s_retrieval: GET /search", "s_gateway->>s_llm_proxy: POST /v1/chat/completions"]
    assert "s_retrieval-->>s_gateway: ok 295ms" in text

    _, hostile = export_trace(hostile_trace(), "mermaid")
    ids = [line.split()[1] for line in hostile.splitlines() if line.strip().startswith("participant")]
    assert len(ids) == len(set(ids)) == 3  # "front end" and "front-end" stay distinct
    assert "Note over" in hostile and "error" in hostile
    assert "-)" in hostile  # messaging consumer drawn as an asynchronous arrow
    for line in hostile.splitlines()[1:]:
        body = line.split(":", 1)[1] if ":" in line else ""
        assert not any(ch in body for ch in ";#%<>{}")


def test_mermaid_folds_repeated_calls():
    b = TraceBuilder()
    root = b.span("job", "api", 0, 200, kind="server")
    for i in range(30):
        client = b.span("GET /item", "api", 1 + i * 6, 5, root, kind="client")
        b.span("GET /item", "items", 1.5 + i * 6, 4, client, kind="server",
               status="error" if i == 7 else "unset", message="not found" if i == 7 else None)
    _, text = export_trace(b.build(), "mermaid")
    assert text.count("s_api->>s_items") == 1
    assert "GET /item x 30" in text
    assert "error (1 of 30)" in text


def retried_task_trace():
    """A request whose task times out calling a backend, is retried, then succeeds."""
    b = TraceBuilder()
    root = b.span("POST /ingest", "api", 0, 400, kind="server")
    publish = b.span("publish index", "api", 5, 1, root, kind="producer")
    first = b.span("run index", "worker", 10, 150, publish, kind="consumer", attributes={"celery.state": "RETRY"})
    b.span("GET vector-db", "worker", 12, 140, first, kind="client", status="error", message="timed out")
    again = b.span("publish index", "worker", 155, 1, first, kind="producer")
    b.span("run index", "worker", 200, 90, again, kind="consumer", attributes={"celery.state": "SUCCESS"})
    return b.build()


def test_mermaid_shows_retries_and_errors_inside_calls(mermaid_parser):
    _, text = export_trace(retried_task_trace(), "mermaid")
    notes = [line.strip() for line in text.splitlines() if line.strip().startswith("Note over s_worker")]
    # the first attempt's failure, then its retry (drawn inside it), then how the first attempt ended
    assert notes == ["Note over s_worker: 1 error(s) inside GET vector-db timed out",
                     "Note over s_worker: 90.0ms ok",
                     "Note over s_worker: 150ms retried"], text
    assert "s_worker-)s_worker: run index" in text  # the retry, queued by the worker itself
    assert mermaid_parser([text]) == [{"ok": True, "type": "sequence"}]


# --------------------------------------------------------------------------- mermaid flowchart


def one_service_trace():
    """Ten spans that never leave one service: the sequence diagram has no arrows to draw."""
    b = TraceBuilder()
    root = b.span("nightly report", "reporter", 0, 100)
    load = b.span("load rows", "reporter", 1, 30, root)
    for i in range(3):
        b.span(f"SELECT page {i}", "reporter", 2 + i * 9, 8, load, kind="client")
    render = b.span("render", "reporter", 35, 40, root)
    b.span("chart", "reporter", 36, 20, render)
    b.span("table", "reporter", 57, 15, render, status="error", message="column missing")
    b.span("upload", "reporter", 80, 15, root, kind="client")
    b.span("notify", "reporter", 96, 3, root)
    return b.build()


def test_one_service_trace_is_a_flowchart_of_its_spans():
    trace = one_service_trace()
    _, sequence = export_trace(trace, "mermaid")
    assert "->>" not in sequence and "diagram=flowchart draws them" in sequence

    _, text = export_trace(trace, "mermaid", diagram="flowchart")
    lines = [line.strip() for line in text.splitlines()]
    assert lines[0] == "flowchart TD"
    boxes = {line.split("[", 1)[0]: line.split('["', 1)[1].rstrip('"]') for line in lines if '["' in line}
    by_label = {label.split(" - ")[0]: ident for ident, label in boxes.items()}
    assert set(by_label) == {"nightly report", "load rows", "SELECT page N x 3", "SELECT page 0", "render",
                             "chart", "table", "upload", "notify"}, boxes
    fold = "SELECT page N x 3 - reporter - 24.0ms total, p50 8.0ms, max 8.0ms"
    assert boxes[by_label["SELECT page N x 3"]] == fold
    assert f"{by_label['nightly report']} --> {by_label['render']}" in lines
    assert f"{by_label['render']} --> {by_label['table']}" in lines
    assert f"{by_label['SELECT page N x 3']} -.->|slowest of the folded| {by_label['SELECT page 0']}" in lines
    assert boxes[by_label["table"]] == "table - reporter - 15.0ms - error column missing"
    assert f"class {by_label['table']} error" in lines


def test_flowchart_is_bounded_and_keeps_the_failure_visible():
    _, text = export_trace(large_trace(), "mermaid", diagram="flowchart")
    boxes = [line for line in text.splitlines() if '["' in line]
    assert len(boxes) <= 300 + 21
    assert any("error deadlock detected" in line for line in boxes)
    drawn_hidden = sum(int(line.split('["+')[1].split()[0]) for line in boxes if "not drawn" in line)
    assert drawn_hidden > 0


def test_flowchart_parses_with_mermaid(mermaid_parser):
    single = TraceBuilder()
    single.span("lonely", "only", 0, 5)
    traces = (agent_trace(), hostile_trace(), large_trace(), single.build(), one_service_trace(),
              {"trace_id": "0" * 32, "spans": []})
    diagrams = [export_trace(t, "mermaid", diagram="flowchart")[1] for t in traces]
    diagrams.append('flowchart TD\n    n0["a"] --> \n')  # proves the parser rejects a broken flowchart
    results = mermaid_parser(diagrams)
    assert all(r["ok"] and r["type"].startswith("flowchart") for r in results[:-1]), results
    assert results[-1]["ok"] is False
