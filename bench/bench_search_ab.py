"""Trace search over SQLite period files: this checkout against another one, interleaved on one database.

Run on a database seeded and sealed by ``bench_api.py --days 8`` (or :mod:`bench.bench_api`'s ``seed``
then ``seal_closed_days``): the main file holds the last day, eight period files the others. Each
checkout (``--baseline PATH``, e.g. a git worktree of main, and this one) runs in a process of its own;
the driver asks them for a round of the search mix in turn, so both see the same machine load. A round
is bench_api.py's 12-filter mix through ``queries.search_traces`` on a fresh Connection each (what an
API request does below Flask), timed by the wall clock and by the thread's CPU time (less at the mercy of
other load on the machine). The answers (summaries, totals, cursors) must be the same in both.

Usage: python bench/bench_search_ab.py --database /tmp/search.db --baseline /path/to/main [--rounds 15]
       [--out bench/results/search_ab.json] [--label NAME]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINUTE = 60 * 1_000_000_000
FILTERS = ["", "service=billing", "service=orders&operation=POST /orders", "tag=user.id=u42",
           "tag=http.status_code>499", "status=error", "min_duration=2s", "lookback=15m", "sort=duration_desc",
           "services=llm,auth", "service=gateway&min_duration=1s&sort=duration_asc", "limit=100"]


def mix(newest_ns: int) -> list:
    """bench_api.py's filter mix as TraceQuery objects (``lookback`` counted back from the newest trace)."""
    from collector_worker.storage.queries import TraceQuery

    return [TraceQuery(), TraceQuery(service="billing"), TraceQuery(service="orders", operation="POST /orders"),
            TraceQuery(tags=[("user.id", "=", "u42")]), TraceQuery(tags=[("http.status_code", ">", "499")]),
            TraceQuery(status="error"), TraceQuery(min_duration_ns=2_000_000_000),
            TraceQuery(start_ns=newest_ns - 15 * MINUTE), TraceQuery(sort="duration_desc"),
            TraceQuery(services=["llm", "auth"]),
            TraceQuery(service="gateway", min_duration_ns=1_000_000_000, sort="duration_asc"),
            TraceQuery(limit=100)]


def worker(tree: str, database: str, newest_ns: int) -> None:
    """Answer each line on stdin with one round of the mix: per filter, milliseconds and a digest."""
    sys.path.insert(0, tree)
    import collector_worker
    from collector_worker.storage import open_engine, queries

    assert Path(collector_worker.__file__).resolve().is_relative_to(Path(tree).resolve()), collector_worker.__file__
    engine = open_engine(f"sqlite:///{database}", migrate=False)
    searches = mix(newest_ns)
    print(json.dumps({"ready": str(Path(collector_worker.__file__).parent)}), flush=True)
    for _ in sys.stdin:
        out = []
        for q in searches:
            started, cpu = time.perf_counter(), time.thread_time()
            with engine.connect() as conn:
                found = queries.search_traces(conn, q)
            ms, cpu_ms = (time.perf_counter() - started) * 1000, (time.thread_time() - cpu) * 1000
            shown = json.dumps([found["traces"], found["total"], found["total_capped"], found["next_cursor"]])
            out.append([ms, cpu_ms, hashlib.sha1(shown.encode()).hexdigest()[:12]])
        print(json.dumps(out), flush=True)
    engine.dispose()


def p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def summary(rounds: list[list]) -> dict:
    every = [ms for r in rounds for ms, _, _ in r]
    cpu = [ms for r in rounds for _, ms, _ in r]
    return {"queries": len(every), "p50_ms": round(p(every, 0.5), 2), "p95_ms": round(p(every, 0.95), 2),
            "cpu_p50_ms": round(p(cpu, 0.5), 2), "cpu_p95_ms": round(p(cpu, 0.95), 2),
            "per_filter_p95_ms": {f or "(none)": round(p([r[i][0] for r in rounds], 0.95), 2)
                                  for i, f in enumerate(FILTERS)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database", required=True)
    parser.add_argument("--baseline", required=True, help="another checkout of Contrail (e.g. a worktree of main)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "search_ab.json"))
    parser.add_argument("--label", default="run")
    parser.add_argument("--worker", nargs=3, metavar=("TREE", "DATABASE", "NEWEST_NS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], args.worker[1], int(args.worker[2]))
        return
    with sqlite3.connect(args.database) as db:
        newest = int(db.execute("SELECT max(start_ns) FROM traces").fetchone()[0])
        periods = db.execute("SELECT count(*) FROM sealed_periods").fetchone()[0]
    trees = {"baseline": str(Path(args.baseline).resolve()), "this": str(ROOT)}
    procs = {name: subprocess.Popen([sys.executable, __file__, "--database", args.database, "--baseline", "-",
                                     "--worker", tree, args.database, str(newest)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for name, tree in trees.items()}
    for proc in procs.values():
        json.loads(proc.stdout.readline())
    rounds: dict[str, list] = {name: [] for name in procs}
    load = [round(os.getloadavg()[0], 1)]
    try:
        for i in range(args.rounds + 1):  # the first round warms both (not counted)
            for name in (list(procs) if i % 2 == 0 else list(procs)[::-1]):
                proc = procs[name]
                proc.stdin.write("\n")
                proc.stdin.flush()
                answer = json.loads(proc.stdout.readline())
                if i:
                    rounds[name].append(answer)
    finally:
        for proc in procs.values():
            proc.stdin.close()
            proc.wait()
    load.append(round(os.getloadavg()[0], 1))
    same = all(a[2] == b[2] for ra, rb in zip(rounds["baseline"], rounds["this"]) for a, b in zip(ra, rb))
    result = {"period_files": periods, "rounds": args.rounds, "load_average_before_after": load, "same_answers": same,
              **{name: summary(r) for name, r in rounds.items()}}
    path = Path(args.out)
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored[args.label] = result
    path.write_text(json.dumps(stored, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
