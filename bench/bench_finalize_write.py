"""The finalizer's write transactions alone: thread CPU per span of ``WritePipeline._write`` on SQLite.

Run ``python bench/bench_finalize_write.py --build DB`` once (stores seeded traces of the collector
benchmark's shape, untimed), then ``python bench/bench_finalize_write.py DB`` with each checkout on
``PYTHONPATH``, alternating: each run copies DB, leases, reads and assembles batches as the pipeline does
(untimed) and times only the write transactions (write, lease ahead, commit) with ``time.thread_time``.
``--dump`` prints a digest of every table after the run (identical stored results across checkouts).
Leases held ahead for longer than half their lifetime (a run slowed down past 30 s) are given back and
re-claimed, which changes the batches and so the trace numbers: compare digests of runs that did not.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import text

from collector_worker import finalizer, leases
from collector_worker.recent_spans import RecentSpans  # noqa: F401  (the pipeline's type)
from collector_worker.settings import CollectorSettings
from collector_worker.storage import open_engine
from collector_worker.storage.writer import store_spans
from collector_worker.write_pipeline import WritePipeline

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after the checkout's modules, imported above
from bench.bench_collector import benchmark_span  # noqa: E402

SERVICES = ("gateway", "orders", "payments", "inventory", "llm-agent")
NOW_NS = 1_780_000_000_000_000_000


def make_spans(traces: int, seed: int, spans_per_trace: int = 10) -> list[dict]:
    """Seeded traces shaped like bench_collector's (HTTP root, client calls, an LLM call)."""
    rng = random.Random(seed)
    out = []
    for t in range(traces):
        trace_id = f"{rng.getrandbits(128):032x}"
        ids = [f"{rng.getrandbits(64):016x}" for _ in range(spans_per_trace)]
        start = NOW_NS - 50_000_000_000 + t * 1000
        out.extend(benchmark_span(trace_id, ids, i, t, start) for i in range(spans_per_trace))
    return out


def varied_spans(traces: int, seed: int, late: bool = False) -> list[dict]:
    """Seeded traces of many shapes: deep, wide, missing parents, errors, LLM spans, odd attribute values.

    ``late``: spans arriving after a trace was finalized (new ones, and copies of stored ones) for some traces.
    """
    rng = random.Random(seed)
    odd = [True, False, 0, -1, 2**63 - 1, 1.5, float("inf"), "", "é✓", "x" * 300, [1, "a"], {"k": 1}, None]
    out = []
    for t in range(traces):
        trace_rng = random.Random(rng.getrandbits(64))
        trace_id = f"{trace_rng.getrandbits(128):032x}"
        n = trace_rng.choice([1, 2, 3, 10, 40, 120])
        ids = [f"{trace_rng.getrandbits(64):016x}" for _ in range(n)]
        start = NOW_NS - 50_000_000_000 + t * 10_000
        for i, span_id in enumerate(ids):
            if late and trace_rng.random() < 0.7:
                continue
            if late and trace_rng.random() < 0.5:  # a new span, not a copy of a stored one
                span_id = f"{trace_rng.getrandbits(64):016x}"
            shape = trace_rng.random()
            parent = None if i == 0 else (ids[i - 1] if shape < 0.3 else ids[trace_rng.randrange(i)])
            if i and trace_rng.random() < 0.05:
                parent = f"{trace_rng.getrandbits(64):016x}"  # a parent that never arrives
            service = trace_rng.choice(SERVICES)
            attributes = {"http.route": f"/r/{trace_rng.randrange(9)}", "odd": trace_rng.choice(odd),
                          "n": trace_rng.randrange(-5, 5) * 0.25}
            if service == "llm-agent":
                attributes.update({"gen_ai.request.model": trace_rng.choice(["m1", "m2"]),
                                   "gen_ai.usage.input_tokens": trace_rng.randrange(500),
                                   "gen_ai.usage.output_tokens": trace_rng.randrange(100)})
            out.append({
                "trace_id": trace_id, "span_id": span_id, "parent_span_id": parent,
                "name": f"op-{trace_rng.randrange(12)}", "kind": trace_rng.choice(["server", "client", "internal"]),
                "start_ns": start + i * 1000, "end_ns": start + i * 1000 + trace_rng.randrange(1, 10**7),
                "status_code": "error" if trace_rng.random() < 0.05 else "ok", "service": service,
                "resource": {"host.name": f"h{trace_rng.randrange(3)}"}, "attributes": attributes,
                "events": [], "links": [],
            })
    return out


