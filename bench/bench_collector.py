"""Collector benchmark: ingest throughput against a bare stream loop, and scaling on PostgreSQL.

Run ``python bench/bench_collector.py [--spans 200000] [--pg-spans 100000]``.
Prints a table and writes ``bench/results/collector.json``. All figures come
from one run against a private Redis server:

(a) one ``contrail collector`` process on SQLite, the real consumer with
    finalization (assembly, statistics) on, ingesting pre-encoded entries of
    500 spans (traces of 10 spans): spans/s until every entry is stored and
    acknowledged, and until every trace is finalized, with the collector
    process's CPU time per span over that run (all threads, from /proc);
(b) a bare XREADGROUP + decode + XACK loop over the same entries (no storage):
    the ceiling a collector is compared with, as a ratio of spans/s and as a
    ratio of CPU per span (the loop's CPU time against the collector's, which
    other load on the machine disturbs far less than wall time);
(c) the finalizer alone, in this process: the same spans stored into a
    fresh SQLite database, then ``finalize_ready`` called until nothing is
    pending: traces/s and spans/s of assembly, search rows, span columns,
    trace statistics and dependency edges;
(d) 1, 2 and 4 collector processes (``--processes N``) on a fresh PostgreSQL
    database each: spans/s until every entry is stored and acknowledged
    (``--pg-processes 0`` skips these runs);
(e) with ``--backlog N``: N spans published before one collector (SQLite)
    starts, drained until every trace is finalized: the collector's peak
    resident memory (VmHWM) and CPU per span.

Collectors are started first and publishing starts once they have joined the
group, so process start-up is not counted. Completion is read from Redis
(nothing pending, last entry delivered), which costs the database nothing.
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

import redis  # noqa: E402
from sqlalchemy import create_engine, func, select  # noqa: E402

from collector_worker import finalizer  # noqa: E402
from collector_worker.storage import block_store, open_engine, schema  # noqa: E402
from collector_worker.storage.writer import store_spans  # noqa: E402
from tests.support.servers import (  # noqa: E402
    RedisServer,
    create_postgres_database,
    postgres_unavailable_reason,
    stop_process,
    wait_until,
)
from tracer.codec import decode_entry, encode_span_dicts  # noqa: E402
from tracer.redis_client import connect  # noqa: E402
from tracer.reporting import reports_key  # noqa: E402
from collector_worker.settings import CollectorSettings  # noqa: E402

STREAM, GROUP = "contrail:spans", "contrail-collectors"
SPANS_PER_ENTRY = 500
SPANS_PER_TRACE = 10
SERVICES = ("gateway", "orders", "payments", "inventory", "llm-agent")


def service_and_attributes(i: int) -> tuple[str, dict]:
    """The service and attributes of a benchmark trace's ``i``-th span (an LLM call on ``llm-agent``)."""
    service = SERVICES[0] if i == 0 else SERVICES[1 + i % (len(SERVICES) - 1)]
    attributes = {"http.request.method": "GET", "http.route": f"/api/v1/items/{i % 7}",
                  "http.response.status_code": 200, "net.peer.name": "10.0.0.7"}
    if service == "llm-agent":
        attributes.update({"gen_ai.request.model": "gpt-4o-mini", "gen_ai.usage.input_tokens": 120,
                           "gen_ai.usage.output_tokens": 40})
    return service, attributes


