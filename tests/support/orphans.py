"""Stop servers left running by an earlier, interrupted test run.

Every process a test run starts inherits ``CONTRAIL_TEST_RUN`` (one id per
run). When a run is killed, its collectors, web servers and Redis servers are
re-parented to init and keep running: a leftover collector then keeps retrying
its dead Redis's port, and when a later test's private Redis draws that port
it joins the same consumer group and stores that test's spans in its own old
database. A new run stops such orphans (parent pid 1, another run's id) before
it starts any server. Processes of runs still going have a live parent and are
left alone.
"""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

RUN_VARIABLE = "CONTRAIL_TEST_RUN"


def mark_run() -> str:
    """This run's id, set once in the controlling process and inherited by workers and their children."""
    return os.environ.setdefault(RUN_VARIABLE, uuid.uuid4().hex)


def _run_of(pid: str) -> str | None:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = RUN_VARIABLE.encode() + b"="
    for item in environ.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix):].decode(errors="replace")
    return None


def _parent_of(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[1])


def orphans_of_other_runs(current_run: str) -> list[int]:
    """Pids of processes re-parented to init that a test run other than ``current_run`` started."""
    if not Path("/proc").is_dir():
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        run = _run_of(entry)
        if run is not None and run != current_run and _parent_of(entry) == 1:
            found.append(int(entry))
    return found


def stop_orphans(current_run: str) -> list[int]:
    """Kill the orphans of earlier runs; return their pids."""
    pids = orphans_of_other_runs(current_run)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return pids
