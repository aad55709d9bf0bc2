"""System metrics of a traced process (``CONTRAIL_SYSTEM_METRICS=true``), read with psutil at each collection.

Observable instruments on the process's meter, so nothing runs between two
exports: CPU time and utilization, resident memory, threads, open file
descriptors, garbage collections, disk I/O of the process and network I/O of
the host (psutil has no per-process network counters). Cumulative figures are
observable counters, sent as their increase per interval like any counter.
"""

from __future__ import annotations

import gc
import os
from typing import Any, Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation


def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        raise RuntimeError("CONTRAIL_SYSTEM_METRICS=true needs psutil: pip install 'contrail-tracing[system]'") \
            from None
    return psutil


def _safe(read: Callable[[], Iterable[Observation]]) -> Callable[[CallbackOptions], Iterable[Observation]]:
    """A callback that yields nothing when the platform refuses a figure (no /proc, no permission)."""
    def callback(options: CallbackOptions) -> Iterable[Observation]:
        try:
            return list(read())
        except Exception:  # noqa: BLE001 - one figure missing must not stop the others
            return []
    return callback


def observe_process(metrics: Any) -> None:
    """Register the process's system metrics on ``metrics`` (a :class:`tracer.metrics.MetricsCollector`)."""
    psutil = _psutil()
    processes: dict[int, Any] = {}
    cores = psutil.cpu_count() or 1

    def current() -> Any:
        """This process's psutil handle, made again in a forked child (a Celery pool process reports itself)."""
        pid = os.getpid()
        if pid not in processes:
            processes.clear()
            processes[pid] = psutil.Process(pid)
            processes[pid].cpu_percent(None)  # the first call starts the measuring interval
        return processes[pid]

    measuring = {"pid": os.getpid()}  # the process whose CPU interval runs since the last reading

    def utilization():
        """CPU since the last collection. A forked child's first collection starts its own interval and reads
        nothing; over a short interval psutil's tick-granular CPU times can read above every core: not beyond."""
        percent = current().cpu_percent(None)
        if measuring["pid"] != os.getpid():
            measuring["pid"] = os.getpid()
            return []
        return [Observation(min(max(percent / 100.0, 0.0), float(cores)))]

    current()
    meter = metrics.meter

    def cpu_time():
        times = current().cpu_times()
        return [Observation(times.user, {"state": "user"}), Observation(times.system, {"state": "system"})]

    def io_bytes():
        counters = current().io_counters()
        return [Observation(counters.read_bytes, {"direction": "read"}),
                Observation(counters.write_bytes, {"direction": "write"})]

    def network_bytes():
        counters = psutil.net_io_counters()
        return [Observation(counters.bytes_recv, {"direction": "receive"}),
                Observation(counters.bytes_sent, {"direction": "transmit"})]

    def collections():
        return [Observation(stats["collections"], {"generation": str(generation)})
                for generation, stats in enumerate(gc.get_stats())]

    meter.create_observable_counter("process.cpu.time", [_safe(cpu_time)], unit="s",
                                    description="CPU time of this process")
    meter.create_observable_gauge("process.cpu.utilization", [_safe(utilization)], unit="1",
                                  description="CPU used since the last collection, as a share of one core")
    meter.create_observable_gauge("process.memory.rss", [_safe(lambda: [
        Observation(current().memory_info().rss)])], unit="By", description="Resident memory of this process")
    meter.create_observable_gauge("process.threads", [_safe(lambda: [
        Observation(current().num_threads())])], unit="{thread}", description="Threads of this process")
    meter.create_observable_gauge("process.open_file_descriptors", [_safe(lambda: [
        Observation(current().num_fds())])], unit="{fd}", description="Open file descriptors of this process")
    meter.create_observable_counter("process.gc.collections", [_safe(collections)], unit="{collection}",
                                    description="Garbage collections per generation")
    meter.create_observable_counter("process.disk.io", [_safe(io_bytes)], unit="By",
                                    description="Bytes this process read and wrote")
    meter.create_observable_counter("system.network.io", [_safe(network_bytes)], unit="By",
                                    description="Bytes the host received and sent (all interfaces)")
