"""Real traffic for the dashboard tests: traced calls across services and a 10k-span trace.

Small traces go through ``TracingManager`` (the same path an application uses);
the big trace is published straight to the stream with the wire codec, in
batches, the way a busy service's exporter would send it.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager

import redis
from opentelemetry import context as context_api

from tracer import TracingManager
from tracer.codec import encode_span_dicts

SERVICES = ("gateway", "inventory", "worker")
BIG_TRACE_SPANS = 10_000


@contextmanager
def remote_parent(manager: TracingManager, carrier: dict):
    """Continue the trace in ``carrier`` (W3C headers) the way a receiving service does."""
    token = context_api.attach(manager.extract_span_context(carrier) or context_api.get_current())
    try:
        yield
    finally:
        context_api.detach(token)


def checkout(managers: dict[str, TracingManager], *, fail: bool, slow_ms: float = 5.0, extra_step: bool = False) -> str:
    """One POST /checkout: gateway → inventory over HTTP, gateway → worker through a Celery queue."""
    gateway, inventory, worker = (managers[name] for name in SERVICES)
    with gateway.span("POST /checkout", kind="server", **{"http.method": "POST", "http.route": "/checkout",
                                                           "note": "<img src=x onerror=window.__xss=1>"}) as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        with gateway.span("GET /inventory/42", kind="client", **{"http.method": "GET"}):
            headers = gateway.inject_span_context()
            with remote_parent(inventory, headers):
                with inventory.span("GET /inventory/<id>", kind="server", **{"http.route": "/inventory/<id>"}):
                    with inventory.span("SELECT stock", kind="client", **{"db.system": "sqlite"}):
                        time.sleep(slow_ms / 1000)
                    if extra_step:
                        with inventory.span("recount stock", kind="internal"):
                            time.sleep(0.004)
        with gateway.span("celery.send process_order", kind="producer", **{"messaging.system": "celery"}):
            message_headers = gateway.inject_span_context()
    # The gateway answers at once; the order is processed afterwards (fire and forget), so the task run
    # lies outside the request and off its critical path.
    time.sleep(0.01)  # the message waits in the queue
    with remote_parent(worker, message_headers):
        try:
            with worker.span("run process_order", kind="consumer", **{"celery.task_name": "process_order",
                                                                      "celery.queue_wait_ms": 10.0}):
                with worker.span("charge card", kind="client", **{"payment.provider": "test"}):
                    time.sleep(0.002)
                    if fail:
                        raise RuntimeError("card declined")
        except RuntimeError:
            pass
    return trace_id


def agent_question(manager: TracingManager, llm_ms: float = 3.0) -> str:
    """An AI-agent request: a run with a phase, a tool call and two LLM calls (the large model ~4× slower)."""
    with manager.span("POST /ask", kind="server") as root:
        trace_id = format(root.get_span_context().trace_id, "032x")
        with manager.agent_run("helper"):
            with manager.phase("plan"):
                with manager.llm_call(model="test-model-small", provider="test") as call:
                    time.sleep(llm_ms / 1000)
                    call.record_usage(input_tokens=120, output_tokens=30)
            with manager.tool_call("search_docs", operation="query"):
                time.sleep(0.002)
            with manager.llm_call(model="test-model-large", provider="test") as call:
                time.sleep(4 * llm_ms / 1000)
                call.record_usage(input_tokens=900, output_tokens=200)
    return trace_id


def produce_small_traces(redis_url: str, data_dir: str) -> dict[str, str]:
    """The traces the page tests click through; returns their ids by role."""
    managers = {name: TracingManager(service_name=name, redis_url=redis_url, schedule_delay=0.05,
                                     data_dir=data_dir) for name in SERVICES}
    try:
        ids = {
            "ok": checkout(managers, fail=False),
            # 50× the other flows' query: a loaded machine stretches a 5 ms sleep by tens of ms, not by 245
            "slow": checkout(managers, fail=False, slow_ms=250.0, extra_step=True),
            "error": checkout(managers, fail=True),
        }
        for _ in range(3):
            checkout(managers, fail=False)
        ids["agent_fast"] = agent_question(managers["gateway"], llm_ms=2.0)
        ids["agent"] = agent_question(managers["gateway"], llm_ms=6.0)
        for manager in managers.values():
            assert manager.flush(10), manager.get_tracer_info()
    finally:
        for manager in managers.values():
            manager.shutdown()
    return ids


def produce_big_trace(redis_url: str, stream: str = "contrail:spans", spans: int = BIG_TRACE_SPANS,
                      batch: int = 1000) -> str:
    """A 10k-span trace: a root with a wide, 6-level-deep tree over three services."""
    trace_id = os.urandom(16).hex()
    start = time.time_ns() - 2_000_000_000
    rows = []
    ids = [os.urandom(8).hex() for _ in range(spans)]
    for i in range(spans):
        parent = None if i == 0 else ids[(i - 1) // 8]  # 8 children each: depth about log8(10k)
        depth = 0 if i == 0 else 1 + len(bin(i)) // 3
        offset = (i * 97_000) % 900_000_000
        rows.append({
            "trace_id": trace_id, "span_id": ids[i], "parent_span_id": parent,
            "name": "GET /big" if i == 0 else f"step-{i % 50}", "kind": "server" if i == 0 else "internal",
            "start_ns": start + (0 if i == 0 else offset), "end_ns": start + (1_000_000_000 if i == 0 else offset + 1_000_000 * (1 + depth)),
            "status_code": "error" if i % 997 == 0 and i else "unset", "service": SERVICES[i % 3],
            "resource": {"service.name": SERVICES[i % 3]}, "attributes": {"index": i}, "events": [], "links": [],
        })
    client = redis.Redis.from_url(redis_url)
    try:
        for first in range(0, spans, batch):
            client.xadd(stream, encode_span_dicts(rows[first:first + batch]))
    finally:
        client.close()
    return trace_id


BOTTLENECK_SERVICE = "billing"
SLOWER_OPERATION = "POST /invoice"
FAILING_OPERATION = "charge ledger"


def _span_row(trace_id: str, span_id: str, parent: str | None, name: str, start_ns: int, duration_ms: float,
              error: bool = False, kind: str = "internal") -> dict:
    return {
        "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name, "kind": kind,
        "start_ns": start_ns, "end_ns": start_ns + int(duration_ms * 1e6),
        "status_code": "error" if error else "unset", "status_message": "ledger unavailable" if error else None,
        "service": BOTTLENECK_SERVICE, "resource": {"service.name": BOTTLENECK_SERVICE},
        "attributes": {}, "events": [], "links": [],
    }


def produce_bottleneck_history(redis_url: str, stream: str = "contrail:spans", calls: int = 14) -> None:
    """Billing traffic an hour ago (the baseline) and in the last few minutes (recent), through the stream.

    ``POST /invoice`` goes from about 10 ms to about 60 ms and ``charge ledger``
    from no errors to half of its calls failing, so the collector's statistics
    hold one operation that got slower and one that fails more often than usual.
    """
    now = time.time_ns()
    minute = 60_000_000_000
    rows = []
    for i in range(calls):
        for start, slow in ((now - 70 * minute + i * 2_000_000_000, False), (now - 4 * minute + i * 1_000_000_000, True)):
            trace_id, root, child = os.urandom(16).hex(), os.urandom(8).hex(), os.urandom(8).hex()
            rows.append(_span_row(trace_id, root, None, SLOWER_OPERATION, start, (60.0 if slow else 10.0) + i % 3,
                                  kind="server"))
            rows.append(_span_row(trace_id, child, root, FAILING_OPERATION, start + 1_000_000, 2.0,
                                  error=slow and i % 2 == 0, kind="client"))
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(stream, encode_span_dicts(rows))
    finally:
        client.close()


def produce_odd_trace(redis_url: str, linked_trace_id: str, stream: str = "contrail:spans") -> str:
    """A trace with the shapes that trip up a detail panel: a link to a whole trace (no span id),
    an event without attributes, an exception without a message, an error without a status
    message and a span whose parent never arrived."""
    trace_id, root, child, orphan = os.urandom(16).hex(), *(os.urandom(8).hex() for _ in range(3))
    now = time.time_ns()

    def row(span_id, parent, name, **extra):
        base = {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name, "kind": "internal",
                "start_ns": now, "end_ns": now + 5_000_000, "status_code": "unset", "service": "oddities",
                "resource": {"service.name": "oddities"}, "attributes": {"step": 1}, "events": [], "links": []}
        return {**base, **extra}

    rows = [
        row(root, None, "odd root", events=[{"name": "checkpoint", "time_ns": now + 1000, "attributes": {}}],
            links=[{"trace_id": linked_trace_id, "span_id": "", "attributes": {}},
                   {"trace_id": trace_id, "span_id": child, "attributes": {"why": "retry of"}}]),
        row(child, root, "odd child", status_code="error", status_message=None, kind="client",
            events=[{"name": "exception", "time_ns": now + 3000, "attributes": {"exception.type": "ValueError"}}]),
        row(orphan, "f" * 16, "odd orphan", start_ns=now + 1_000_000),
    ]
    client = redis.Redis.from_url(redis_url)
    try:
        client.xadd(stream, encode_span_dicts(rows))
    finally:
        client.close()
    return trace_id
