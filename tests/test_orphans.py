"""The test run stops servers orphaned by an earlier run, and only those."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests.support.orphans import RUN_VARIABLE, orphans_of_other_runs, stop_orphans
from tests.support.servers import wait_until


def _orphan(run: str) -> int:
    """A sleeping process re-parented to init (its parent exits at once), carrying ``run``."""
    env = dict(os.environ, **{RUN_VARIABLE: run})
    parent = subprocess.run(
        [sys.executable, "-c",
         "import subprocess, sys; p = subprocess.Popen(['sleep', '120'], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"],
        env=env, capture_output=True, text=True, check=True)
    pid = int(parent.stdout.strip())
    wait_until(lambda: open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1] == "1",
               timeout=10, message="the child re-parented to init")
    return pid


def _alive(pid: int) -> bool:
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_an_orphan_of_another_run_is_stopped_and_one_of_this_run_is_not():
    other, mine = _orphan("an-earlier-run"), _orphan("this-run")
    try:
        assert other in orphans_of_other_runs("this-run")
        assert mine not in orphans_of_other_runs("this-run")
        assert other in stop_orphans("this-run")
        wait_until(lambda: not _alive(other), timeout=10, message="the other run's orphan to stop")
        time.sleep(0.2)
        assert _alive(mine)
    finally:
        for pid in (other, mine):
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def test_a_process_with_a_live_parent_is_left_alone():
    env = dict(os.environ, **{RUN_VARIABLE: "an-earlier-run"})
    child = subprocess.Popen(["sleep", "120"], env=env)
    try:
        assert child.pid not in orphans_of_other_runs("this-run")
    finally:
        child.kill()
        child.wait()
