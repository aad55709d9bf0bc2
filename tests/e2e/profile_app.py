"""A service whose traced request spends its time in one CPU-bound function, profiled; prints its ids.

Settings come from the environment (CONTRAIL_REDIS_URL, ...). ``hash_passwords`` burns the CPU,
``load_rows`` sleeps a little: the profile must name the first as the hot function. A second request
runs with only the slow-span mode watching it (``CONTRAIL_PROFILE_SLOW_THRESHOLD`` set by the test).
Prints one JSON line: trace and span ids of both requests and the tracer's counters.
"""

from __future__ import annotations

import hashlib
import json
import time

from tracer import TracingManager


def hash_passwords(rounds: int) -> bytes:
    digest = b"contrail"
    for _ in range(rounds):
        digest = hashlib.sha256(digest + b"salt").digest()
    return digest


def load_rows() -> None:
    time.sleep(0.02)


def handle_login(tracing: TracingManager) -> None:
    load_rows()
    deadline = time.perf_counter() + 0.4
    while time.perf_counter() < deadline:
        hash_passwords(2000)


def ids(span) -> dict:
    context = span.get_span_context()
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}


def main() -> None:
    tracing = TracingManager(service_name="auth")
    with tracing.span("POST /login") as span:
        with tracing.profile("login"):
            handle_login(tracing)
        profiled = ids(span)
    with tracing.span("POST /login/slow") as span:
        handle_login(tracing)
        slow = ids(span)
    assert tracing.flush(10)
    info = tracing.get_tracer_info()
    tracing.shutdown()
    print(json.dumps({"profiled": profiled, "slow": slow, "info": info}))


if __name__ == "__main__":
    main()
