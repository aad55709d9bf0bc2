"""API benchmark with one million stored spans.

Seeds 100k traces x 10 spans (plus one 10k-span trace) into SQLite through
the real write path (``store_spans``, then ``finalize_ready``), then measures
through the Flask app (routing, validation, query, JSON):

* trace search p95 over a mix of filters (budget: < 100 ms),
* fetching the 10k-span trace (budget: < 1 s; and against json.dumps of the response body),
* the latency heat map over 24 h, whole and per service / operation, and a live-tail poll
  (the same budget as search: p95 < 100 ms),
* OTLP receiver spans/s (protobuf, 512 spans per request) into a real Redis,
  against bare XADDs of the same spans already encoded (ratio).

``--days N`` spreads the traces' start times over the last N days instead of the last hour; on SQLite
the closed days are then sealed into period files (storage/periods.py) before measuring, so search reads
the main file and N period files, as a week's retention does.

``--postgres`` seeds and searches a PostgreSQL database of its own instead of SQLite.

Usage: python bench/bench_api.py [--traces 100000] [--days 1] [--postgres] [--out bench/results/api.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVICES = ["gateway", "orders", "billing", "inventory", "search", "llm", "auth", "mailer"]
OPERATIONS = ["GET /items", "POST /orders", "charge", "reserve", "query", "chat", "login", "send"]
SECOND = 1_000_000_000


def seed(database_url: str, traces: int, big_trace_spans: int, days: int = 1) -> dict:
    """Store the spans through the real write path (``store_spans``) and finalize every trace."""
    from collector_worker import finalizer
    from collector_worker.finalizer import on_spans_stored
    from collector_worker.storage import open_engine
    from collector_worker.storage.writer import store_spans
    from collector_worker.settings import CollectorSettings

    engine = open_engine(database_url)
    rng = random.Random(7)
    now = time.time_ns()
    span_ns = 3600 * SECOND if days <= 1 else days * 86400 * SECOND
    start0 = now - span_ns
    started = time.perf_counter()
    chunk: list[dict] = []

    def flush():
        with engine.begin() as conn:
            on_spans_stored(conn, store_spans(conn, chunk, now))  # span statistics, as the consumer writes them
        chunk.clear()

    def add_trace(trace_id: str, n: int, t0: int) -> None:
        root_service = SERVICES[rng.randrange(3)]
        root_id = os.urandom(8).hex()
        total = rng.randint(5, 3000) * 1_000_000
        ids = [root_id]
        for i in range(n):
            span_id = root_id if i == 0 else os.urandom(8).hex()
            parent = None if i == 0 else ids[rng.randrange(len(ids))]
            ids.append(span_id)
            service = root_service if i == 0 else rng.choice(SERVICES)
            name = OPERATIONS[SERVICES.index(service)] if i else "GET /items"
            s = t0 if i == 0 else t0 + rng.randrange(total // 2)
            dur = total if i == 0 else rng.randrange(1, max(2, (t0 + total - s)))
            error = i > 0 and rng.random() < 0.02
            chunk.append({"trace_id": trace_id, "span_id": span_id, "parent_span_id": parent, "service": service,
                          "name": name, "kind": "server" if i == 0 else "internal", "start_ns": s,
                          "end_ns": s + dur, "status_code": "error" if error else "unset",
                          "attributes": {"http.status_code": 500 if error else 200,
                                         "user.id": f"u{rng.randrange(1000)}"},
                          "events": [], "links": [], "resource": {"service.name": service}})

    for i in range(traces):
        add_trace(os.urandom(16).hex(), 10, start0 + i * (span_ns // traces))
        if len(chunk) >= 50_000:
            flush()
    big_id = os.urandom(16).hex()
    add_trace(big_id, big_trace_spans, now - 1800 * SECOND)
    flush()
    stored_s = time.perf_counter() - started
    settings = CollectorSettings(quiet_period=1.0)
    while finalizer.finalize_ready(engine, settings, "bench", now_ns=now + 10 * SECOND):
        pass
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return {"big_trace_id": big_id, "now": now, "end_ns": now + 10 * SECOND, "seconds": round(time.perf_counter() - started, 1),
            "stored_seconds": round(stored_s, 1), "spans": traces * 10 + big_trace_spans}


def reseeded(database_url: str) -> dict:
    """What :func:`seed` answered, read back from a database it seeded before (``--reuse``)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    with engine.connect() as conn:
        big_id, spans, finalized = conn.execute(text(
            "SELECT trace_id, (SELECT SUM(span_count) FROM traces), finalized_ns FROM traces "
            "ORDER BY span_count DESC LIMIT 1")).one()
    engine.dispose()
    return {"big_trace_id": big_id, "now": int(finalized), "end_ns": int(finalized), "seconds": 0.0, "stored_seconds": 0.0,
            "spans": int(spans), "reused": True}


