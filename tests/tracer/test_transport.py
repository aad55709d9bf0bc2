"""Transport under failure: Redis outage with spool replay, fork, process restart, spool bounds."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import msgpack
import pytest

from tests.support.servers import free_port, wait_until
from tracer.spool import DiskSpool

from tests.tracer.tracer_helpers import in_forked_child, stream_entries, stream_spans

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _names(redis_url):
    return [s["name"] for s in stream_spans(redis_url)]


def test_redis_outage_spools_then_replays_every_span_once_in_order(make_manager, redis_server, redis_url):
    tracing = make_manager(max_export_batch_size=10)
    for i in range(15):
        tracing.finish_span(tracing.start_span(f"before{i}"))
    assert tracing.flush(5)

    redis_server.stop()
    for i in range(60):
        span = tracing.start_span(f"during{i}", tags={"i": i})
        tracing.finish_span(span)  # returns although Redis is gone: the export thread absorbs the outage
    wait_until(lambda: tracing.get_tracer_info()["spans_spooled"] == 60, timeout=30, message="spans spooled")
    info = tracing.get_tracer_info()
    assert info["export_errors"] >= 1 and info["last_export_error"]
    assert info["spool_bytes"] > 0
    assert tracing.flush(0.2) is False  # not in Redis yet

    redis_server.start()
    for i in range(5):
        tracing.finish_span(tracing.start_span(f"after{i}"))
    wait_until(lambda: tracing.flush(1), timeout=30, message="spool replayed")

    names = _names(redis_url)
    expected = [f"before{i}" for i in range(15)] + [f"during{i}" for i in range(60)] + [f"after{i}" for i in range(5)]
    assert names == expected  # every span exactly once, batches in order
    info = tracing.get_tracer_info()
    assert info["spool_bytes"] == 0 and info["spans_exported"] == 80 and info["spans_dropped"] == 0


def test_forked_child_exports_its_own_spans(make_manager, redis_url):
    tracing = make_manager(schedule_delay=30)  # keep the parent's span queued across the fork
    tracing.finish_span(tracing.start_span("parent_before_fork"))
    pid = in_forked_child(tracing, lambda: tracing.finish_span(tracing.start_span("in_child")))
    assert tracing.flush(5)
    spans = stream_spans(redis_url)
    assert sorted(s["name"] for s in spans) == ["in_child", "parent_before_fork"]
    child_span = next(s for s in spans if s["name"] == "in_child")
    parent_span = next(s for s in spans if s["name"] == "parent_before_fork")
    assert child_span["resource"]["process.pid"] == pid
    assert parent_span["resource"]["process.pid"] == os.getpid()


PRODUCER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tracer import TracingManager
    tracing = TracingManager(service_name="restarted", redis_url={url!r}, spool_dir={spool!r},
                             schedule_delay=0.05, max_export_batch_size=7)
    for i in range(30):
        tracing.finish_span(tracing.start_span(f"offline{{i}}"))
    tracing.shutdown(timeout=10)
    info = tracing.get_tracer_info()
    print(info["spans_spooled"], info["spans_dropped"])
""")


def test_spool_survives_restart_of_the_producing_process(make_manager, redis_url, tmp_path):
    spool = tmp_path / "spool"
    dead_url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    script = PRODUCER.format(root=ROOT, url=dead_url, spool=str(spool))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["30", "0"]
    assert any(spool.iterdir())

    tracing = make_manager(service_name="successor", spool_dir=str(spool))
    wait_until(lambda: len(stream_spans(redis_url)) == 30, timeout=30, message="leftover spool replayed")
    spans = stream_spans(redis_url)
    assert [s["name"] for s in spans] == [f"offline{i}" for i in range(30)]
    assert {s["service"] for s in spans} == {"restarted"}
    assert [int(f[b"n"]) for _, f in stream_entries(redis_url)] == [7, 7, 7, 7, 2]
    wait_until(lambda: not list(spool.iterdir()), timeout=10, message="segments deleted")
    assert tracing.get_tracer_info()["spool_bytes"] == 0


def _entry(n):
    return {b"v": b"1", b"enc": b"msgpack", b"n": str(n).encode(), b"data": b"x" * 100}


def test_spool_bound_drops_newest_and_counts(tmp_path):
    spool = DiskSpool(str(tmp_path), max_bytes=1000)
    results = [spool.append(_entry(3), spans=3) for _ in range(10)]
    kept = results.count(True)
    assert 0 < kept < 10 and results == [True] * kept + [False] * (10 - kept)
    assert spool.spans_dropped == 3 * (10 - kept) and spool.entries_dropped == 10 - kept
    assert spool.bytes <= 1000
    pushed = []
    assert spool.replay(pushed.extend) == kept
    assert len(pushed) == kept and spool.bytes == 0 and not spool.pending()


def test_spool_replay_resumes_after_push_failure_without_duplicates(tmp_path):
    spool = DiskSpool(str(tmp_path), max_bytes=10**7, segment_bytes=2000)
    for i in range(100):
        spool.append({b"v": b"1", b"n": b"1", b"i": str(i).encode()}, spans=1)
    pushed = []
    calls = {"n": 0}

    def flaky(chunk):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionError("down")
        pushed.extend(chunk)

    with pytest.raises(ConnectionError):
        spool.replay(flaky)
    assert spool.pending()
    spool.replay(flaky)
    assert [int(r[b"i"]) for r in pushed] == list(range(100))
    assert not spool.pending() and not list(tmp_path.iterdir())


def test_spool_skips_live_owner_and_torn_tail(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = msgpack.packb(_entry(1), use_bin_type=True)
        frame = len(record).to_bytes(4, "big") + record  # segments from before checksums: still replayed
        (tmp_path / f"{1:020d}-{sleeper.pid}-000001.seg").write_bytes(frame)
        (tmp_path / f"{2:020d}-999999999-000001.seg").write_bytes(frame + frame[:10])  # dead owner, torn tail
        spool = DiskSpool(str(tmp_path), max_bytes=10**6)
        assert spool.pending()
        pushed = []
        spool.replay(pushed.extend)
        assert len(pushed) == 1 and spool.records_corrupt == 1
        assert [p.name.split("-")[1] for p in tmp_path.iterdir()] == [str(sleeper.pid)]  # live owner's file kept
    finally:
        sleeper.kill()
        sleeper.wait()
