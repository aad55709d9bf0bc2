"""What Contrail's Celery handlers cost per task, in one process, without brokers or scheduling noise.

Run ``python bench/bench_celery_inprocess.py [blocks]`` (default 40). Prints
the figures and writes ``bench/results/celery_inprocess.json``.

``bench_celery.py`` measures the budget itself (a real round trip through
Redis and a worker), but on a shared two-core machine its noise is several
per cent, more than a change to the handlers moves it. This benchmark isolates
the part Contrail owns, with the same Celery code paths:

* publish: ``add.apply_async()`` on Celery's in-memory transport, which fires
  ``before_task_publish`` / ``after_task_publish`` exactly as with Redis;
* run: Celery's own task tracer (``celery.app.trace.build_tracer``, what a
  worker calls for each message) on a request carrying the headers a traced
  publish wrote, which fires ``task_prerun`` / ``task_postrun`` and stores
  the result (in-memory cache backend).

Traced and untraced blocks of 150 alternate (handlers connected or not, same
process, same app); the figure per side is the minimum over blocks (the run
least disturbed by the rest of the machine) and the median beside it. Spans
are really exported to a private Redis by the export thread while measuring;
its CPU is measured too (scheduler's account, per traced task).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.servers import RedisServer  # noqa: E402

BLOCK = 150


def thread_cpu_ns(tid: int) -> int:
    try:
        with open(f"/proc/{os.getpid()}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def main(blocks: int = 40) -> dict:
    server = RedisServer.launch()
    os.environ["CONTRAIL_REDIS_URL"] = f"redis://127.0.0.1:{server.port}/3"
    os.environ["CONTRAIL_DATA_DIR"] = tempfile.mkdtemp(prefix="contrail-bench-inprocess-")
    try:
        from celery import Celery, signals
        from celery.app.trace import build_tracer

        from tracer.celery import instrument_celery, uninstrument_celery
        from tracer.manager import TracingManager

        app = Celery("bench_inprocess", broker="memory://", backend="cache+memory://")

        @app.task
        def add(x, y):
            return x + y

        manager = TracingManager(service_name="bench-inprocess")
        headers: dict = {}  # what a traced publish really sends

        def capture(**kwargs) -> None:
            headers.update(kwargs.get("headers") or {})

        instrument_celery(manager, app)
        signals.after_task_publish.connect(capture, weak=False)
        add.apply_async((1, 2))
        signals.after_task_publish.disconnect(capture)
        assert "traceparent" in headers, "the traced publish wrote no traceparent"
        run_task = build_tracer(add.name, add, app=app)
        delivery = {"exchange": "", "routing_key": "celery", "priority": 0, "redelivered": False}

        def publish(n: int) -> float:
            start = time.perf_counter()
            for i in range(n):
                add.apply_async((i, 1))
            return (time.perf_counter() - start) / n

        def run(n: int) -> float:
            start = time.perf_counter()
            for i in range(n):
                task_id = uuid.uuid4().hex
                run_task(task_id, (i, 1), {}, {**headers, "id": task_id, "root_id": task_id,
                                               "delivery_info": delivery, "hostname": "bench@host"})
            return (time.perf_counter() - start) / n

        def purge() -> None:
            with app.connection_for_write() as conn:
                conn.default_channel.queue_purge("celery")

        samples: dict[str, dict[str, list[float]]] = {s: {"publish": [], "run": []} for s in ("traced", "untraced")}
        for _ in range(3):  # warm both paths
            for traced in (False, True):
                if traced:
                    instrument_celery(manager, app)
                else:
                    uninstrument_celery(manager)
                publish(BLOCK)
                run(BLOCK)
        purge()
        manager.flush(10)
        export_tid = manager._processor._thread.native_id
        export0 = thread_cpu_ns(export_tid)
        for b in range(blocks):
            order = (False, True) if b % 2 == 0 else (True, False)
            for traced in order:
                side = "traced" if traced else "untraced"
                if traced:
                    instrument_celery(manager, app)
                else:
                    uninstrument_celery(manager)
                samples[side]["publish"].append(publish(BLOCK))
                samples[side]["run"].append(run(BLOCK))
            purge()
        manager.flush(10)
        export_ns = thread_cpu_ns(export_tid) - export0
        exported = manager.get_tracer_info()
        manager.shutdown()
    finally:
        server.destroy()

    def us(values: list[float], how) -> float:
        return how(values) * 1e6

    result: dict = {"block": BLOCK, "blocks_each": blocks, "tasks_each": blocks * BLOCK}
    for part in ("publish", "run"):
        for how, label in ((min, "min"), (statistics.median, "median")):
            t, u = us(samples["traced"][part], how), us(samples["untraced"][part], how)
            result[f"{part}_{label}_us"] = {"untraced": u, "traced": t, "added": t - u}
        # each traced block against the untraced block run next to it: robust to the machine's load drifting
        diffs = [t - u for t, u in zip(samples["traced"][part], samples["untraced"][part])]
        result[f"{part}_paired_added_us"] = {"median": statistics.median(diffs) * 1e6,
                                              "p25": sorted(diffs)[len(diffs) // 4] * 1e6,
                                              "p75": sorted(diffs)[(3 * len(diffs)) // 4] * 1e6}
    traced_tasks = blocks * BLOCK
    result["export_thread_us_per_task"] = export_ns / traced_tasks / 1e3  # two spans per task
    result["added_per_task_us"] = {
        "publish_handlers": result["publish_min_us"]["added"],
        "run_handlers": result["run_min_us"]["added"],
        "export_thread": result["export_thread_us_per_task"],
    }
    result["added_per_task_us"]["total"] = sum(result["added_per_task_us"].values())
    result["spans_exported"] = exported["spans_exported"]
    result["load_average"] = os.getloadavg()
    result["machine"] = {"python": platform.python_version(), "platform": platform.platform(),
                         "cpus": os.cpu_count()}
    out = ROOT / "bench" / "results" / "celery_inprocess.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for part in ("publish", "run"):
        m, md = result[f"{part}_min_us"], result[f"{part}_median_us"]
        pd = result[f"{part}_paired_added_us"]
        print(f"{part}: untraced {m['untraced']:.1f} us, traced {m['traced']:.1f} us, added {m['added']:+.1f} us "
              f"(min of {blocks} blocks; medians: added {md['added']:+.1f} us; paired blocks: median "
              f"{pd['median']:+.1f} us, p25 {pd['p25']:+.1f}, p75 {pd['p75']:+.1f})")
    print(f"export thread: {result['export_thread_us_per_task']:.1f} us per traced task (two spans)")
    print(f"tracing cost per task: {result['added_per_task_us']['total']:.1f} us; written {out}")
    return result


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 40)