def seal_closed_days(engine, now: int) -> dict:
    """Seal every closed day into its period file and purge the main file's copies (retention passes, run
    with the clock moved on by the purge delay each time)."""
    from collector_worker.storage import periods

    week = 7 * 86400 * SECOND
    totals = {"sealed_traces": 0, "purged_traces": 0, "passes": 0}
    started = time.perf_counter()
    while True:
        now += periods.PURGE_DELAY_NS
        done = periods.seal(engine, now, week)
        totals["passes"] += 1
        totals["sealed_traces"] += done["sealed_traces"]
        totals["purged_traces"] += done["purged_traces"]
        if not done["sealed_traces"] and not done["purged_traces"]:
            break
    totals["seconds"] = round(time.perf_counter() - started, 1)
    totals["period_files"] = len(periods.file_sizes(engine))
    return totals


def search_before_and_after_sealing(client, url: str, now: int, args) -> dict:
    """Search timings; with ``--days`` on SQLite, first with every day in the main file, then with the closed
    days sealed into period files, the two measured back to back (the layout's cost against the same load)."""
    if args.days <= 1 or args.postgres:
        return {"search": bench_search(client, args.rounds)}
    from collector_worker.storage import open_engine

    unsealed = bench_search(client, args.rounds)
    engine = open_engine(url)
    try:
        sealed = seal_closed_days(engine, now)
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return {"search_all_days_in_the_main_file": unsealed, "sealed": sealed, "search": bench_search(client, args.rounds)}


def p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def bench_search(client, rounds: int) -> dict:
    mix = ["", "service=billing", "service=orders&operation=POST%20/orders", "tag=user.id=u42",
           "tag=http.status_code>499", "status=error", "min_duration=2s", "lookback=15m", "sort=duration_desc",
           "services=llm,auth", "service=gateway&min_duration=1s&sort=duration_asc", "limit=100"]
    timings: dict[str, list[float]] = {q: [] for q in mix}
    for _ in range(rounds):
        for q in mix:
            t = time.perf_counter()
            response = client.get("/api/v1/traces?" + q)
            timings[q].append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200, response.get_json()
    everything = [v for vs in timings.values() for v in vs]
    return {"queries": len(everything), "p50_ms": round(p(everything, 0.5), 2),
            "p95_ms": round(p(everything, 0.95), 2), "max_ms": round(max(everything), 2),
            "per_filter_p95_ms": {q or "(none)": round(p(v, 0.95), 2) for q, v in timings.items()}}


