"""Tracer benchmarks: application-thread span cost vs a bare OpenTelemetry SDK span, and export throughput.

Run ``python bench/bench_tracer.py``. Prints a table and writes
``bench/results/tracer.json``. Everything is measured in one process and one
run, baseline and Contrail interleaved, and reported as ratios.

(a) span cost: ``TracingManager.span`` and ``start_span``+``finish_span``
    against ``tracer.start_as_current_span`` / ``start_span``+``end`` of a
    bare SDK ``TracerProvider`` with the SDK's ``BatchSpanProcessor`` whose
    exporter encodes each batch as an OTLP protobuf request (the SDK's own
    ``encode_spans(...).SerializeToString()``, what the OTLP exporters send)
    and then drops the bytes. Same attributes. The manager encodes its
    batches with Contrail's codec and really pushes them to a private Redis in
    its background thread while being measured. Both sides therefore pay a
    background thread that converts and encodes every span; only Contrail
    also does network I/O.
(b) export throughput: finished SDK spans encoded into batch entries and
    pushed with pipelined XADD into a private Redis (the exporter path), and
    the same through the whole processor (on_end → thread → Redis).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_otlp  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult  # noqa: E402

from tests.support.servers import RedisServer  # noqa: E402
from tracer import TracingManager  # noqa: E402
from tracer.export import ENTRIES_PER_PUSH, ContrailSpanProcessor, RedisStreamExporter, encode_sdk_spans  # noqa: E402
from tracer.settings import TracerSettings  # noqa: E402

ATTRIBUTES = {"http.request.method": "GET", "http.route": "/orders/<id>", "order.id": 42,
              "customer.tier": "gold", "retry": False}
SPANS_PER_REPEAT = 2000
REPEATS = 21
THROUGHPUT_SPANS = 200_000
# The SDK processor with Contrail's default batching (queue 20000, 512 per batch, 0.5 s), not the SDK's own
# defaults (queue 2048, 5 s), so neither side drops spans or defers its export work past the measurement.
_DEFAULTS = TracerSettings.load()
LIVE_SDK_BATCHING = {"max_queue_size": _DEFAULTS.max_queue_size, "max_export_batch_size": _DEFAULTS.max_export_batch_size,
                     "schedule_delay_millis": _DEFAULTS.schedule_delay * 1000}


class OtlpEncodeExporter(SpanExporter):
    """The work an OTLP exporter does before the network: protobuf-encode the batch."""

    def __init__(self):
        self.spans = 0
        self.bytes = 0

    def export(self, spans):
        self.bytes += len(encode_otlp(spans).SerializeToString())
        self.spans += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self):
        pass


def _timed(loop, n: int) -> float:
    start = time.perf_counter_ns()
    loop(n)
    return (time.perf_counter_ns() - start) / n


def bench_span_cost(redis_url: str, spool_dir: str, live: bool) -> dict:
    """Median ns per span. ``live=False``: both processors export only between repeats (pure
    application-thread cost); ``live=True``: default batching, so both export threads run concurrently
    with the measured loop (Contrail: encode + XADD to Redis; SDK baseline: OTLP protobuf encoding)."""
    deferred = {} if live else {"max_export_batch_size": 4096, "schedule_delay": 600, "max_queue_size": 8192}
    provider = TracerProvider(shutdown_on_exit=False)
    baseline_exporter = OtlpEncodeExporter()
    provider.add_span_processor(BatchSpanProcessor(
        baseline_exporter, **(LIVE_SDK_BATCHING if live else {"max_export_batch_size": 4096,
                                                                "schedule_delay_millis": 600_000,
                                                                "max_queue_size": 8192})))
    bare = provider.get_tracer("bench")
    tracing = TracingManager(service_name="bench", redis_url=redis_url, spool_dir=spool_dir, **deferred)

    def bare_with(n):
        for _ in range(n):
            with bare.start_as_current_span("op", attributes=ATTRIBUTES):
                pass

    def contrail_with(n):
        for _ in range(n):
            with tracing.span("op", **ATTRIBUTES):
                pass

    def bare_explicit(n):
        for _ in range(n):
            bare.start_span("op", attributes=ATTRIBUTES).end()

    def contrail_explicit(n):
        for _ in range(n):
            tracing.finish_span(tracing.start_span("op", tags=ATTRIBUTES))

    pairs = {"span() context manager": (bare_with, contrail_with),
             "start_span + finish_span": (bare_explicit, contrail_explicit)}
    for baseline, candidate in pairs.values():  # warm up both paths
        baseline(500)
        candidate(500)
    samples = {name: ([], []) for name in pairs}
    for repeat in range(REPEATS):
        for name, (baseline, candidate) in pairs.items():
            order = [(0, baseline), (1, candidate)] if repeat % 2 == 0 else [(1, candidate), (0, baseline)]
            for slot, loop in order:
                samples[name][slot].append(_timed(loop, SPANS_PER_REPEAT))
                provider.force_flush()
                tracing.flush(10)
    results = {}
    for name, (base, cand) in samples.items():
        b, c = statistics.median(base), statistics.median(cand)
        results[name] = {"bare_sdk_ns": round(b), "contrail_ns": round(c), "ratio": round(c / b, 3)}
    info = tracing.get_tracer_info()
    results["exported"] = info["spans_exported"]
    results["baseline_otlp_encoded"] = baseline_exporter.spans
    results["dropped"] = info["spans_dropped"]
    tracing.shutdown()
    provider.shutdown()
    return results


def _finished_spans(n: int) -> list:
    """Real SDK ReadableSpans with the benchmark attributes and one event, as on_end receives them."""
    collected = []

    class Collect(ContrailSpanProcessor.__mro__[1]):  # SpanProcessor
        def on_end(self, span):
            collected.append(span)

    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(Collect())
    tracer = provider.get_tracer("bench")
    with tracer.start_as_current_span("root"):
        for i in range(n - 1):
            span = tracer.start_span("child", attributes=ATTRIBUTES)
            span.add_event("checkpoint", {"step": i})
            span.end()
    return collected


def bench_throughput(server: RedisServer, spool_dir: str) -> dict:
    settings = TracerSettings.load(redis_url=server.url, spool_dir=spool_dir)
    spans = _finished_spans(THROUGHPUT_SPANS)
    batch = settings.max_export_batch_size
    client = server.client()

    start = time.perf_counter()
    entries = [encode_sdk_spans(spans[i:i + batch]) for i in range(0, len(spans), batch)]
    encode_s = time.perf_counter() - start

    client.delete(settings.stream)
    exporter = RedisStreamExporter(settings)
    start = time.perf_counter()
    for i in range(0, len(spans), batch * ENTRIES_PER_PUSH):
        group = [encode_sdk_spans(spans[j:j + batch]) for j in range(i, min(i + batch * ENTRIES_PER_PUSH, len(spans)),
                                                                     batch)]
        exporter.push(group)
    push_s = time.perf_counter() - start
    assert client.xlen(settings.stream) == len(entries)

    client.delete(settings.stream)
    processor = ContrailSpanProcessor(settings)
    start = time.perf_counter()
    for span in spans:
        processor.on_end(span)
        if len(processor._queue) > settings.max_queue_size - batch:  # offer at the rate the thread drains
            time.sleep(0.0005)
    assert processor.force_flush(60_000)
    pipeline_s = time.perf_counter() - start
    info = processor.info()
    processor.shutdown()
    exporter.shutdown()
    client.close()
    return {
        "spans": len(spans), "batch_size": batch, "entries": len(entries),
        "encode_only_spans_per_s": round(len(spans) / encode_s),
        "encode_xadd_spans_per_s": round(len(spans) / push_s),
        "processor_spans_per_s": round(len(spans) / pipeline_s),
        "processor_exported": info["spans_exported"], "processor_dropped": info["spans_dropped"],
        "bytes_per_span": round(sum(len(e[b"data"]) for e in entries) / len(spans), 1),
    }


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def main() -> None:
    server = RedisServer.launch()
    try:
        with tempfile.TemporaryDirectory() as spool_dir:
            cost = bench_span_cost(server.url, spool_dir, live=False)
            cost_live = bench_span_cost(server.url, spool_dir, live=True)
            throughput = bench_throughput(server, spool_dir)
    finally:
        server.destroy()
    results = {"machine": machine(), "load_average": os.getloadavg(), "span_cost": cost,
               "span_cost_live_export": cost_live, "throughput": throughput,
               "targets": {"span_cost_ratio_max": 1.15, "spans_per_s_min": 100_000}}
    print(f"machine: {results['machine']['cpu']} ({results['machine']['cores']} cores), "
          f"Python {results['machine']['python']}")
    print(f"{'span cost (median ns per span)':40} {'bare SDK':>10} {'Contrail':>10} {'ratio':>7}  target <= 1.15")
    for label, table in (("", cost), (" [live export]", cost_live)):
        for name in ("span() context manager", "start_span + finish_span"):
            row = table[name]
            print(f"{name + label:40} {row['bare_sdk_ns']:>10} {row['contrail_ns']:>10} {row['ratio']:>7.3f}")
    print(f"{'export throughput':40} {'spans/s':>10}  target >= 100000")
    for key in ("encode_only_spans_per_s", "encode_xadd_spans_per_s", "processor_spans_per_s"):
        print(f"{key:40} {throughput[key]:>10}")
    print(f"bytes per span on the wire: {throughput['bytes_per_span']}")
    out = Path(__file__).resolve().parent / "results" / "tracer.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
