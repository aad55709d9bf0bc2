"""Celery benchmark: a traced task round trip against an untraced one, same worker, same run.

Run ``python bench/bench_celery.py [round_trips] [--runs N] [--aa] [--two-workers]``
(default 3000 each way, 5 runs). Prints the figures and writes
``bench/results/celery.json`` (``celery_two_workers.json`` with
``--two-workers``; ``_aa`` added with ``--aa``).

A run starts its own worker (on one private Redis); ``--runs`` repeats the
whole measurement with a fresh worker. On a shared machine the speed of
everything drifts from minute to minute (the untraced median moved between
2.5 and 5.2 ms from one run to the next on the development VM), so the result
pools the paired blocks of all runs and also lists each run's figure: the
budget is judged on the pooled median of paired blocks.

One solo-pool worker of the test app serves both sides (broker, results and
span stream on one private Redis). Its Contrail handlers are switched between
blocks by the ``contrail_tracing`` remote-control command the test app
defines, confirmed before the block starts. The client sends
``add.delay(...).get()`` round trips in alternating blocks of 25, connecting
Contrail's signal handlers in this process for the traced blocks and
disconnecting them for the untraced ones; the order of the two blocks
alternates too, so drift on the machine hits both sides alike. Both sides are
warmed up before measuring.

``--two-workers`` serves the untraced blocks from a second worker with
tracing switched off entirely (``CONTRAIL_ENABLED=0``: no handlers, no export
thread, the comparison with a worker that has no Contrail); two processes
differ by themselves, so its runs are noisier.

``--aa`` runs the same measurement with both sides untraced (no handlers in
the worker, none in the client; with ``--two-workers``, both workers with
``CONTRAIL_ENABLED=0``): the "overhead" it reports is the benchmark's own bias
and noise on the machine at that time.

Short blocks matter on a shared, loaded machine: load drifts on a scale of
seconds, and a block of 25 round trips lasts about 0.1 s.

The traced side really exports every span to the Redis stream while being
measured, on the export threads' own 0.5 s schedule (client and worker), as
in production. An export (and the span ends deferred to it) can therefore
land during an untraced block; that makes the untraced side slightly slower,
i.e. flatters the traced side, by at most the export threads' CPU time, which
is measured and reported (``tracing_cpu_per_round_trip_us``: 52 and 82 us per
traced round trip for the client's and the worker's export threads in the
committed set, about 2 % of a round trip between them, of which only the
part that runs during untraced blocks counts).

Besides wall time it reports CPU per round trip by thread, read from the
scheduler's own account (``/proc/<pid>/task/<tid>/schedstat``, nanoseconds,
not sampled ticks): the client's calling thread and the serving worker's main
thread per block, and the background (export) threads over the whole run,
charged to the traced round trips. ``tracing_cpu_per_round_trip_us`` is the
traced minus the untraced figures: where tracing's cost goes.
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

from tests.celery.helpers import Worker  # noqa: E402
from tests.support.servers import RedisServer  # noqa: E402
from tracer.celery import instrument_celery, uninstrument_celery  # noqa: E402

BLOCK = 25
BUDGET = 1.05


def thread_cpu_ns(pid: int, tid: int) -> int:
    """CPU time a thread has run, in ns (the scheduler's own account, not sampled ticks)."""
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def threads_cpu_ns(pid: int) -> tuple[int, int]:
    """(main thread, all other threads) CPU of a process, in ns."""
    main = other = 0
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return 0, 0
    for tid in tids:
        if tid == pid:
            main += thread_cpu_ns(pid, tid)
        else:
            other += thread_cpu_ns(pid, tid)
    return main, other


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def worker_env(server: RedisServer, data_dir: str) -> dict[str, str]:
    """A traced worker of the test app on ``server``: broker db 1, results db 2, span stream db 3."""
    base = f"redis://127.0.0.1:{server.port}"
    return {"CONTRAIL_TEST_BROKER_URL": f"{base}/1", "CONTRAIL_TEST_BACKEND_URL": f"{base}/2",
            "CONTRAIL_REDIS_URL": f"{base}/3", "CONTRAIL_DATA_DIR": data_dir, "PYTHONPATH": str(ROOT),
            "CONTRAIL_SERVICE_NAME": "bench-worker", "CONTRAIL_ENABLED": "1", "CONTRAIL_TEST_INSTRUMENT": "1"}


def run_once(server: RedisServer, round_trips: int, aa: bool, two_workers: bool = False) -> dict:
    """One measurement with its own workers: raw times, block medians, CPU and export figures."""
    data_dir = tempfile.mkdtemp(prefix="contrail-bench-celery-")
    env = worker_env(server, data_dir)
    # explicit: this process's own environment (a worker inherits it) is set up for the client below
    workers = []
    try:
        off = {**env, "CONTRAIL_TEST_INSTRUMENT": "0", "CONTRAIL_ENABLED": "0"}
        if two_workers:
            # --aa: both sides untraced; what it reports as overhead is the benchmark's own bias and noise
            workers.append(Worker(off if aa else env, "traced", pool="solo", concurrency=1,
                                  log_dir=Path(data_dir)).start())
            workers.append(Worker(off, "untraced", pool="solo", concurrency=1, log_dir=Path(data_dir)).start())
            queue = {"traced": "traced", "untraced": "untraced"}
            worker_pid = {"traced": workers[0].process.pid, "untraced": workers[1].process.pid}
        else:
            # one worker serves both sides; its handlers are switched between blocks (never with --aa)
            workers.append(Worker({**env, "CONTRAIL_TEST_INSTRUMENT": "0"} if aa else env, "bench", pool="solo",
                                  concurrency=1, log_dir=Path(data_dir)).start())
            queue = {"traced": "bench", "untraced": "bench"}
            worker_pid = {"traced": workers[0].process.pid, "untraced": workers[0].process.pid}
        os.environ.update({**env, "CONTRAIL_SERVICE_NAME": "bench-client", "CONTRAIL_TEST_INSTRUMENT": "0"})
        tasks = importlib.import_module("tests.celery.apps.tasks")
        manager = tasks.tracing
        times: dict[str, list[float]] = {"traced": [], "untraced": []}
        block_medians: dict[str, list[float]] = {"traced": [], "untraced": []}
        # CPU per side, in ns, summed over that side's blocks: the client's calling thread and the
        # main thread of the worker that served the block.
        cpu = {side: {"client_main": 0, "worker_main": 0} for side in times}
        worker_traced = [not aa]  # the single worker starts with its handlers connected (as deployed)

        def switch_worker(on: bool) -> None:
            """The single worker's handlers on or off, confirmed before the next task is sent."""
            if two_workers or aa or worker_traced[0] == on:
                return
            replies = tasks.app.control.broadcast("contrail_tracing", arguments={"on": int(on)}, reply=True,
                                                  timeout=10, limit=1)
            if len(replies) != 1 or next(iter(replies[0].values())).get("on") is not on:
                raise SystemExit(f"the worker did not switch its tracing {'on' if on else 'off'}: {replies}")
            worker_traced[0] = on

        def block(side: str, n: int) -> None:
            if side == "traced" and not aa:
                instrument_celery(manager, tasks.app)
            else:
                uninstrument_celery(manager)
            switch_worker(side == "traced")
            measured = []
            client0, worker0 = time.thread_time_ns(), thread_cpu_ns(worker_pid[side], worker_pid[side])
            for i in range(n):
                start = time.perf_counter()
                tasks.add.apply_async((i, 1), queue=queue[side]).get(timeout=30)
                measured.append(time.perf_counter() - start)
            cpu[side]["client_main"] += time.thread_time_ns() - client0
            cpu[side]["worker_main"] += thread_cpu_ns(worker_pid[side], worker_pid[side]) - worker0
            times[side].extend(measured)
            block_medians[side].append(statistics.median(measured))

        for _ in range(4):  # warm both paths (connections, imports, first spans) before measuring
            block("untraced", BLOCK)
            block("traced", BLOCK)
        times = {"traced": [], "untraced": []}
        block_medians = {"traced": [], "untraced": []}
        cpu = {side: {"client_main": 0, "worker_main": 0} for side in times}
        # Background threads (the export threads: the traced worker's, and the client's, which exports
        # the publish spans) are measured over the whole run; the untraced worker's should stay ~0.
        client_export = manager._processor._thread.native_id if manager._processor is not None else None
        export0 = {"client": thread_cpu_ns(os.getpid(), client_export) if client_export else 0,
                   "traced_worker": threads_cpu_ns(worker_pid["traced"])[1],
                   "untraced_worker": threads_cpu_ns(worker_pid["untraced"])[1] if two_workers else 0}
        done = 0
        while done < round_trips:
            n = min(BLOCK, round_trips - done)
            order = ("untraced", "traced") if (done // BLOCK) % 2 == 0 else ("traced", "untraced")
            for side in order:
                block(side, n)
            done += n
        export_ns = {"client": (thread_cpu_ns(os.getpid(), client_export) if client_export else 0) - export0["client"],
                     "traced_worker": threads_cpu_ns(worker_pid["traced"])[1] - export0["traced_worker"],
                     "untraced_worker": (threads_cpu_ns(worker_pid["untraced"])[1] if two_workers else 0)
                     - export0["untraced_worker"]}
        manager.flush(10)
        exported = manager.get_tracer_info()
    finally:
        for worker in workers:
            worker.stop()
        spans_in_stream = 0
        try:
            from tracer.redis_client import connect

            client = connect(f"redis://127.0.0.1:{server.port}/3")
            spans_in_stream = sum(int(f[b"n"]) for _, f in client.xrange("contrail:spans"))
            client.delete("contrail:spans")  # the next run counts its own
            client.close()
        except Exception:
            pass

    # every traced round trip (warm-up included) must have left its two spans: else a side was not traced
    expected = 0 if aa else 2 * (4 * BLOCK + round_trips)
    if spans_in_stream != expected:
        raise SystemExit(f"the traced side did not trace as set up: {spans_in_stream} spans in the stream, "
                         f"{expected} expected")
    ratios = [t / u for t, u in zip(block_medians["traced"], block_medians["untraced"])]
    return {"times": times, "ratios": ratios, "cpu": cpu, "export_ns": export_ns, "exported": exported,
            "spans_in_stream": spans_in_stream,
            "untraced_median_ms": statistics.median(times["untraced"]) * 1e3,
            "overhead_paired_blocks_median_pct": (statistics.median(ratios) - 1) * 100}


def main(round_trips: int = 3000, aa: bool = False, runs: int = 5, two_workers: bool = False) -> dict:
    measured = []
    server = RedisServer.launch()  # one Redis; every run starts its own workers
    try:
        for i in range(runs):
            one = run_once(server, round_trips, aa, two_workers)
            measured.append(one)
            print(f"run {i + 1}/{runs}: paired-block median {one['overhead_paired_blocks_median_pct']:+.2f} %, "
                  f"untraced median {one['untraced_median_ms']:.3f} ms", flush=True)
    finally:
        server.destroy()
    times = {side: [t for one in measured for t in one["times"][side]] for side in ("traced", "untraced")}
    ratios = [r for one in measured for r in one["ratios"]]
    cpu = {side: {k: sum(one["cpu"][side][k] for one in measured) for k in ("client_main", "worker_main")}
           for side in times}
    export_ns = {k: sum(one["export_ns"][k] for one in measured) for k in measured[0]["export_ns"]}
    exported = measured[-1]["exported"]
    spans_in_stream = sum(one["spans_in_stream"] for one in measured)

    def figures(values: list[float]) -> dict:
        return {"median_ms": statistics.median(values) * 1e3, "mean_ms": statistics.fmean(values) * 1e3,
                "p95_ms": sorted(values)[int(len(values) * 0.95)] * 1e3, "n": len(values)}

    traced, untraced = figures(times["traced"]), figures(times["untraced"])
    n_each = {side: len(times[side]) for side in times}
    cpu_us = {side: {k: v / n_each[side] / 1e3 for k, v in cpu[side].items()} for side in cpu}
    # the export threads' CPU belongs to the traced round trips (they export the traced spans)
    cpu_us["traced"]["client_export_thread"] = export_ns["client"] / n_each["traced"] / 1e3
    cpu_us["traced"]["worker_export_thread"] = export_ns["traced_worker"] / n_each["traced"] / 1e3
    cpu_us["untraced"]["worker_other_threads"] = export_ns["untraced_worker"] / n_each["untraced"] / 1e3
    for side in cpu_us:
        cpu_us[side]["total"] = sum(cpu_us[side].values())
    result = {
        "baseline": (("untraced round trips in the same run: a solo worker of the same app with "
                      "CONTRAIL_ENABLED=0 on the same Redis, and the client with Contrail's handlers "
                      "disconnected; blocks of %d alternate with the traced ones" if two_workers else
                      "untraced round trips in the same run on the same solo worker, Contrail's handlers "
                      "disconnected in the worker and in the client; blocks of %d alternate with the "
                      "traced ones") % BLOCK),
        "workers": "two (traced, and one without Contrail)" if two_workers else "one, switched per block",
        "round_trips_each": round_trips * runs,
        "runs": runs,
        # each run with its own workers: its paired-block median and its untraced median
        "by_run": [{"overhead_paired_blocks_median_pct": one["overhead_paired_blocks_median_pct"],
                    "untraced_median_ms": one["untraced_median_ms"]} for one in measured],
        "traced": traced,
        "untraced": untraced,
        "overhead_median_pct": (traced["median_ms"] / untraced["median_ms"] - 1) * 100,
        "overhead_mean_pct": (traced["mean_ms"] / untraced["mean_ms"] - 1) * 100,
        # each traced block against the untraced block next to it: robust to load drifting during the run
        "overhead_paired_blocks_median_pct": (statistics.median(ratios) - 1) * 100,
        # spread of the paired-block ratios: how noisy the machine was during the run
        "overhead_paired_blocks_p25_pct": (quantile(ratios, 0.25) - 1) * 100,
        "overhead_paired_blocks_p75_pct": (quantile(ratios, 0.75) - 1) * 100,
        "paired_blocks": len(ratios),
        # CPU time per round trip in microseconds, by thread (the scheduler's account, /proc schedstat)
        "cpu_per_round_trip_us": cpu_us,
        "tracing_cpu_per_round_trip_us": {
            "client_calling_thread": cpu_us["traced"]["client_main"] - cpu_us["untraced"]["client_main"],
            "worker_main_thread": cpu_us["traced"]["worker_main"] - cpu_us["untraced"]["worker_main"],
            "client_export_thread": cpu_us["traced"]["client_export_thread"],
            "worker_export_thread": cpu_us["traced"]["worker_export_thread"],
            "total": cpu_us["traced"]["total"] - cpu_us["untraced"]["total"],
        },
        "budget_pct": (BUDGET - 1) * 100,
        "spans_in_stream": spans_in_stream,
        "client_tracer_info": {k: v for k, v in exported.items() if isinstance(v, (int, float, str, bool))},
        "load_average": os.getloadavg(),
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
    }
    result["within_budget"] = result["overhead_paired_blocks_median_pct"] <= result["budget_pct"]
    result["mode"] = "A/A: both sides untraced (benchmark bias and noise)" if aa else "traced vs untraced"
    out = ROOT / "bench" / "results" / ("celery" + ("_two_workers" if two_workers else "") + ("_aa" if aa else "")
                                        + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"untraced round trip: median {untraced['median_ms']:.3f} ms, mean {untraced['mean_ms']:.3f} ms")
    print(f"traced round trip:   median {traced['median_ms']:.3f} ms, mean {traced['mean_ms']:.3f} ms")
    print(f"overhead: median {result['overhead_median_pct']:+.2f} %, mean {result['overhead_mean_pct']:+.2f} % "
          f"(budget {result['budget_pct']:.0f} %)")
    print(f"paired blocks: median overhead {result['overhead_paired_blocks_median_pct']:+.2f} % "
          f"(p25 {result['overhead_paired_blocks_p25_pct']:+.2f} %, p75 {result['overhead_paired_blocks_p75_pct']:+.2f} %, "
          f"{len(ratios)} pairs of {runs} runs) -> {'OK' if result['within_budget'] else 'OVER BUDGET'}")
    split = result["tracing_cpu_per_round_trip_us"]
    print("tracing CPU per round trip: " + ", ".join(f"{k} {v:+.1f} us" for k, v in split.items()))
    print("CPU per round trip (us): " + json.dumps({side: {k: round(v, 1) for k, v in d.items()}
                                                     for side, d in cpu_us.items()}))
    print(f"spans in stream: {spans_in_stream}; written {out}")
    return result


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("round_trips", nargs="?", type=int, default=3000, help="round trips each way per run")
    parser.add_argument("--runs", type=int, default=5, help="whole measurements, each with fresh processes")
    parser.add_argument("--aa", action="store_true", help="both sides untraced: the benchmark's own bias")
    parser.add_argument("--two-workers", action="store_true",
                        help="untraced side on a second worker without Contrail (instead of the same worker)")
    options = parser.parse_args()
    main(options.round_trips, aa=options.aa, runs=options.runs, two_workers=options.two_workers)
