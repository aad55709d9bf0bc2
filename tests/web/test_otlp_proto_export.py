"""collector_worker.exporters.otlp_proto (what forwarding sends) read back by Contrail's own OTLP receiver
conversion: every field of a stored span, every attribute value type, survives the round trip."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from collector_worker.exporters import otlp_proto
from web.otlp import convert_request

T1, T2 = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"


def _span(trace_id, span_id, parent, name, **extra):
    return {"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "name": name, "kind": "internal",
            "start_ns": 1_700_000_000_000_000_000, "end_ns": 1_700_000_000_250_000_000, "status_code": "unset",
            "status_message": None, "service": "api", "resource": {"service.name": "api", "host.name": "h1"},
            "attributes": {}, "events": [], "links": [], "scope": None, **extra}


SPANS = [
    _span(T1, "00f067aa0ba902b7", None, "POST /checkout", kind="server", scope="flask",
          attributes={"http.status_code": 500, "ok": False, "ratio": 0.25, "route": "/checkout",
                      "tags": ["a", "b"], "sizes": [1, 2], "huge": 2 ** 70},
          status_code="error", status_message="card declined",
          events=[{"name": "exception", "time_ns": 1_700_000_000_100_000_000,
                   "attributes": {"exception.type": "ValueError"}}],
          links=[{"trace_id": T2, "span_id": "b7ad6b7169203331", "attributes": {"link.kind": "retry-of"}}]),
    _span(T1, "53995c3f42cd8ad8", "00f067aa0ba902b7", "SELECT orders", kind="client", service="db",
          resource={"service.name": "db"}, status_code="ok"),
    _span(T2, "b7ad6b7169203331", None, "consume", kind="consumer", resource={}, service="worker"),
]


def test_stored_spans_round_trip_through_the_receiver():
    message = ExportTraceServiceRequest()
    message.ParseFromString(otlp_proto.render(SPANS))
    assert len(message.resource_spans) == 3  # (service, resource) groups
    converted, reasons, _cut = convert_request(message)
    assert reasons == []
    by_id = {s["span_id"]: s for s in converted}
    for original in SPANS:
        got = dict(by_id[original["span_id"]])
        expected = dict(original)
        expected["resource"] = {**original["resource"], "service.name": original["service"]}
        expected["attributes"] = {**original["attributes"], "huge": str(2 ** 70)} if "huge" in original[
            "attributes"] else original["attributes"]
        assert got == expected
