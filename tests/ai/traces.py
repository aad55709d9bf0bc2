"""Trace dicts in the GET /api/v1/traces/<id> shape, built span by span for exporter tests."""

from __future__ import annotations

import itertools
from datetime import datetime, timezone

BASE_NS = 1_795_000_000_000_000_000
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class TraceBuilder:
    """Adds spans with explicit offsets (ms); ``build()`` fills depth, self time and critical path."""

    def __init__(self, trace_id: str = TRACE_ID):
        self.trace_id = trace_id
        self.spans: list[dict] = []
        self._ids = (f"{n:016x}" for n in itertools.count(1))

    def span(self, name, service, start_ms, duration_ms, parent=None, kind="internal", status="unset",
             message=None, attributes=None, exception=None):
        start = BASE_NS + int(start_ms * 1e6)
        end = start + int(duration_ms * 1e6)
        events = []
        if exception:
            events.append({"name": "exception", "time_ns": end, "time": _iso(end),
                           "attributes": {"exception.type": exception[0], "exception.message": exception[1]}})
        span = {"span_id": next(self._ids), "parent_span_id": parent["span_id"] if parent else None,
                "service": service, "name": name, "kind": kind, "start_time": _iso(start), "start_ns": start,
                "end_ns": end, "duration_ms": duration_ms, "status": status, "status_message": message,
                "attributes": attributes or {}, "resource": {"service.name": service}, "events": events,
                "links": []}
        self.spans.append(span)
        return span

    def build(self) -> dict:
        by_id = {s["span_id"]: s for s in self.spans}
        children: dict[str, list] = {}
        for s in self.spans:
            children.setdefault(s["parent_span_id"], []).append(s)
        for s in self.spans:
            depth, parent = 0, by_id.get(s["parent_span_id"])
            while parent is not None:
                depth, parent = depth + 1, by_id.get(parent["parent_span_id"])
            s["depth"] = depth
            covered = _union(children.get(s["span_id"], []), s["start_ns"], s["end_ns"])
            s["self_time_ms"] = (s["end_ns"] - s["start_ns"] - covered) / 1e6
            s["critical_path"] = False
        roots = children.get(None, [])
        node = max(roots, key=lambda s: s["duration_ms"]) if roots else None
        while node is not None:
            node["critical_path"] = True
            kids = children.get(node["span_id"], [])
            node = max(kids, key=lambda s: s["end_ns"]) if kids else None
        spans = sorted(self.spans, key=lambda s: s["start_ns"])
        start = min(s["start_ns"] for s in spans)
        end = max(s["end_ns"] for s in spans)
        root = max(roots, key=lambda s: s["duration_ms"])
        summary = {"trace_id": self.trace_id, "root_service": root["service"], "root_operation": root["name"],
                   "start_time": _iso(start), "start_ns": start, "duration_ms": (end - start) / 1e6,
                   "span_count": len(spans), "services": sorted({s["service"] for s in spans}),
                   "error_count": sum(1 for s in spans if s["status"] == "error"), "incomplete": False,
                   "clock_skew_ms": 0.0}
        return {"trace_id": self.trace_id, "summary": summary, "spans": spans, "warnings": []}


def _union(kids, start, end) -> int:
    covered, cursor = 0, start
    for a, b in sorted((k["start_ns"], k["end_ns"]) for k in kids):
        a, b = max(a, cursor), min(b, end)
        if b > a:
            covered += b - a
            cursor = b
    return covered


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def agent_trace() -> dict:
    """A small three-service agent request with a failing tool call and repeated DB queries."""
    b = TraceBuilder()
    root = b.span("POST /ask", "gateway", 0, 812.4, kind="server",
                  attributes={"http.request.method": "POST", "http.route": "/ask", "http.response.status_code": 200})
    run = b.span("invoke_agent research-agent", "gateway", 2, 800, root,
                 attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "research-agent",
                             "user.id": "123", "session.id": "s-9"})
    plan = b.span("phase planning", "gateway", 3, 40, run, attributes={"contrail.ai.phase": "planning"})
    for i in range(6):
        b.span("SELECT memos", "gateway", 4 + i * 5, 4 + i, plan, kind="client",
               attributes={"db.system": "postgresql"})
    call = b.span("GET /search", "gateway", 50, 300, run, kind="client")
    srv = b.span("GET /search", "retrieval", 52, 295, call, kind="server")
    b.span("execute_tool memo_search", "retrieval", 55, 280, srv, status="error", message="upstream timed out",
           attributes={"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "memo_search"},
           exception=("TimeoutError", "upstream timed out"))
    llm = b.span("chat gpt-4o", "gateway", 360, 440, run, kind="client",
                 attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                             "gen_ai.provider.name": "openai", "gen_ai.usage.input_tokens": 812,
                             "gen_ai.usage.output_tokens": 164, "contrail.ai.purpose": "synthesis"})
    b.span("POST /v1/chat/completions", "llm-proxy", 362, 435, llm, kind="server")
    return b.build()


def large_trace(groups: int = 100, per_group: int = 98) -> dict:
    """About groups * (per_group + 2) spans: many distinct handlers, repeated queries, deep chains, errors."""
    b = TraceBuilder("0af7651916cd43dd8448eb211c80319c")
    total = groups * 10.0 + 50
    root = b.span("POST /batch", "gateway", 0, total, kind="server")
    for g in range(groups):
        start = g * 10.0
        service = f"worker-{g % 7}"
        word = chr(97 + (g // 26) % 26) + chr(97 + g % 26)
        handler = b.span(f"handle {word} batch", service, start, 9.5, root, kind="consumer",
                         attributes={"celery.task_name": f"tasks.item_{g}"})
        for i in range(per_group - 1):
            failed = (g == 42 and i == 3)
            b.span("SELECT items WHERE id = ?", service, start + 0.05 * i, 0.04 + (i % 5) * 0.01, handler,
                   kind="client", status="error" if failed else "unset",
                   message="deadlock detected" if failed else None,
                   attributes={"db.system": "postgresql"},
                   exception=("psycopg.errors.DeadlockDetected", "deadlock detected") if failed else None)
        deep = b.span(f"render {word}", service, start + 5, 4, handler)
        b.span(f"template {word}", service, start + 5.5, 3, deep)
    b.span("write report", "gateway", total - 45, 44, root)
    return b.build()
