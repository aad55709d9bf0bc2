"""CPU per span of the finalizer's per-trace steps, this tree's code against another git revision's.

Times :func:`~collector_worker.assembler.assemble`, the dependency edges of a first finalization
(``edge_difference``), :func:`~collector_worker.llm_usage.aggregate_usage` and
``stats.Accumulator.add_spans`` on the benchmark's spans (``bench_collector.make_entries`` decoded by the
codec) and on the varied shapes of ``tests/collector/trace_shapes.py``. The base revision's modules are
extracted under another package name; base and this tree run alternately in one process, each round timed
with ``time.process_time``, and the medians are printed (µs per span).

    PYTHONPATH=$PWD python -m bench.bench_assembly --base main --rounds 9
"""

from __future__ import annotations

import argparse
import gc
import importlib
import io
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_base(revision: str) -> str:
    """Extract ``collector_worker`` at ``revision`` as the package ``base_collector_worker``; its name."""
    data = subprocess.run(["git", "archive", revision, "collector_worker"], cwd=ROOT, check=True,
                          capture_output=True).stdout
    where = Path(tempfile.mkdtemp(prefix="bench-assembly-"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(where, filter="data")
    (where / "collector_worker").rename(where / "base_collector_worker")
    sys.path.insert(0, str(where))
    return "base_collector_worker"


def modules(package: str) -> dict:
    return {name: importlib.import_module(f"{package}.{name}")
            for name in ("assembler", "dependencies", "llm_usage", "stats")}


def bench_traces(total_spans: int) -> list[list[dict]]:
    from bench.bench_collector import make_entries
    from tracer.codec import decode_entry

    by_trace: dict[str, list[dict]] = defaultdict(list)
    for entry in make_entries(total_spans):
        for span in decode_entry(entry).spans:
            by_trace[span["trace_id"]].append(span)
    return list(by_trace.values())


def steps(m: dict):
    """name -> function of (traces, batches) doing what the finalizer and the ingest side do with them."""
    assemble, edge_difference = m["assembler"].assemble, m["dependencies"].edge_difference
    assembly_edges = getattr(m["dependencies"], "assembly_edges", None)  # a revision without it: edge_difference
    aggregate_usage, accumulator = m["llm_usage"].aggregate_usage, m["stats"].Accumulator

    def run_assemble(traces, batches):
        for spans in traces:
            assemble(spans)

    def run_edges(traces, batches):
        edges = defaultdict(lambda: [0, 0, 0])
        for spans in traces:
            edge_difference([s for s in spans if s.get("depth") is not None], spans, into=edges)

    def run_assemble_and_edges(traces, batches):  # what a first finalization does; with links where there are any
        edges = defaultdict(lambda: [0, 0, 0])
        for spans in traces:
            if assembly_edges is None:
                assemble(spans)
                edge_difference([s for s in spans if s.get("depth") is not None], spans, into=edges)
                continue
            a = assemble(spans, keep_links=True)
            before = [s for s in spans if s.get("depth") is not None]
            if before:
                edge_difference(before, spans, into=edges)
            else:
                assembly_edges(a, spans, edges)

    def run_usage(traces, batches):
        for spans in batches:
            aggregate_usage(spans)

    def run_stats(traces, batches):
        for spans in batches:
            accumulator().add_spans("span", spans)

    return {"assemble": run_assemble, "edges": run_edges, "usage": run_usage, "stats": run_stats,
            "asm+edges": run_assemble_and_edges}


def medians(fn_base, fn_new, args, n: int, rounds: int) -> tuple[float, float]:
    """Median µs of CPU per span of each side, the sides alternated round by round."""
    times: dict[str, list[float]] = {"base": [], "new": []}
    for r in range(rounds):
        order = (("base", fn_base), ("new", fn_new)) if r % 2 == 0 else (("new", fn_new), ("base", fn_base))
        for side, fn in order:
            gc.collect()
            gc.disable()  # a collection set off by one side's garbage would be charged to the other
            t0 = time.process_time()
            fn(*args)
            times[side].append((time.process_time() - t0) / n * 1e6)
            gc.enable()
    return statistics.median(times["base"]), statistics.median(times["new"])


def measure(label: str, traces: list[list[dict]], base: dict, new: dict, rounds: int) -> None:
    spans = [s for t in traces for s in t]
    batches = [spans[i:i + 5000] for i in range(0, len(spans), 5000)]
    n = len(spans)
    print(f"{label}: {len(traces)} traces, {n} spans; µs CPU per span, median of {rounds} rounds (base / new)")
    total_base = total_new = 0.0
    for name in ("assemble", "edges", "usage", "stats"):
        b, w = medians(base[name], new[name], (traces, batches), n, rounds)
        total_base, total_new = total_base + b, total_new + w
        print(f"  {name:10s} {b:7.3f} -> {w:7.3f}   x{b / w:.2f}")
    print(f"  {'total':10s} {total_base:7.3f} -> {total_new:7.3f}   x{total_base / total_new:.2f}")
    b, w = medians(base["asm+edges"], new["asm+edges"], (traces, batches), n, rounds)
    print(f"  {'asm+edges':10s} {b:7.3f} -> {w:7.3f}   x{b / w:.2f}   (new: assemble(keep_links=True) + assembly_edges)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--shapes", type=int, default=3000, help="varied traces (0: skip)")
    args = parser.parse_args()
    base = steps(modules(load_base(args.base)))
    new = steps(modules("collector_worker"))
    measure("benchmark traces", bench_traces(args.spans), base, new, args.rounds)
    if args.shapes:
        from tests.collector.trace_shapes import varied_traces
        measure("varied shapes", varied_traces(args.shapes, seed=1, broken=False), base, new, args.rounds)


if __name__ == "__main__":
    main()
