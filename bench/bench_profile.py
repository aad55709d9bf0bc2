"""Profiling benchmark: the same code profiled and unprofiled, in one process and one run, as ratios.

Run ``python bench/bench_profile.py``. Prints a table and writes ``bench/results/profile.json``.

* ``tracing.profile`` around a CPU-bound workload (pure-Python loops and calls, a deep recursive one,
  and one that mostly waits) at the default interval (5 ms) and at 1 ms: wall time of a call inside
  ``with tracing.profile(...)`` over the same call without it, calls interleaved. Two ratios: of the
  fastest wall times (other processes' load only adds time) and of the median CPU time of the whole
  process (every thread: what the sampler and exporter threads spend counts, others' load does not).
  The sampler thread takes the interpreter lock for each sample, so the cost grows with the sample
  rate and the stack depth, not with how many calls the code makes.
* The slow-span mode (``profile_slow_threshold``): a traced ~200 ms span of the same loop with the mode
  on (threshold 10 ms, so it is sampled at 20/s) over the same span with it off; and the bookkeeping
  it adds to every span (an empty span, threshold 1 s so nothing is sampled).
* Off: the workload after profiles have run (the sampler thread idle, waiting) over the same workload
  before any profile ran: profiling that is not running costs nothing.
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

from bench.bench_tracer import machine  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from tracer import TracingManager  # noqa: E402

REPEATS = 21
SPANS_PER_REPEAT = 20_000


def parse_rows(n: int) -> int:
    """Pure Python: loops, small calls, string work (about 40 ms at n=500_000 on the machine of the results)."""
    total = 0
    for i in range(n):
        total += len(str(i).strip()) + (i % 7)
    return total


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def deep(levels: int, work: int) -> int:
    return parse_rows(work) if levels == 0 else deep(levels - 1, work)


def waits() -> None:
    time.sleep(0.02)
    parse_rows(5_000)


WORKLOADS = {
    "pure Python loop": lambda: parse_rows(500_000),
    "recursive calls, fib(25)": lambda: fib(25),
    "60 frames deep": lambda: deep(60, 500_000),
    "mostly waiting (sleep 20 ms)": waits,
}


def _timed(call) -> tuple[float, float]:
    """Wall time and the process's CPU time (every thread: the sampler's and exporter's work counts) in ms."""
    wall, cpu = time.perf_counter_ns(), time.process_time_ns()
    call()
    return (time.perf_counter_ns() - wall) / 1e6, (time.process_time_ns() - cpu) / 1e6


def compare(plain, other, repeats: int = REPEATS) -> dict:
    """Calls interleaved (the order alternating); the ratios of the fastest wall times (noise from other
    processes only adds time) and of the median CPU times of this process."""
    plain(), other()  # warm both
    a, b = [], []
    for i in range(repeats):
        if i % 2:
            b.append(_timed(other)), a.append(_timed(plain))
        else:
            a.append(_timed(plain)), b.append(_timed(other))
    wall_a, wall_b = min(w for w, _ in a), min(w for w, _ in b)
    cpu_a, cpu_b = statistics.median(c for _, c in a), statistics.median(c for _, c in b)
    return {"baseline_ms": round(wall_a, 3), "measured_ms": round(wall_b, 3), "ratio": round(wall_b / wall_a, 3),
            "baseline_cpu_ms": round(cpu_a, 3), "measured_cpu_ms": round(cpu_b, 3),
            "cpu_ratio": round(cpu_b / cpu_a, 3) if cpu_a else None}


def explicit(redis_url: str, spool: str, interval: str) -> dict:
    tracing = TracingManager(service_name="bench", redis_url=redis_url, spool_dir=spool, profile_interval=interval)
    out = {}
    try:
        for name, work in WORKLOADS.items():
            def profiled(work=work):
                with tracing.profile("bench"):
                    work()
            out[name] = compare(work, profiled)
        out["profiles_exported"] = (tracing.flush(10), tracing.get_tracer_info()["profiles_exported"])[1]
    finally:
        tracing.shutdown(2)
    return out


def slow_mode(redis_url: str, spool: str) -> dict:
    plain = TracingManager(service_name="bench", redis_url=redis_url, spool_dir=spool)
    sampled = TracingManager(service_name="bench", redis_url=redis_url, spool_dir=spool,
                             profile_slow_threshold="10ms")
    idle = TracingManager(service_name="bench", redis_url=redis_url, spool_dir=spool, profile_slow_threshold="1s")
    def work():
        parse_rows(2_500_000)

    def span_of(tracing):
        def run():
            with tracing.span("slow"):
                work()
        return run

    def empty_spans(tracing):
        def run():
            for _ in range(SPANS_PER_REPEAT):
                with tracing.span("fast"):
                    pass
        return run

    try:
        out = {"~200 ms span, threshold 10 ms": compare(span_of(plain), span_of(sampled), 9),
               f"{SPANS_PER_REPEAT} empty spans, threshold 1 s": compare(empty_spans(plain), empty_spans(idle), 7)}
        sampled.flush(10)
        out["profiles_exported"] = sampled.get_tracer_info().get("profiles_exported", 0)
    finally:
        for tracing in (plain, sampled, idle):
            tracing.shutdown(2)
    return out


def main() -> None:
    server = RedisServer.launch()
    try:
        with tempfile.TemporaryDirectory() as spool:
            work = WORKLOADS["pure Python loop"]
            before = [_timed(work) for _ in range(REPEATS)]
            results = {"explicit, 5 ms": explicit(server.url, spool, "5ms"),
                       "explicit, 1 ms": explicit(server.url, spool, "1ms"),
                       "slow-span mode, 50 ms interval": slow_mode(server.url, spool)}
            after = [_timed(work) for _ in range(REPEATS)]  # the sampler threads are idle now
            wall_a, wall_b = min(w for w, _ in before), min(w for w, _ in after)
            cpu_a, cpu_b = statistics.median(c for _, c in before), statistics.median(c for _, c in after)
            results["off"] = {"workload after profiling (idle sampler) vs before": {
                "baseline_ms": round(wall_a, 3), "measured_ms": round(wall_b, 3), "ratio": round(wall_b / wall_a, 3),
                "baseline_cpu_ms": round(cpu_a, 3), "measured_cpu_ms": round(cpu_b, 3),
                "cpu_ratio": round(cpu_b / cpu_a, 3)}}
    finally:
        server.destroy()
    report = {"machine": machine(), "load_average": os.getloadavg(), "repeats": REPEATS, "results": results}
    print(f"{'profiling overhead':66} {'plain ms':>9} {'profiled':>9} {'wall':>6} {'CPU':>6}")
    for group, rows in results.items():
        for name, row in rows.items():
            if isinstance(row, dict):
                print(f"{group + ': ' + name:66} {row['baseline_ms']:>9.2f} {row['measured_ms']:>9.2f} "
                      f"{row['ratio']:>6.3f} {row['cpu_ratio'] or 0:>6.3f}")
    out = Path(__file__).resolve().parent / "results" / "profile.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