def benchmark_span(trace_id: str, ids: list[str], i: int, t: int, start: int) -> dict:
    """Span ``i`` of the ``t``-th benchmark trace (span ids ``ids``, starting at ``start``): an HTTP root,
    client calls, internal steps and an LLM call over five services, a tree three children wide."""
    service, attributes = service_and_attributes(i)
    return {
        "trace_id": trace_id, "span_id": ids[i], "parent_span_id": None if i == 0 else ids[(i - 1) // 3],
        "name": "GET /api/v1/items" if i == 0 else f"step-{i % 6}",
        "kind": "server" if i == 0 else ("client" if i % 3 == 1 else "internal"),
        "start_ns": start + i * 100_000, "end_ns": start + i * 100_000 + (len(ids) - i) * 200_000,
        "status_code": "error" if (t + i) % 97 == 0 else "ok", "service": service,
        "resource": {"service.version": "1.4.2", "host.name": f"host-{i % 3}"},
        "attributes": attributes,
        "events": [{"name": "cache.miss", "time_ns": start + i * 100_000 + 10, "attributes": {}}]
        if i % 4 == 0 else [],
        "links": [],
    }


def make_entries(total_spans: int) -> list[dict[bytes, bytes]]:
    """Encoded stream entries of realistic traces (HTTP root, client calls, a DB call, an LLM call)."""
    now = time.time_ns()
    entries, batch = [], []
    for t in range(total_spans // SPANS_PER_TRACE):
        trace_id = os.urandom(16).hex()
        ids = [os.urandom(8).hex() for _ in range(SPANS_PER_TRACE)]
        start = now - 5_000_000_000 + t * 1000
        for i in range(SPANS_PER_TRACE):
            batch.append(benchmark_span(trace_id, ids, i, t, start))
            if len(batch) == SPANS_PER_ENTRY:
                entries.append(encode_span_dicts(batch))
                batch = []
    if batch:
        entries.append(encode_span_dicts(batch))
    return entries


def publish(client: redis.Redis, entries) -> str:
    pipe = client.pipeline(transaction=False)
    for entry in entries:
        pipe.xadd(STREAM, entry)
    return pipe.execute()[-1].decode()


def all_acknowledged(client: redis.Redis, last_id: str) -> bool:
    for group in client.xinfo_groups(STREAM):
        if group["name"].decode() == GROUP:
            return group["pending"] == 0 and group["last-delivered-id"].decode() == last_id
    return False


def bare_loop(client: redis.Redis, entries, total_spans: int) -> tuple[float, float]:
    """XREADGROUP + decode + XACK with nothing stored; spans/s and this process's CPU µs per span."""
    client.flushall()
    client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    publish(client, entries)
    spans = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    while spans < total_spans:
        reply = client.xreadgroup(GROUP, "bare", {STREAM: ">"}, count=64, block=100)
        ids = []
        for _, items in reply or ():
            for entry_id, fields in items:
                spans += len(decode_entry(fields).spans)
                ids.append(entry_id)
        if ids:
            client.xack(STREAM, GROUP, *ids)
    return total_spans / (time.perf_counter() - start), (time.process_time() - cpu_start) / total_spans * 1e6


def store_all(engine, spans: list[dict], now_ns: int) -> None:
    """Store ``spans`` in batches of 10 entries, as a consumer does."""
    for i in range(0, len(spans), SPANS_PER_ENTRY * 10):
        with engine.begin() as conn:
            finalizer.on_spans_stored(conn, store_spans(conn, spans[i:i + SPANS_PER_ENTRY * 10], now_ns))


def finalize_all(engine, now_ns: int) -> int:
    """Run ``finalize_ready`` past every trace's quiet period until none is pending; the traces finalized."""
    settings = CollectorSettings(quiet_period=1.0)
    traces = 0
    while True:
        done = finalizer.finalize_ready(engine, settings, "bench", now_ns=now_ns + 2_000_000_000)
        if not done:
            return traces
        traces += done


def finalizer_alone(entries, total_spans: int, database_url: str) -> dict:
    """Store every span (untimed), then time ``finalize_ready`` until no trace is pending."""
    spans = [span for entry in entries for span in decode_entry(entry).spans]
    engine = open_engine(database_url)
    now = time.time_ns()
    try:
        store_all(engine, spans, now)
        start = time.perf_counter()
        traces = finalize_all(engine, now)
        seconds = time.perf_counter() - start
    finally:
        engine.dispose()
    if traces != total_spans // SPANS_PER_TRACE:
        raise RuntimeError(f"finalized {traces} traces, expected {total_spans // SPANS_PER_TRACE}")
    return {"traces": traces, "seconds": round(seconds, 3), "traces_per_second": round(traces / seconds),
            "spans_per_second": round(total_spans / seconds), "traces_per_call": finalizer.MAX_TRACES_PER_CALL}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb(pid: int) -> float | None:
    """A process's peak resident memory so far in MB (Linux /proc VmHWM), or None elsewhere."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def recent_span_counters(client: redis.Redis, wait: float = 5.0) -> dict | None:
    """The collector's recent-span cache counters from its first report written after this call (one a
    second): traces finalized from memory alone, and traces that needed spans read back from staging."""
    asked_ns, deadline = time.time_ns(), time.monotonic() + wait
    while time.monotonic() < deadline:
        reports = [json.loads(value) for value in client.hvals(reports_key(STREAM, "collectors"))]
        if reports and reports[0].get("time_ns", 0) > asked_ns:
            return {name: reports[0].get(name) for name in
                    ("recent_spans_hits", "recent_spans_misses", "recent_spans_forgotten")}
        time.sleep(0.2)
    return None


def run_collectors(redis_url: str, database_url: str, entries, total_spans: int, processes: int,
                   log_path: Path, wait_finalized: bool, backlog: bool = False) -> dict:
    """Start ``processes`` collectors, publish, time until all is stored (and finalized).

    ``backlog``: publish everything first, then start the collectors (a drained backlog).
    """
    client = connect(redis_url)
    client.flushall()
    if backlog:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
        last_id = publish(client, entries)
    env = dict(os.environ, CONTRAIL_QUIET_PERIOD="1s", CONTRAIL_BLOCK="200ms", CONTRAIL_REPORT_INTERVAL="1s",
               PYTHONPATH=str(ROOT))
    env.pop("CONTRAIL_CONSUMER_NAME", None)
    with open(log_path, "wb") as log:
        collector = subprocess.Popen(
            [sys.executable, "-m", "collector_worker", "--redis-url", redis_url, "--database-url", database_url,
             "--processes", str(processes), "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        def joined():
            try:
                return len(client.xinfo_consumers(STREAM, GROUP)) >= processes
            except redis.ResponseError:
                return False

        wait_until(joined, timeout=120, interval=0.1, message=f"{processes} collectors in the group")
        cpu_start = cpu_seconds(collector.pid) if processes == 1 else None
        start = time.perf_counter()
        if not backlog:
            last_id = publish(client, entries)
        wait_until(lambda: all_acknowledged(client, last_id), timeout=1800, interval=0.05,
                   message="every entry stored and acknowledged")
        ingest_seconds = time.perf_counter() - start
        engine = create_engine(database_url)
        finalize_seconds = None
        if wait_finalized:
            def finalized():
                with engine.connect() as conn:
                    return conn.execute(select(func.count()).select_from(schema.pending_traces)).scalar_one() == 0

            wait_until(finalized, timeout=1800, interval=0.25, message="every trace finalized")
            finalize_seconds = time.perf_counter() - start
        cpu_end = cpu_seconds(collector.pid) if cpu_start is not None else None
        peak_mb = peak_rss_mb(collector.pid) if processes == 1 else None
        recent = recent_span_counters(client) if processes == 1 else None
        with engine.connect() as conn:
            stored = len(block_store.all_spans(conn))
            traces = conn.execute(select(func.count()).select_from(schema.traces)).scalar_one()
        engine.dispose()
        if stored != total_spans:
            raise RuntimeError(f"stored {stored} spans, published {total_spans}")
        return {"processes": processes, "spans": total_spans, "ingest_seconds": round(ingest_seconds, 3),
                "spans_per_second": round(total_spans / ingest_seconds),
                "finalized_seconds": round(finalize_seconds, 3) if finalize_seconds else None,
                "spans_per_second_incl_finalize": round(total_spans / finalize_seconds) if finalize_seconds else None,
                "traces_finalized": traces, "peak_rss_mb": peak_mb, "recent_spans": recent,
                # CPU time of the collector process per span from publishing to the end of the run (all its
                # threads; SQLite's work included): less sensitive than spans/s to other load on the machine.
                "cpu_us_per_span": round((cpu_end - cpu_start) / total_spans * 1e6, 1)
                if cpu_start is not None and cpu_end is not None else None}
    finally:
        stop_process(collector, 60, 10)
        client.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000, help="spans for the SQLite and bare-loop runs")
    parser.add_argument("--pg-spans", type=int, default=100_000, help="spans per PostgreSQL run")
    parser.add_argument("--backlog", type=int, default=0,
                        help="also drain a backlog of this many spans published before the collector starts")
    parser.add_argument("--pg-processes", default="1,2,4", help="comma-separated process counts; 0 skips PostgreSQL")
    args = parser.parse_args(argv)

    server = RedisServer.launch()
    workdir = Path(tempfile.mkdtemp(prefix="contrail-bench-"))
    results: dict = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                                 "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()},
                     "spans_per_entry": SPANS_PER_ENTRY, "spans_per_trace": SPANS_PER_TRACE}
    try:
        entries = make_entries(args.spans)
        client = server.client()
        bare, bare_cpu = bare_loop(client, entries, args.spans)
        sqlite_run = run_collectors(server.url, f"sqlite:///{workdir / 'bench.db'}", entries, args.spans, 1,
                                    workdir / "sqlite.log", wait_finalized=True)
        results["bare_loop_spans_per_second"] = round(bare)
        # CPU per span of the bare loop (this process) against the collector's (all its threads): the same
        # comparison, far less sensitive than spans/s to other load on the machine.
        results["bare_loop_cpu_us_per_span"] = round(bare_cpu, 1)
        results["sqlite"] = sqlite_run
        results["sqlite_vs_bare_ratio"] = round(sqlite_run["spans_per_second"] / bare, 3)
        results["sqlite_finalized_vs_bare_ratio"] = round(sqlite_run["spans_per_second_incl_finalize"] / bare, 3)
        if sqlite_run["cpu_us_per_span"]:
            results["sqlite_finalized_vs_bare_cpu_ratio"] = round(bare_cpu / sqlite_run["cpu_us_per_span"], 3)
        alone = finalizer_alone(entries, args.spans, f"sqlite:///{workdir / 'finalizer.db'}")
        results["finalizer_alone_sqlite"] = alone
        if args.backlog:
            drained = run_collectors(server.url, f"sqlite:///{workdir / 'backlog.db'}", make_entries(args.backlog),
                                     args.backlog, 1, workdir / "backlog.log", wait_finalized=True, backlog=True)
            results["sqlite_backlog"] = drained

        rows = [("bare XREADGROUP+decode+XACK", f"{bare:,.0f}", "1.000"),
                ("1 collector, SQLite, stored and acknowledged", f"{sqlite_run['spans_per_second']:,}",
                 f"{results['sqlite_vs_bare_ratio']:.3f}"),
                ("1 collector, SQLite, stored AND finalized", f"{sqlite_run['spans_per_second_incl_finalize']:,}",
                 f"{results['sqlite_finalized_vs_bare_ratio']:.3f}"),
                (f"  (collector CPU {sqlite_run['cpu_us_per_span']} us/span, all threads; bare loop "
                 f"{results['bare_loop_cpu_us_per_span']} us/span)", "",
                 f"{results.get('sqlite_finalized_vs_bare_cpu_ratio', 0):.3f}"),
                (f"finalizer alone, SQLite ({alone['traces_per_second']:,} traces/s)",
                 f"{alone['spans_per_second']:,}", f"{alone['spans_per_second'] / bare:.3f}")]
        if args.backlog:
            rows.append((f"backlog of {args.backlog:,} spans drained, stored AND finalized "
                         f"(peak RSS {drained['peak_rss_mb']} MB, CPU {drained['cpu_us_per_span']} us/span)",
                         f"{drained['spans_per_second_incl_finalize']:,}",
                         f"{drained['spans_per_second_incl_finalize'] / bare:.3f}"))

        reason = postgres_unavailable_reason()
        if args.pg_processes.strip() in ("", "0"):
            results["postgres"] = {"skipped": "--pg-processes 0"}
        elif reason:
            results["postgres"] = {"skipped": reason}
            print(f"PostgreSQL runs skipped: {reason}")
        else:
            pg_entries = make_entries(args.pg_spans)
            pg_runs = []
            for processes in (int(p) for p in args.pg_processes.split(",")):
                url, drop = create_postgres_database("contrail_bench")
                try:
                    pg_runs.append(run_collectors(server.url, url, pg_entries, args.pg_spans, processes,
                                                  workdir / f"pg-{processes}.log", wait_finalized=False))
                finally:
                    drop()
            base = pg_runs[0]["spans_per_second"]
            for run in pg_runs:
                run["scaling_vs_1"] = round(run["spans_per_second"] / base, 3)
                rows.append((f"{run['processes']} collector(s), PostgreSQL", f"{run['spans_per_second']:,}",
                             f"x{run['scaling_vs_1']:.2f} vs 1"))
            results["postgres"] = pg_runs
        client.close()
    finally:
        server.destroy()
        shutil.rmtree(workdir, ignore_errors=True)

    width = max(len(r[0]) for r in rows)
    print(f"{'run':<{width}}  {'spans/s':>10}  ratio")
    for name, rate, ratio in rows:
        print(f"{name:<{width}}  {rate:>10}  {ratio}")
    out = ROOT / "bench" / "results" / "collector.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