def bench_heatmap(client, rounds: int, end_ns: int) -> dict:
    """The heat map over 24 h (the search page's and a per-operation one) and a live-tail poll, p95 each.

    Windows end at ``end_ns``, when the seeding finished (so a ``--reuse`` run reads the same data); the
    live tail looks back as far as its default window (5 minutes) before the seeding ended.
    """
    end = f"&end={end_ns}"
    window = f"window={max(300, int((time.time_ns() - end_ns) / 1e9) + 300)}s"
    mix = {"heatmap 24h": "/api/v1/stats/heatmap?lookback=24h" + end,
           "heatmap 24h service": "/api/v1/stats/heatmap?lookback=24h&service=gateway" + end,
           "heatmap 24h span operation": "/api/v1/stats/heatmap?lookback=24h&scope=span&service=billing&operation=charge" + end,
           "heatmap 24h 15m steps": "/api/v1/stats/heatmap?lookback=24h&step=15m" + end,
           "heatmap 1h (search page default)": "/api/v1/stats/heatmap?lookback=1h" + end,
           "heatmap 7d": "/api/v1/stats/heatmap?lookback=7d" + end,
           "heatmap region traces": None,
           "tail first poll": "/api/v1/traces/tail?" + window,
           "tail poll with cursor": None,
           "tail poll service filter": f"/api/v1/traces/tail?service=billing&status=error&{window}"}
    heat = client.get(mix["heatmap 24h 15m steps"]).get_json()
    busiest = max(heat["cells"], key=lambda cell: cell[2])
    column = heat["columns"][busiest[0]]
    row = next(r for r in heat["rows"] if r["row"] == busiest[1])
    mix["heatmap region traces"] = (f"/api/v1/stats/heatmap/traces?start={column['start_ns']}&end={column['end_ns']}"
                                    f"&min_duration={row['min_ns']}ns&max_duration={row['max_ns']}ns&limit=100")
    cursor = client.get(mix["tail first poll"]).get_json()["cursor"]
    mix["tail poll with cursor"] = f"/api/v1/traces/tail?cursor={cursor}&{window}"
    timings: dict[str, list[float]] = {name: [] for name in mix}
    for _ in range(rounds):
        for name, url in mix.items():
            t = time.perf_counter()
            response = client.get(url)
            timings[name].append((time.perf_counter() - t) * 1000)
            assert response.status_code == 200, (url, response.get_json())
    return {"cells_24h": len(heat["cells"]), "columns_24h": len(heat["columns"]), "rows_24h": len(heat["rows"]),
            "traces_counted_24h": heat["count"],
            "p95_ms": {name: round(p(values, 0.95), 2) for name, values in timings.items()},
            "max_p95_ms": round(max(p(values, 0.95) for values in timings.values()), 2)}


def bench_big_trace(client, trace_id: str, rounds: int = 5) -> dict:
    """The trace through the API, against ``json.dumps`` of the same response body (median of ``rounds``)."""
    timings, dumps = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        response = client.get(f"/api/v1/traces/{trace_id}")
        timings.append((time.perf_counter() - t) * 1000)
        assert response.status_code == 200
        body = response.get_json()
        t = time.perf_counter()
        json.dumps(body)
        dumps.append((time.perf_counter() - t) * 1000)
    median, dumps_median = statistics.median(timings), statistics.median(dumps)
    return {"spans": len(body["spans"]), "median_ms": round(median, 1), "max_ms": round(max(timings), 1),
            "json_dumps_median_ms": round(dumps_median, 1), "ratio_vs_json_dumps": round(median / dumps_median, 2)}


