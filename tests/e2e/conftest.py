"""A real collector subprocess over the private Redis and a SQLite database, for the end-to-end tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent


@pytest.fixture
def stack_env(redis_url, tmp_path):
    env = dict(os.environ)
    env.update({
        "CONTRAIL_REDIS_URL": redis_url,
        "CONTRAIL_DATABASE_URL": f"sqlite:///{tmp_path / 'contrail.db'}",
        "CONTRAIL_DATA_DIR": str(tmp_path / "data"),
        "CONTRAIL_QUIET_PERIOD": "0.5s",
        "PYTHONPATH": str(ROOT),
    })
    return env


@pytest.fixture
def start_collector():
    """Start `python -m collector_worker` with an environment; every one is stopped after the test."""
    processes = []

    def start(env: dict) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-m", "collector_worker"], env=env, cwd=ROOT,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.terminate()
            process.wait(20)


@pytest.fixture
def collector(stack_env, start_collector):
    return start_collector(stack_env)