def store(engine, spans: list[dict], received_ns: int) -> None:
    for i in range(0, len(spans), 5000):
        with engine.begin() as conn:
            finalizer.on_spans_stored(conn, store_spans(conn, spans[i:i + 5000], received_ns))


def build(path: Path, traces: int, varied: bool = False) -> None:
    engine = open_engine(f"sqlite:///{path}")
    if varied:
        store(engine, varied_spans(traces, seed=11), NOW_NS - 10_000_000_000)
        engine.dispose()
        return
    spans = make_spans(traces, seed=7)
    for i in range(0, len(spans), 5000):
        with engine.begin() as conn:
            finalizer.on_spans_stored(conn, store_spans(conn, spans[i:i + 5000], NOW_NS - 10_000_000_000))
    engine.dispose()


def digest(engine) -> str:
    h = hashlib.sha256()
    with engine.connect() as conn:
        tables = [r[0] for r in conn.execute(text("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"))]
        for table in tables:
            columns = "id, data" if table == "block_dictionaries" else "*"  # not when it was trained
            rows = sorted(conn.execute(text(f'SELECT {columns} FROM "{table}"')).fetchall(), key=repr)
            h.update(f"{table}:{len(rows)}:{rows!r}".encode())
            print(" ", table, len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:12])
    return h.hexdigest()


def run(template: Path, dump: bool, late: int = 0) -> float:
    work = Path(tempfile.mkdtemp(prefix="bench-write-"))
    db = work / "db.sqlite"
    shutil.copy(template, db)
    engine = open_engine(f"sqlite:///{db}")
    if os.environ.get("CACHE_KB"):
        from sqlalchemy import event

        @event.listens_for(engine, "connect")
        def _cache(dbapi_conn, _):
            dbapi_conn.execute(f"PRAGMA cache_size=-{int(os.environ['CACHE_KB'])}")

        engine.dispose()  # connections opened from here on get the setting
    settings = CollectorSettings(quiet_period=1.0)
    ahead = leases.ClaimAhead()
    pipeline = WritePipeline(engine, settings, "bench", None, ahead)
    quiet_ns = 1_000_000_000
    cpu, spans = 0.0, 0
    rounds = [None, varied_spans(late, seed=11, late=True)] if late else [None]
    source = varied_spans(late, seed=11) if late else []
    passes = 0
    try:
        for round_spans in rounds:
            if round_spans:  # late spans (new and copies) for finalized traces: they are re-finalized
                store(engine, round_spans, NOW_NS - 8_000_000_000)
            while True:
                now_ns = time.time_ns()
                claimed, leased_ns = leases.lease_batch(engine, "bench", ahead, now_ns, quiet_ns)
                if not claimed:
                    break
                batch = finalizer.read_and_assemble(engine, settings, claimed, NOW_NS, None)
                passes += 1
                if late and passes <= 12:  # a span arriving while the batch is assembled: its trace stays pending
                    during = {t for t, _ in claimed[::37]}
                    store(engine, [dict(s, span_id=f"{passes:08x}{i:08x}") for i, s in enumerate(
                        s for s in source if s["trace_id"] in during)][:50], NOW_NS - 7_000_000_000 + passes)
                n = sum(row[7] for row in batch.trace_rows)
                start = time.thread_time()
                pipeline._write(batch, claimed, quiet_ns, leased_ns)
                cpu += time.thread_time() - start
                spans += n
        if dump:
            print("digest", digest(engine))
    finally:
        pipeline.close()
        engine.dispose()
        shutil.rmtree(work)
    return cpu / spans * 1e6


def main() -> int:
    if os.environ.get("NOGC"):
        import gc; gc.disable()
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--build", type=int, default=0, help="store this many traces into DB")
    parser.add_argument("--dump", action="store_true")
    parser.add_argument("--varied", type=int, default=0,
                        help="with --build: varied traces; else: run in two rounds with late spans for traces")
    args = parser.parse_args()
    if args.build:
        build(Path(args.db), args.build, bool(args.varied))
        return 0
    print(f"write CPU {run(Path(args.db), args.dump, args.varied):.3f} us/span")
    return 0


if __name__ == "__main__":
    sys.exit(main())
