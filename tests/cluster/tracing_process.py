"""A traced process of the cluster tests: TRACES traces of SPANS spans each and a counter of them, exported with
the environment's settings (a redis+cluster:// URL and CONTRAIL_STREAM_SHARDS); prints the (trace id, span id)
pairs it made."""

import json
import sys

from tracer import TracingManager

traces, spans = int(sys.argv[1]), int(sys.argv[2])
tracing = TracingManager(service_name=sys.argv[3], metrics_interval=3600)
requests = tracing.metrics.counter("cluster_requests_total")
made = []
for t in range(traces):
    requests.increment(kind="even" if t % 2 == 0 else "odd")
    with tracing.span("handle", **{"request.no": t}) as root:
        made.append(root.get_span_context())
        for s in range(spans - 1):
            with tracing.span(f"step-{s % 4}") as child:
                made.append(child.get_span_context())
assert tracing.metrics.flush(60)
assert tracing.flush(60), tracing.get_tracer_info()
info = tracing.get_tracer_info()
tracing.shutdown()
json.dump({"spans": [[format(c.trace_id, "032x"), format(c.span_id, "016x")] for c in made],
           "exported": info["spans_exported"], "dropped": info["spans_dropped"]}, sys.stdout)
