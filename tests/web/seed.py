"""Seed traces through the real storage path: the span writer, then the finalizer."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from collector_worker.finalizer import finalize_ready, on_spans_stored
from collector_worker.storage import open_engine
from collector_worker.storage.writer import store_spans
from web.settings import WebSettings

FAR_FUTURE_NS = 4_000_000_000 * 10**9


def new_trace_id() -> str:
    return os.urandom(16).hex()


def new_span_id() -> str:
    return os.urandom(8).hex()


def span(trace_id, name, service="gateway", *, start_ns, duration_ms, parent=None, kind="internal",
         status="unset", message=None, attributes=None, events=None, links=None, span_id=None, resource=None):
    """A codec-shaped span dict (what the collector decodes from the stream)."""
    return {
        "trace_id": trace_id, "span_id": span_id or new_span_id(), "parent_span_id": parent, "name": name,
        "kind": kind, "start_ns": int(start_ns), "end_ns": int(start_ns) + int(round(duration_ms * 1e6)),
        "status_code": status, "status_message": message, "service": service,
        "resource": resource or {"service.name": service, "host.name": "test-host"},
        "attributes": attributes or {}, "events": events or [], "links": links or [], "scope": "tests",
    }


def store(database_url: str, spans: list[dict], *, finalize: bool = True) -> None:
    """Write spans as the collector does; finalize every trace when asked."""
    engine = open_engine(database_url)
    try:
        with engine.begin() as conn:
            new = store_spans(conn, spans, received_ns=time.time_ns())
            on_spans_stored(conn, new)  # per-span statistics, as the consumer does in its ingest transaction
        if finalize:
            settings = WebSettings.load(env={}, quiet_period="1s")
            while finalize_ready(engine, settings, "tests", now_ns=FAR_FUTURE_NS):
                pass
    finally:
        engine.dispose()


@dataclass
class Dataset:
    """The known traces every API test reads back."""

    base_ns: int
    ids: dict[str, str] = field(default_factory=dict)
    spans: dict[str, dict] = field(default_factory=dict)  # name -> span dict of interest
    all_spans: list[dict] = field(default_factory=list)


def standard_dataset(base_ns: int | None = None) -> Dataset:
    """Five finalized traces with distinct services, durations, tags, errors and a link.

    ask_slow   gateway POST /ask 800ms → retrieval search → llm chat (error); user.id=u1, tokens=120
    health     gateway GET /health 5ms; user.id=u2
    ask_fast   gateway POST /ask 300ms → retrieval search; user.id=u1, tokens=50
    invoice    billing invoice 1500ms, links to ask_slow's root
    orphan     worker process whose parent never arrived (incomplete)
    """
    base = base_ns or (time.time_ns() - 600 * 10**9)
    ms = 1_000_000
    d = Dataset(base_ns=base)
    t = d.ids
    t.update({k: new_trace_id() for k in ("ask_slow", "health", "ask_fast", "invoice", "orphan")})

    root = span(t["ask_slow"], "POST /ask", "gateway", start_ns=base, duration_ms=800, kind="server",
                status="error", message="upstream failed",
                attributes={"user.id": "u1", "http.status_code": 500, "tokens": 120})
    search = span(t["ask_slow"], "search", "retrieval", start_ns=base + 10 * ms, duration_ms=200,
                  parent=root["span_id"], kind="server", attributes={"db.system": "postgresql"},
                  events=[{"name": "checkpoint.ranked", "time_ns": base + 100 * ms, "attributes": {"hits": 3}}])
    chat = span(t["ask_slow"], "chat", "llm", start_ns=base + 220 * ms, duration_ms=500, parent=root["span_id"],
                kind="client", status="error", message="rate limited",
                attributes={"gen_ai.request.model": "m-1"},
                events=[{"name": "exception", "time_ns": base + 700 * ms,
                         "attributes": {"exception.type": "RateLimit", "exception.message": "rate limited"}}])
    health = span(t["health"], "GET /health", "gateway", start_ns=base + 1000 * ms, duration_ms=5, kind="server",
                  status="ok", attributes={"user.id": "u2", "http.status_code": 200})
    fast_root = span(t["ask_fast"], "POST /ask", "gateway", start_ns=base + 2000 * ms, duration_ms=300,
                     kind="server", attributes={"user.id": "u1", "http.status_code": 200, "tokens": 50})
    fast_search = span(t["ask_fast"], "search", "retrieval", start_ns=base + 2010 * ms, duration_ms=100,
                       parent=fast_root["span_id"], kind="server")
    fast_rerank = span(t["ask_fast"], "rerank", "retrieval", start_ns=base + 2120 * ms, duration_ms=50,
                       parent=fast_root["span_id"])
    invoice = span(t["invoice"], "invoice", "billing", start_ns=base + 3000 * ms, duration_ms=1500,
                   kind="consumer", links=[{"trace_id": t["ask_slow"], "span_id": root["span_id"],
                                            "attributes": {"reason": "follows"}}])
    orphan = span(t["orphan"], "process", "worker", start_ns=base + 4000 * ms, duration_ms=40,
                  parent=new_span_id(), kind="consumer")
    d.spans.update({"root": root, "search": search, "chat": chat, "health": health, "fast_root": fast_root,
                    "fast_search": fast_search, "fast_rerank": fast_rerank, "invoice": invoice, "orphan": orphan})
    d.all_spans = list(d.spans.values())
    return d
