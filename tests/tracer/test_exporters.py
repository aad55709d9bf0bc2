"""Console, file and OTLP exporters, each read back from its real output or receiver."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading

import pytest

from tests.support.servers import wait_until
from tests.tracer.conftest import RECEIVED_STREAM
from tests.tracer.tracer_helpers import by_name, stream_spans
from tracer.settings import TracerSettings


def _work(tracing, count=3):
    with tracing.span("request", route="/users"):
        for i in range(count - 1):
            span = tracing.start_span(f"step-{i}", tags={"i": i})
            tracing.finish_span(span)


def test_console_prints_one_compact_line_per_span(make_manager, capfd, redis_url):
    tracing = make_manager(exporters="console")
    _work(tracing)
    assert tracing.flush(5)
    lines = [line for line in capfd.readouterr().err.splitlines() if " svc " in line]
    assert len(lines) == 3
    request = next(line for line in lines if " request " in line)
    assert request.split()[4] == "UNSET" and 'route="/users"' in request and "trace=" in request
    step = next(line for line in lines if " step-0 " in line)
    assert step.split("trace=")[1][:32] == request.split("trace=")[1][:32]
    assert "parent=" + request.split("span=")[1][:16] in step
    assert stream_spans(redis_url) == []  # redis is not in the list
    assert tracing.get_tracer_info()["exporters"]["console"]["exported"] == 3


def test_file_writes_private_json_lines_and_rotates_by_size(make_manager, tmp_path, redis_url):
    path = tmp_path / "out" / "spans.jsonl"
    tracing = make_manager(exporters="redis,file", export_file=str(path), export_file_max_bytes=1500,
                           export_file_backups=2, max_export_batch_size=2)
    for _ in range(6):
        _work(tracing)
        assert tracing.flush(5)
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["spans.jsonl", "spans.jsonl.1", "spans.jsonl.2"]
    records = []
    for name in files:
        assert stat.S_IMODE(os.stat(path.parent / name).st_mode) == 0o600
        assert os.path.getsize(path.parent / name) <= 1500
        records += [json.loads(line) for line in (path.parent / name).read_text().splitlines()]
    assert len(records) < 18  # the oldest file was deleted: only two backups are kept
    assert len(stream_spans(redis_url)) == 18  # the redis export saw everything
    newest = {r["span_id"]: r for r in (json.loads(x) for x in path.read_text().splitlines())}
    request = next(r for r in newest.values() if r["name"] == "request")
    assert request["attributes"] == {"route": "/users"} and request["parent_span_id"] is None
    assert request["service"] == "svc" and request["duration_ms"] >= 0 and len(request["trace_id"]) == 32


def test_otlp_exporter_delivers_to_contrails_receiver(make_manager, redis_url, otlp_receiver):
    tracing = make_manager(exporters="redis,otlp", otlp_endpoint=otlp_receiver + "/v1/traces")
    _work(tracing)
    assert tracing.flush(10)
    local = by_name(stream_spans(redis_url))
    received = by_name(stream_spans(redis_url, RECEIVED_STREAM))
    assert set(received) == set(local) == {"request", "step-0", "step-1"}
    assert received["step-1"]["parent_span_id"] == local["request"]["span_id"]
    assert tracing.get_tracer_info()["exporters"]["otlp"] == {"received": 3, "exported": 3, "failed": 0,
                                                              "last_error": None}


def test_otlp_endpoint_from_the_standard_variables():
    base = TracerSettings.load(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318/"})
    assert base.otlp_endpoint == "http://tempo:4318/v1/traces"
    traces = TracerSettings.load(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318",
                                      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://jaeger:4318/custom"})
    assert traces.otlp_endpoint == "http://jaeger:4318/custom"
    assert TracerSettings.load(env={"CONTRAIL_EXPORTERS": "Redis, otlp,otlp"}).exporters == ("redis", "otlp")
    with pytest.raises(ValueError, match="CONTRAIL_EXPORTERS: unknown exporter.*zipkin"):
        TracerSettings.load(env={"CONTRAIL_EXPORTERS": "redis,zipkin"})


def test_a_hanging_otlp_endpoint_never_holds_up_the_redis_export(make_manager, redis_url):
    """The endpoint accepts connections and never answers; spans still reach Redis and the app goes on."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        tracing = make_manager(exporters="redis,otlp",
                               otlp_endpoint=f"http://127.0.0.1:{listener.getsockname()[1]}/v1/traces",
                               export_timeout=30)
        for _ in range(5):
            _work(tracing)
        wait_until(lambda: len(stream_spans(redis_url)) == 15, timeout=60, message="spans in Redis")
        wait_until(lambda: accepted, timeout=60, message="the otlp exporter connecting")
        # the export thread counts a batch just after Redis took it: the stream can be read first
        wait_until(lambda: tracing.get_tracer_info()["spans_exported"] == 15, timeout=60, message="spans counted")
        assert tracing.get_tracer_info()["exporters"]["otlp"]["exported"] == 0
    finally:
        stop.set()
        for conn in accepted:
            conn.close()
        listener.close()
        thread.join(5)


def test_missing_otlp_package_is_a_clear_error(make_manager, monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with pytest.raises(RuntimeError, match=r"pip install 'contrail-tracing\[otlp\]'"):
        make_manager(exporters="otlp")


def test_tracer_imports_and_works_without_flask_or_celery(tmp_path):
    """Block flask and celery imports in a fresh interpreter, then use every tracer-side module."""
    script = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("flask", "celery", "werkzeug"):
            raise ImportError("blocked " + name)
sys.meta_path.insert(0, Block())
import logging
import tracer, tracer.websocket, tracer.log_context, tracer.exporters, tracer.config_file
tracing = tracer.TracingManager(service_name="bare", exporters="file", export_file=sys.argv[1])
@tracing.trace_websocket()
def handler(ws):
    ws.send(ws.receive())
class Socket:
    def receive(self): return "hi"
    def send(self, message): pass
handler(Socket())
tracing.shutdown()
"""
    out = tmp_path / "spans.jsonl"
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [record] = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["name"] == "WS handler" and [e["name"] for e in record["events"]] == ["websocket.receive",
                                                                                      "websocket.send"]
