"""Metrics benchmark: the calling thread's cost of a counter increment and a histogram record.

Run ``python bench/bench_metrics.py``. Prints a table and writes
``bench/results/metrics.json``. Contrail's instruments (``tracing.metrics``)
against the same instruments of a bare OpenTelemetry SDK ``MeterProvider``
configured alike (delta temporality, the same base-2 exponential histogram,
trace-based exemplars, a periodic reader that does not fire while measuring),
interleaved in one process and one run, reported as ratios of medians. The
difference is what Contrail adds on the calling thread: the wrapper call and
the per-instrument cardinality check.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.sdk.metrics import Counter, Histogram, MeterProvider, TraceBasedExemplarFilter  # noqa: E402
from opentelemetry.sdk.metrics.export import (  # noqa: E402
    AggregationTemporality,
    MetricExporter,
    MetricExportResult,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation  # noqa: E402

from bench.bench_tracer import machine  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from tracer import TracingManager  # noqa: E402
from tracer.metrics import HISTOGRAM_BUCKETS  # noqa: E402

ATTRIBUTES = {"model": "gpt-4o", "route": "/chat"}
CALLS_PER_REPEAT = 20_000
REPEATS = 21
BUDGET = 1.2


class DroppingExporter(MetricExporter):
    """The bare side's exporter: same temporality and aggregation as Contrail's, drops what it gets."""

    def __init__(self):
        delta = AggregationTemporality.DELTA
        super().__init__(preferred_temporality={Counter: delta, Histogram: delta},
                         preferred_aggregation={Histogram: ExponentialBucketHistogramAggregation(
                             max_size=HISTOGRAM_BUCKETS)})

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        return None


def _per_call(loop, n: int) -> float:
    start = time.perf_counter_ns()
    loop(n)
    return (time.perf_counter_ns() - start) / n


def bench(redis_url: str, spool_dir: str) -> dict:
    reader = PeriodicExportingMetricReader(DroppingExporter(), export_interval_millis=3_600_000)
    provider = MeterProvider(metric_readers=[reader], exemplar_filter=TraceBasedExemplarFilter(),
                             shutdown_on_exit=False)
    meter = provider.get_meter("bench")
    bare_counter, bare_histogram = meter.create_counter("requests"), meter.create_histogram("duration")
    tracing = TracingManager(service_name="bench", redis_url=redis_url, spool_dir=spool_dir,
                             metrics_interval=3600)
    counter, histogram = tracing.metrics.counter("requests"), tracing.metrics.histogram("duration")
    attrs = ATTRIBUTES

    cases = {
        "counter increment, attributes": (lambda n: [bare_counter.add(1, attrs) for _ in range(n)],
                                          lambda n: [counter.increment(1, attrs) for _ in range(n)]),
        "counter increment, no attributes": (lambda n: [bare_counter.add(1) for _ in range(n)],
                                             lambda n: [counter.increment() for _ in range(n)]),
        "histogram record, attributes": (lambda n: [bare_histogram.record(0.123, attrs) for _ in range(n)],
                                         lambda n: [histogram.record(0.123, attrs) for _ in range(n)]),
        "histogram record, no attributes": (lambda n: [bare_histogram.record(0.123) for _ in range(n)],
                                            lambda n: [histogram.record(0.123) for _ in range(n)]),
    }
    results = {}
    try:
        for name, (bare, contrail) in cases.items():
            bare(1000), contrail(1000)  # warm both
            bare_ns, contrail_ns = [], []
            for _ in range(REPEATS):
                bare_ns.append(_per_call(bare, CALLS_PER_REPEAT))
                contrail_ns.append(_per_call(contrail, CALLS_PER_REPEAT))
            b, c = statistics.median(bare_ns), statistics.median(contrail_ns)
            results[name] = {"bare_sdk_ns": round(b), "contrail_ns": round(c), "ratio": round(c / b, 3)}
        results["series_dropped"] = tracing.get_tracer_info()["metric_series_dropped"]
    finally:
        tracing.shutdown(timeout=2)
        provider.shutdown()
    return results


def main() -> None:
    server = RedisServer.launch()
    try:
        with tempfile.TemporaryDirectory() as spool_dir:
            cost = bench(server.url, spool_dir)
    finally:
        server.destroy()
    results = {"machine": machine(), "load_average": os.getloadavg(), "calls_per_repeat": CALLS_PER_REPEAT,
               "repeats": REPEATS, "cost": cost, "targets": {"ratio_max": BUDGET}}
    print(f"{'calling-thread cost (median ns per call)':42} {'bare SDK':>9} {'Contrail':>9} {'ratio':>7}  "
          f"target <= {BUDGET}")
    for name, row in cost.items():
        if isinstance(row, dict):
            print(f"{name:42} {row['bare_sdk_ns']:>9} {row['contrail_ns']:>9} {row['ratio']:>7.3f}")
    out = Path(__file__).resolve().parent / "results" / "metrics.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
