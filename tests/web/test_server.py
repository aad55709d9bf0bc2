"""``contrail web``: gunicorn serving the app, and the refusal to expose an open API."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import requests
from click.testing import CliRunner

from tests.support.servers import free_port, wait_until
from web.server import is_loopback, web


@pytest.mark.parametrize("host, expected", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                            ("[::1]", True), ("0.0.0.0", False), ("10.1.2.3", False),
                                            ("example.com", False)])
def test_loopback_detection(host, expected):
    assert is_loopback(host) is expected


def test_refuses_non_loopback_without_token(monkeypatch):
    for var in ("CONTRAIL_API_TOKEN", "CONTRAIL_READ_TOKEN", "CONTRAIL_INGEST_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(web, ["--host", "0.0.0.0", "--port", str(free_port())])
    assert result.exit_code == 2 and "refusing to bind 0.0.0.0" in result.output


def test_serves_with_gunicorn(tmp_path, redis_url):
    port = free_port()
    home = tmp_path / "home"  # gunicorn's default control socket would land here; Contrail turns it off
    home.mkdir()
    env = {**os.environ, "CONTRAIL_DATA_DIR": str(tmp_path), "CONTRAIL_API_TOKEN": "", "HOME": str(home)}
    process = subprocess.Popen(
        [sys.executable, "-c", "import sys; from contrail_cli.main import main; main(sys.argv[1:])", "web", "--port", str(port), "--workers", "2",
         "--database-url", f"sqlite:///{tmp_path / 'web.db'}", "--redis-url", redis_url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(base + "/healthz", timeout=1).ok, timeout=30, message="contrail web")
        assert requests.get(base + "/readyz", timeout=5).json()["status"] == "ready"
        body = requests.get(base + "/api/v1/traces", timeout=5).json()
        assert body == {"traces": [], "total": 0, "total_capped": False, "next_cursor": None}
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/" in output
    assert "open to local users only" in output
    assert not list(home.rglob("*.ctl")), "a gunicorn control socket was opened"


def test_slow_clients_do_not_stop_one_worker_from_answering(tmp_path, redis_url):
    """Two clients that never finish their request headers hold threads, not the only worker: probes and
    the API keep answering (with synchronous workers the worker would wait on the first one for a minute)."""
    import socket

    port = free_port()
    env = {**os.environ, "CONTRAIL_DATA_DIR": str(tmp_path), "CONTRAIL_API_TOKEN": "", "HOME": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, "-m", "contrail_cli", "web", "--port", str(port), "--workers", "1",
         "--database-url", f"sqlite:///{tmp_path / 'web.db'}", "--redis-url", redis_url],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    slow = []
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: requests.get(base + "/healthz", timeout=1).ok, timeout=30, message="contrail web")
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")  # headers never finished
            slow.append(sock)
        for _ in range(3):
            assert requests.get(base + "/healthz", timeout=5).ok
            assert requests.get(base + "/api/v1/traces", timeout=5).status_code == 200
    finally:
        for sock in slow:
            sock.close()
        process.terminate()
        output, _ = process.communicate(timeout=20)
    assert "Using worker: gthread" in output, output
