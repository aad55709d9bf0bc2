"""`contrail up` with an external Redis, SIGTERM, and a child that keeps failing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psutil
import pytest
import requests

from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace.export import SpanExportResult

from tests.support.servers import free_port, wait_until
from tests.web.test_otlp import finished_spans

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent.parent


def start_up(args: list[str], env: dict) -> tuple[subprocess.Popen, list[str]]:
    """Run `contrail up` with its output collected; ``process.reader`` ends at end of output."""
    lines: list[str] = []
    process = subprocess.Popen([sys.executable, "-m", "contrail_cli", "up", *args], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def read():
        for raw in iter(process.stdout.readline, b""):
            lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    process.reader = threading.Thread(target=read, daemon=True)
    process.reader.start()
    return process, lines


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTRAIL_", "DEMO_"))}
    env["CONTRAIL_OTLP_GRPC_PORT"] = str(free_port())  # parallel stacks would all want 4317
    env.update(extra)
    return env


def stop(process: subprocess.Popen) -> None:
    """Kill a stack left running by a failed test: its children too (each runs in a process group of its own)."""
    if process.poll() is None:
        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        for child in descendants:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.mark.slow
def test_up_uses_an_external_redis_and_stops_on_sigterm(redis_url, tmp_path):
    port, grpc_port = free_port(), free_port()
    process, lines = start_up(["--data-dir", str(tmp_path / "data"), "--port", str(port), "--collectors", "2"],
                              clean_env(CONTRAIL_REDIS_URL=redis_url, CONTRAIL_OTLP_GRPC_PORT=str(grpc_port)))
    try:
        # "press Ctrl-C to stop" is the last line of the start-up report (the receivers come after "Contrail is up")
        wait_until(lambda: any("press Ctrl-C to stop" in line for line in lines) or process.poll() is not None,
                   timeout=90, interval=0.3, message="the stack")
        output = "\n".join(lines)
        assert process.poll() is None, output
        assert f"using Redis at {redis_url}" in output
        assert not (tmp_path / "data" / "redis.port").exists()
        assert (tmp_path / "data" / "contrail.db").exists()
        children = psutil.Process(process.pid).children(recursive=True)
        commands = [" ".join(c.cmdline()) for c in children]
        assert not any("redis-server" in c for c in commands)
        assert sum(c.endswith("contrail_cli collector") for c in commands) == 2, output
        assert any("collector.2 |" in line for line in lines)  # each collector's output is prefixed
        assert f"OTLP/gRPC to 127.0.0.1:{grpc_port}" in output
        exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True, timeout=10)
        spans = finished_spans()
        assert exporter.export(spans) == SpanExportResult.SUCCESS  # the web workers serve gRPC
        exporter.shutdown()
        # the collectors read the stream and trim what they acknowledged: the spans are looked for where they end
        trace_url = f"http://127.0.0.1:{port}/api/v1/traces/{spans[0].context.trace_id:032x}"

        def stored():
            response = requests.get(trace_url, timeout=10)
            return response.status_code == 200 and len(response.json()["spans"]) == 2

        wait_until(stored, timeout=90, interval=0.5, message="the gRPC spans stored by the stack's collectors")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        wait_until(lambda: not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE
                                   for c in children if psutil.pid_exists(c.pid)),
                   timeout=20, message="children to be gone")
    finally:
        stop(process)


@pytest.mark.slow
def test_up_uses_the_redis_of_the_config_file(redis_url, tmp_path):
    """A Redis URL from the config file is as configured as one from the environment: no embedded Redis."""
    config = tmp_path / "contrail.toml"
    config.write_text(f'[collector]\nredis_url = "{redis_url}"\n')
    process, lines = start_up(["--data-dir", str(tmp_path / "data"), "--port", str(free_port())],
                              clean_env(CONTRAIL_CONFIG=str(config)))
    try:
        wait_until(lambda: any("Redis ready" in line for line in lines) or process.poll() is not None,
                   timeout=60, interval=0.3, message="Redis to be ready")
        output = "\n".join(lines)
        assert f"using Redis at {redis_url} (file {config}" in output, output
        assert not (tmp_path / "data" / "redis.port").exists()
    finally:
        stop(process)


def test_a_child_that_keeps_failing_is_reported_and_stops_the_stack(redis_url, tmp_path):
    bad_db = "postgresql+psycopg://contrail@127.0.0.1:1/contrail"
    process, lines = start_up(["--data-dir", str(tmp_path / "data"), "--port", str(free_port()),
                               "--max-restarts", "1"],
                              clean_env(CONTRAIL_REDIS_URL=redis_url, CONTRAIL_DATABASE_URL=bad_db))
    try:
        code = process.wait(120)
        process.reader.join(10)
        output = "\n".join(lines)
        assert code == 1, output
        assert "collector exited unexpectedly with code 1" in output
        assert "restarting collector (attempt 1/1)" in output
        assert "kept failing" in output
    finally:
        stop(process)


@pytest.mark.slow
def test_children_of_a_killed_up_keep_the_data_directory_locked(redis_url, tmp_path):
    """After SIGKILL of `contrail up`, a second one must not start beside the leftovers on the same data."""
    data = str(tmp_path / "data")
    env = clean_env(CONTRAIL_REDIS_URL=redis_url)
    process, lines = start_up(["--data-dir", data, "--port", str(free_port())], env)
    children: list[psutil.Process] = []
    try:
        wait_until(lambda: any("Contrail is up" in line for line in lines) or process.poll() is not None,
                   timeout=90, interval=0.3, message="the stack")
        assert process.poll() is None, "\n".join(lines)
        children = psutil.Process(process.pid).children(recursive=True)
        process.kill()  # the supervisor alone: its children live in sessions of their own
        process.wait(10)
        second = subprocess.run([sys.executable, "-m", "contrail_cli", "up", "--data-dir", data,
                                 "--port", str(free_port())], env=env, cwd=ROOT, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1, second.stdout + second.stderr
        assert "another 'contrail up' is running on data directory" in second.stderr
        assert any(f"{c.pid} (" in second.stderr for c in children), second.stderr  # names the leftovers
    finally:
        stop(process)
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass


def test_a_web_port_already_taken_stops_up_before_anything_starts(redis_url, tmp_path):
    """Otherwise the readiness probe would reach the other server and announce a dashboard that is not ours."""
    import socket

    from click.testing import CliRunner

    from contrail_cli.main import cli

    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        result = CliRunner().invoke(cli, ["up", "--data-dir", str(tmp_path / "data"), "--port", str(port)],
                                    env={"CONTRAIL_REDIS_URL": redis_url})
    assert result.exit_code == 1, result.output
    assert f"the web app cannot listen on 127.0.0.1:{port}: " in result.output
    assert "choose another port with --port" in result.output
    assert "Contrail is up" not in result.output
    assert not (tmp_path / "data" / "contrail.db").exists()  # nothing was started


def test_up_refuses_a_network_bind_without_a_token_before_starting_anything(tmp_path):
    from click.testing import CliRunner

    from contrail_cli.main import cli

    result = CliRunner().invoke(cli, ["up", "--data-dir", str(tmp_path / "data"), "--host", "0.0.0.0"],
                                env={"CONTRAIL_API_TOKEN": "", "CONTRAIL_READ_TOKEN": "", "CONTRAIL_INGEST_TOKEN": ""})
    assert result.exit_code == 2, result.output
    assert "refusing to serve on 0.0.0.0 without CONTRAIL_API_TOKEN" in result.output
    assert not (tmp_path / "data").exists()  # nothing was started or created


@pytest.mark.slow
def test_up_with_a_token_serves_the_network_and_never_prints_the_token(redis_url, tmp_path):
    import requests

    token = "tok-" + "5f" * 24
    port = free_port()
    process, lines = start_up(["--data-dir", str(tmp_path / "data"), "--host", "0.0.0.0", "--port", str(port)],
                              clean_env(CONTRAIL_REDIS_URL=redis_url, CONTRAIL_API_TOKEN=token))
    try:
        wait_until(lambda: any("Contrail is up" in line for line in lines) or process.poll() is not None,
                   timeout=90, interval=0.3, message="the stack")
        assert process.poll() is None, "\n".join(lines)
        base = f"http://127.0.0.1:{port}"
        assert requests.get(f"{base}/api/v1/traces", timeout=10).status_code == 401
        assert requests.get(f"{base}/api/v1/traces", headers={"Authorization": "Bearer wrong"},
                            timeout=10).status_code == 401
        assert requests.get(f"{base}/api/v1/traces", headers={"Authorization": f"Bearer {token}"},
                            timeout=10).status_code == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        process.reader.join(10)
        output = "\n".join(lines)
        assert token not in output and token[4:20] not in output
        assert "refusing" not in output and "WARNING" not in output
    finally:
        stop(process)
