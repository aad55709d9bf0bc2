"""CPU per span of each ingest step after decoding, on the collector benchmark's entries.

Run ``python bench/bench_ingest_steps.py [--spans 20000] [--rounds 7] [--old DIR]``.
Steps, as the consumer runs them (``StreamConsumer._read_spans`` and ``_store_together``): decode
(the bare loop's work, for reference), admission (``admit_span``), ``_prepare`` (grouping, staged
spans, statistics ahead), ``store_spans`` into a fresh SQLite database (one transaction per batch of
entries), and the recent-span cache. CPU is ``time.process_time()``; each round decodes afresh.

With ``--old DIR`` (a checkout of the code to compare with), rounds alternate between a child
process running that code and one running this tree, and medians of each step are printed side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("decode", "admit", "prepare", "store", "recent", "after_decode")
DETAIL = ("  group", "  figures", "  rows", "  pack")


def _round(spans: int, batch_entries: int, seed_entries: str, detail: bool = False) -> dict[str, float]:
    """One round in this process: µs of CPU per span for each step."""
    import pickle

    from collector_worker import finalizer, validation
    from collector_worker.consumer import Entry, StreamConsumer
    from collector_worker.recent_spans import RecentSpans
    from collector_worker.storage import open_engine
    from collector_worker.storage import staging
    from collector_worker.storage.writer import prepare_spans, store_spans
    from tracer.codec import decode_entry
    from tracer.limits import SpanLimits

    with open(seed_entries, "rb") as f:
        fields = pickle.load(f)
    limits = SpanLimits()
    cpu = time.process_time
    took = dict.fromkeys(STEPS + (DETAIL if detail else ()), 0.0)
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(f"sqlite:///{tmp}/bench.db")
        t = cpu()
        decoded = [decode_entry(f).spans for f in fields]
        took["decode"] = cpu() - t
        now = time.time_ns()
        t = cpu()
        admitted = []
        for spans_of in decoded:
            kept = []
            for span in spans_of:
                if not validation.admit_span(span, limits, now):
                    kept.append(span)
            admitted.append(kept)
        took["admit"] = cpu() - t
        entries = [Entry(f"{1000 + i}-0", None, spans=s) for i, s in enumerate(admitted)]
        recent = RecentSpans()
        for start in range(0, len(entries), batch_entries):
            batch = entries[start:start + batch_entries]
            received_ns = time.time_ns()
            t = cpu()
            part_spans, part_ns, prepared, figures = StreamConsumer._prepare(batch, received_ns)
            took["prepare"] += cpu() - t
            if detail:  # the parts again, on the same spans (nothing here changes them)
                t = cpu()
                again = prepare_spans(part_spans, received_ns, runs=[(e.id, len(e.spans)) for e in batch])
                took["  group"] += cpu() - t
                t = cpu()
                finalizer.SpanFigures(list(again.by_key.values()), sort_usage=True)
                took["  figures"] += cpu() - t
                t = cpu()
                for (trace_id, source), group in sorted(again.groups.items()):
                    staging.row(trace_id, group, received_ns, source)
                took["  rows"] += cpu() - t
                t = cpu()
                for group in again.groups.values():
                    staging.pack(group)
                took["  pack"] += cpu() - t
            stored_rows: list = []
            with engine.begin() as conn:
                t = cpu()
                new = store_spans(conn, part_spans, part_ns, prepared=prepared, stored_rows=stored_rows,
                                  trace_span_limit=50000)
                took["store"] += cpu() - t
                assert len(new) == len(part_spans)
            t = cpu()
            recent.add(stored_rows)
            took["recent"] += cpu() - t
        engine.dispose()
    took["after_decode"] = took["admit"] + took["prepare"] + took["store"] + took["recent"]
    return {k: v * 1e6 / spans for k, v in took.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch-entries", type=int, default=16, help="entries stored per transaction")
    parser.add_argument("--old", help="directory holding the code to compare with")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_round(args.spans, args.batch_entries, args.child)))
        return
    sys.path.insert(0, str(ROOT))
    import pickle

    from bench.bench_collector import make_entries

    with tempfile.NamedTemporaryFile(suffix=".pickle", delete=False) as f:
        pickle.dump(make_entries(args.spans), f)
        seed = f.name
    trees = {"new": str(ROOT)} if not args.old else {"old": args.old, "new": str(ROOT)}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    try:
        for _ in range(args.rounds):
            for name, tree in trees.items():
                env = dict(os.environ, PYTHONPATH=tree)
                out = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_ingest_steps.py"),
                                      "--spans", str(args.spans), "--batch-entries", str(args.batch_entries),
                                      "--child", seed], env=env, check=True, capture_output=True, text=True)
                results[name].append(json.loads(out.stdout))
    finally:
        os.unlink(seed)
    print(f"µs CPU per span, median of {args.rounds} rounds ({args.spans} spans, "
          f"{args.batch_entries} entries per transaction)")
    print(f"{'step':14}" + "".join(f"{name:>10}" for name in trees))
    for step in STEPS:
        print(f"{step:14}" + "".join(f"{statistics.median(r[step] for r in results[name]):10.2f}"
                                      for name in trees))


if __name__ == "__main__":
    main()
