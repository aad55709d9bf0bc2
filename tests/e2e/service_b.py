"""Service B of the end-to-end test: continues the trace from the carrier service A handed over."""

import json
import sys

from tracer import TracingManager

carrier = json.loads(sys.argv[1])
tracing = TracingManager(service_name="billing")
parent = tracing.extract_span_context(carrier)
assert parent is not None, "service B could not extract the context"
span = tracing.start_span("invoice", parent_span=parent, tags={"invoice.lines": 3})
child = tracing.start_span("render_pdf", parent_span=span)
tracing.finish_span(child)
tracing.finish_span(span, tags={"success": True})
tracing.flush(10)
tracing.shutdown()
print(json.dumps({"span_id": format(span.get_span_context().span_id, "016x")}))