def bench_otlp(client, redis_url: str, requests_n: int = 40) -> dict:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from tracer.codec import encode_span_dicts
    from tracer.redis_client import connect
    from web.otlp import convert_request

    message = ExportTraceServiceRequest()
    rs = message.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bench"
    ss = rs.scope_spans.add()
    trace_id = os.urandom(16)
    now = time.time_ns()
    for i in range(512):
        s = ss.spans.add()
        s.trace_id, s.span_id, s.name, s.kind = trace_id, (i + 1).to_bytes(8, "big"), f"op{i % 10}", 2
        s.start_time_unix_nano, s.end_time_unix_nano = now, now + 1000
        for key, value in (("http.method", "GET"), ("http.route", "/items/{id}"), ("user.id", f"u{i}")):
            a = s.attributes.add()
            a.key, a.value.string_value = key, value
        a = s.attributes.add()
        a.key, a.value.int_value = "http.status_code", 200
    body = message.SerializeToString()
    t = time.perf_counter()
    for _ in range(requests_n):
        response = client.post("/v1/traces", data=body, content_type="application/x-protobuf")
        assert response.status_code == 200
    receiver = requests_n * 512 / (time.perf_counter() - t)
    client_redis = connect(redis_url)
    spans = convert_request(message)[0]
    t = time.perf_counter()
    for _ in range(requests_n):  # baseline: the same spans, already converted, encoded and XADDed bare
        client_redis.xadd("bench:bare", encode_span_dicts(spans))
    bare = requests_n * 512 / (time.perf_counter() - t)
    return {"spans_per_s": round(receiver), "bare_encode_xadd_spans_per_s": round(bare),
            "ratio_vs_bare": round(receiver / bare, 3)}


def bench_baseline_query(database_url: str, rounds: int) -> dict:
    """Bare SQL for the newest 20 trace rows: the floor under any search."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    timings = []
    with engine.connect() as conn:
        for _ in range(rounds):
            t = time.perf_counter()
            conn.execute(text("SELECT * FROM traces ORDER BY start_ns DESC LIMIT 20")).all()
            timings.append((time.perf_counter() - t) * 1000)
    engine.dispose()
    return {"p95_ms": round(p(timings, 0.95), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=100_000)
    parser.add_argument("--big-trace-spans", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--days", type=int, default=1, help="spread the traces over this many days (sealed)")
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL (a database of its own) instead of SQLite")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api.json"))
    parser.add_argument("--reuse", metavar="PATH", help="SQLite file seeded by an earlier run (seeded here if missing, "
                        "kept afterwards): measure again without seeding again")
    args = parser.parse_args()

    from tests.support.servers import RedisServer
    from web import create_app

    drop = None
    with tempfile.TemporaryDirectory(prefix="contrail-bench-api-") as tmp:
        url = f"sqlite:///{args.reuse or tmp + '/bench.db'}"
        if args.postgres:
            from tests.support.servers import create_postgres_database

            url, drop = create_postgres_database("contrail_bench_api")
        if args.reuse and not args.postgres and Path(args.reuse).exists():
            seeded = reseeded(url)
        else:
            seeded = seed(url, args.traces, args.big_trace_spans, args.days)
        print(f"seeded {seeded['spans']} spans in {seeded['seconds']}s", flush=True)
        redis_server = RedisServer.launch()
        try:
            app = create_app({"DATABASE_URL": url, "REDIS_URL": redis_server.url})
            client = app.test_client()
            client.get("/api/v1/traces")  # open the engine outside the measurement
            results = {
                "machine": {"python": platform.python_version(), "platform": platform.platform(),
                            "cpus": os.cpu_count()},
                "database": "postgresql" if args.postgres else "sqlite",
                "stored_spans": seeded["spans"], "seed_seconds": seeded["seconds"], "days": args.days,

                **search_before_and_after_sealing(client, url, seeded["now"], args),
                "search_baseline_bare_sql": bench_baseline_query(url, args.rounds * 5),
                "heatmap_and_tail": bench_heatmap(client, args.rounds, seeded["end_ns"]),
                "big_trace": bench_big_trace(client, seeded["big_trace_id"]),
                "otlp": bench_otlp(client, redis_server.url),
            }
            app.extensions["contrail.resources"].close()
        finally:
            redis_server.destroy()
            if drop is not None:
                drop()
    results["budgets"] = {"search_p95_under_100ms": results["search"]["p95_ms"] < 100,
                          "big_trace_under_1s": results["big_trace"]["median_ms"] < 1000,
                          "heatmap_and_tail_p95_under_100ms": results["heatmap_and_tail"]["max_p95_ms"] < 100}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
