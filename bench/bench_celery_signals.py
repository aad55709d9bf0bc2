"""Where a traced Celery round trip's extra time goes: Celery's signal dispatch and Contrail's handlers.

Run ``python bench/bench_celery_signals.py [round_trips]`` (default 3000).
Prints the figures and writes ``bench/results/celery_signals.json``.

``bench_celery.py`` measures the budget (traced against untraced round trips);
this one explains it. One solo worker with Contrail's handlers, on a private
Redis, serves ``add.delay(...).get()`` round trips from this process, which
has the handlers too. In both processes every ``Signal.send`` of Celery and
each of Contrail's four hot handlers is timed where it runs, inside the round
trips (see ``signal_timing.py``): the dispatch of a signal is its ``send``
minus the handler it called. The sum of the medians, against the round trip's
median, is the share of the round trip that tracing's signals take.
"""

from __future__ import annotations

import importlib
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

from bench import signal_timing  # noqa: E402
from bench.bench_celery import worker_env  # noqa: E402
from tests.celery.helpers import Worker  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402

PAIRS = (("before_task_publish", "on_before_task_publish", "client"),
         ("after_task_publish", "on_after_task_publish", "client"),
         ("task_prerun", "on_task_prerun", "worker"),
         ("task_postrun", "on_task_postrun", "worker"))


def main(round_trips: int = 3000) -> dict:
    server = RedisServer.launch()
    data_dir = tempfile.mkdtemp(prefix="contrail-bench-signals-")
    env = {**worker_env(server, data_dir), "CONTRAIL_TEST_SIGNAL_TIMING": "1"}
    worker = Worker(env, "signals", pool="solo", concurrency=1, log_dir=Path(data_dir))
    try:
        worker.start()
        signal_timing.install()  # in this process too, before the app connects the handlers
        os.environ.update({**env, "CONTRAIL_SERVICE_NAME": "bench-client"})
        tasks = importlib.import_module("tests.celery.apps.tasks")
        for i in range(200):  # warm up: connections, imports, first spans
            tasks.add.apply_async((i, 1), queue="signals").get(timeout=30)
        signal_timing.summary()
        tasks.app.control.broadcast("contrail_signal_timing", reply=True, timeout=10)
        times = []
        for i in range(round_trips):
            start = time.perf_counter()
            tasks.add.apply_async((i, 1), queue="signals").get(timeout=30)
            times.append(time.perf_counter() - start)
        client = signal_timing.summary()
        replies = tasks.app.control.broadcast("contrail_signal_timing", reply=True, timeout=10, limit=1)
        if len(replies) != 1:
            raise SystemExit(f"no timing figures from the worker: {replies}")
        worker_figures = next(iter(replies[0].values()))
        tasks.tracing.flush(10)
    finally:
        worker.stop()
        server.destroy()

    round_trip_us = statistics.median(times) * 1e6
    sides = {"client": client, "worker": worker_figures}
    rows, total = {}, {"dispatch_us": 0.0, "handler_us": 0.0}
    for signal, handler, side in PAIRS:
        send, own = sides[side].get("send " + signal), sides[side].get(handler)
        if not send or not own or send["n"] != round_trips or own["n"] != round_trips:
            raise SystemExit(f"{signal} was not timed on every round trip ({side}: {send}, {own})")
        row = {"where": side, "send_p50_us": send["p50_us"], "handler_p50_us": own["p50_us"],
               "dispatch_p50_us": send["p50_us"] - own["p50_us"], "handler_p90_us": own["p90_us"]}
        rows[signal] = row
        total["dispatch_us"] += row["dispatch_p50_us"]
        total["handler_us"] += row["handler_p50_us"]
    total["signals_us"] = total["dispatch_us"] + total["handler_us"]
    result = {
        "round_trips": round_trips,
        "round_trip_median_us": round_trip_us,
        "signals": rows,
        "total": total,
        "share_of_round_trip_pct": {k.replace("_us", ""): v / round_trip_us * 100 for k, v in total.items()},
        "load_average": os.getloadavg(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()},
    }
    out = ROOT / "bench" / "results" / "celery_signals.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"traced round trip: median {round_trip_us:.0f} us over {round_trips}")
    for signal, row in rows.items():
        print(f"  {signal:<20} ({row['where']}): send {row['send_p50_us']:6.1f} us = dispatch "
              f"{row['dispatch_p50_us']:5.1f} + handler {row['handler_p50_us']:5.1f} (handler p90 "
              f"{row['handler_p90_us']:.1f})")
    share = result["share_of_round_trip_pct"]
    print(f"four signals: {total['signals_us']:.0f} us per round trip ({share['signals']:.1f} %): Celery's dispatch "
          f"{total['dispatch_us']:.0f} us ({share['dispatch']:.1f} %), Contrail's handlers {total['handler_us']:.0f} us "
          f"({share['handler']:.1f} %); written {out}")
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
