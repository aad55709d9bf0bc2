"""Service A of the end-to-end test: a three-level tree whose context it hands to service B."""

import json
import sys

from tracer import TracingManager

tracing = TracingManager(service_name="orders")
with tracing.span("handle_order", **{"order.id": 42}) as root:
    with tracing.span("reserve_stock") as reserve:
        with tracing.span("db.update", **{"db.collection.name": "stock"}):
            pass
        carrier = tracing.inject_span_context(reserve, {})
    failed = tracing.start_span("charge_card", tags={"payment.provider": "acme"})
    tracing.finish_span(failed, error=RuntimeError("card declined"))
tracing.flush(10)
info = tracing.get_tracer_info()
tracing.shutdown()
json.dump({"carrier": carrier, "trace_id": format(root.get_span_context().trace_id, "032x"),
           "exported": info["spans_exported"]}, sys.stdout)
