"""Dependency edges from HTTP and Celery span pairs, exact across re-finalization."""

from __future__ import annotations

from collector_worker.dependencies import edge_kind, query_dependencies
from tests.collector.test_finalizer import BASE, S, finalize_all, ingest, make_span, sid, tid


def test_edge_kinds():
    client = {"kind": "client", "attributes": {"http.request.method": "GET"}}
    server = {"kind": "server", "attributes": {"http.route": "/orders"}}
    assert edge_kind(client, server) == "http"
    assert edge_kind({"kind": "producer", "attributes": {}}, {"kind": "consumer", "attributes": {}}) == "messaging"
    assert edge_kind({"kind": "internal", "attributes": {"celery.task_name": "t"}},
                     {"kind": "internal", "attributes": {}}) == "messaging"
    assert edge_kind({"kind": "client", "attributes": {"rpc.system": "grpc"}}, {"kind": "server"}) == "rpc"
    assert edge_kind({"kind": "internal"}, {"kind": "internal"}) == "other"


def http_and_celery_trace(t):
    #  gateway  GET /checkout (server)   [0 ................................ 100]
    #   gateway  GET orders (client)       [10 ........ 50]
    #    orders   GET /orders (server)       [12 .... 48]           (error)
    #     orders   send_email (producer)       [20 21]
    #      worker   send_email (consumer)                [60 ......... 300]
    return [
        make_span(t, sid(1), None, 0, 100, service="gateway", name="GET /checkout", kind="server",
                  attributes={"http.method": "GET"}),
        make_span(t, sid(2), sid(1), 10, 50, service="gateway", name="GET orders", kind="client",
                  attributes={"http.method": "GET", "http.url": "http://orders/orders"}),
        make_span(t, sid(3), sid(2), 12, 48, service="orders", name="GET /orders", kind="server", status="error",
                  attributes={"http.route": "/orders"}),
        make_span(t, sid(4), sid(3), 20, 21, service="orders", name="send_email", kind="producer",
                  attributes={"messaging.system": "celery"}),
        make_span(t, sid(5), sid(4), 60, 300, service="worker", name="send_email", kind="consumer",
                  attributes={"celery.task_name": "send_email"}),
    ]


def test_http_and_celery_edges(engine):
    ingest(engine, http_and_celery_trace(tid(1)) + http_and_celery_trace(tid(2)))
    assert finalize_all(engine, BASE + 5 * S) == 2
    with engine.connect() as conn:
        edges = query_dependencies(conn, BASE, BASE + 600 * S)
        day = query_dependencies(conn, BASE - 86400 * S, BASE + 3600 * S)  # hourly rollup
        before = query_dependencies(conn, BASE - 600 * S, BASE - 60 * S)
    assert edges == [
        {"caller": "gateway", "callee": "orders", "kind": "http", "calls": 2, "errors": 2, "error_rate": 1.0,
         "avg_ms": 36.0},
        {"caller": "orders", "callee": "worker", "kind": "messaging", "calls": 2, "errors": 0, "error_rate": 0.0,
         "avg_ms": 240.0},
    ]
    assert day == edges
    assert before == []


def test_late_spans_apply_only_the_difference(engine):
    spans = http_and_celery_trace(tid(3))
    ingest(engine, spans[:3] + spans[4:])  # the producer span is late: the consumer is an orphan for now
    finalize_all(engine, BASE + 5 * S)
    with engine.connect() as conn:
        assert [(e["caller"], e["callee"]) for e in query_dependencies(conn, BASE, BASE + 600 * S)] == \
            [("gateway", "orders")]
    ingest(engine, [spans[3]], received_ns=BASE + 6 * S)
    finalize_all(engine, BASE + 10 * S)
    ingest(engine, [make_span(tid(3), sid(6), sid(3), 30, 40, service="db", name="SELECT", kind="client")],
           received_ns=BASE + 11 * S)
    finalize_all(engine, BASE + 20 * S)
    with engine.connect() as conn:
        edges = {(e["caller"], e["callee"], e["kind"]): e["calls"]
                 for e in query_dependencies(conn, BASE, BASE + 600 * S)}
    assert edges == {("gateway", "orders", "http"): 1, ("orders", "worker", "messaging"): 1,
                     ("orders", "db", "other"): 1}
