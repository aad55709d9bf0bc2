"""A service that records counters, a histogram and a gauge with attributes, then prints what it recorded.

Settings come from the environment (CONTRAIL_REDIS_URL, ...). Prints one JSON line: the values recorded,
the trace id of the span the histogram was recorded in, and the tracer's counters.
"""

from __future__ import annotations

import json
import time

from tracer import TracingManager

HOUR = 3600


def main() -> None:
    to_next_hour = HOUR - time.time() % HOUR
    if to_next_hour < 15:  # every point in one hourly bucket, so one point holds the whole histogram
        time.sleep(to_next_hour + 1)
    tracing = TracingManager(service_name="shop", metrics_interval=3600)
    metrics = tracing.get_metrics_collector()
    assert metrics is tracing.metrics
    requests = metrics.counter("llm_requests_total", unit="{request}", description="LLM requests")
    duration = metrics.histogram("llm_request_duration", unit="s", description="LLM request latency")
    sessions = metrics.gauge("active_sessions")
    durations = [0.002 * (i + 1) for i in range(500)]  # 2 ms .. 1 s
    with tracing.span("answer") as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        for i, value in enumerate(durations):
            requests.increment(model="gpt" if i % 5 else "claude")
            duration.record(value, {"model": "gpt"})
    requests.increment(10, model="gpt")
    for value in (3, 9, 5):  # one exported point each
        sessions.set(value, region="eu")
        assert metrics.flush(10)
    tracing.flush(10)
    info = tracing.get_tracer_info()
    tracing.shutdown()
    print(json.dumps({"durations": durations, "trace_id": trace_id, "info": info}))


if __name__ == "__main__":
    main()
