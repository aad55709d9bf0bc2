"""System metrics of a traced Celery worker: a real prefork worker with CONTRAIL_SYSTEM_METRICS on, a real
collector, the metrics API answering the worker's CPU, memory, threads and file descriptors."""

from __future__ import annotations

import subprocess
import sys

from tests.celery.helpers import ROOT, Worker
from tests.support.servers import stop_process, wait_until

SERVICE = "celery-sysmetrics"
QUEUE = "sysmetrics"


def test_a_traced_celery_workers_system_metrics_are_stored_and_served(celery_env, tasks, tmp_path):
    database_url = f"sqlite:///{tmp_path / 'contrail.db'}"
    env = {**celery_env, "CONTRAIL_SERVICE_NAME": SERVICE, "CONTRAIL_SYSTEM_METRICS": "true",
           "CONTRAIL_METRICS_INTERVAL": "1s", "CONTRAIL_DATABASE_URL": database_url,
           "CONTRAIL_DATA_DIR": str(tmp_path / "data"), "CONTRAIL_QUIET_PERIOD": "0.5s"}
    worker = Worker(env, QUEUE, pool="prefork", concurrency=2, log_dir=tmp_path).start()
    collector = subprocess.Popen([sys.executable, "-m", "collector_worker"], env=worker.env, cwd=ROOT,
                                 stdout=open(tmp_path / "collector.log", "w"), stderr=subprocess.STDOUT)
    try:
        assert tasks.add.apply_async((2, 3), queue=QUEUE).get(timeout=30) == 5

        from tracer.settings import Settings
        from web import create_app

        client = create_app(settings=Settings.load(env={"CONTRAIL_DATABASE_URL": database_url})).test_client()

        def served(name):
            def check():
                assert collector.poll() is None, (tmp_path / "collector.log").read_text()[-3000:]
                points = client.get(f"/api/v1/metrics/{name}?service={SERVICE}&lookback=10m").get_json()["points"]
                return points or None
            return check

        rss = wait_until(served("process.memory.rss"), timeout=90, message="the worker's RSS")
        assert all(10e6 < p["max"] < 4e9 for p in rss), rss  # bytes of a Python process
        cpu = wait_until(served("process.cpu.utilization"), timeout=30, message="the worker's CPU")
        assert all(0 <= p["min"] <= p["max"] <= 2.0 for p in cpu), cpu  # share of one core, 2 cores at most
        threads = wait_until(served("process.threads"), timeout=30, message="the worker's threads")
        assert all(p["min"] >= 1 for p in threads)
        fds = wait_until(served("process.open_file_descriptors"), timeout=30, message="its file descriptors")
        assert all(p["min"] >= 3 for p in fds)
        listing = {m["name"]: m for m in client.get("/api/v1/metrics?lookback=10m").get_json()["metrics"]}
        assert SERVICE in listing["process.cpu.time"]["services"]
        assert listing["process.cpu.time"]["attributes"]["state"] == ["system", "user"]
    finally:
        stop_process(collector)
        worker.stop()
