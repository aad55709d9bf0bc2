"""Spool integrity on a real filesystem: short writes, damaged records, one bound for a shared directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import msgpack

from tests.support.servers import free_port, wait_until
from tracer.spool import DiskSpool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _entry(i: int, size: int = 900) -> dict:
    return {b"v": b"1", b"enc": b"msgpack", b"n": b"2", b"i": str(i).encode(), b"data": b"x" * size}


def _run(script: str, **values) -> subprocess.Popen:
    code = textwrap.dedent(script).format(root=ROOT, **values)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _replayed_ids(directory) -> tuple[list[int], DiskSpool]:
    spool = DiskSpool(str(directory), max_bytes=10**9)
    pushed: list[dict] = []
    spool.replay(pushed.extend)
    return [int(record[b"i"]) for record in pushed], spool


# A full disk, for real: RLIMIT_FSIZE caps how large this process may make a file, and with SIGXFSZ ignored
# the write that crosses the cap comes back short and the next one fails with EFBIG, as on a full disk.
# Raising the cap again is the disk getting space back.
FULL_DISK_WRITER = """
    import json, resource, signal, sys
    sys.path.insert(0, {root!r})
    from tests.tracer.test_spool_integrity import _entry
    from tracer.spool import DiskSpool

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    spool = DiskSpool({directory!r}, max_bytes=10**9)
    results = [spool.append(_entry(i), spans=2) for i in range(4)]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (spool.bytes + 500, hard))  # one segment: about half the next record fits
    results.append(spool.append(_entry(4), spans=2))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    results += [spool.append(_entry(i), spans=2) for i in range(5, 15)]
    spool.close()
    print(json.dumps({{"results": results, "dropped": spool.entries_dropped, "spans_dropped": spool.spans_dropped,
                      "error": getattr(spool, "last_error", None)}}))
"""


def test_a_short_write_drops_only_its_record_and_every_later_record_is_replayed(tmp_path):
    child = _run(FULL_DISK_WRITER, directory=str(tmp_path))
    out, err = child.communicate(timeout=60)
    assert child.returncode == 0, err
    report = json.loads(out)
    assert report["results"] == [True] * 4 + [False] + [True] * 10  # the cut write is reported, not "succeeded"
    assert report["dropped"] == 1 and report["spans_dropped"] == 2
    assert "short write" in report["error"]
    ids, spool = _replayed_ids(tmp_path)  # the writer has exited: its segment is adopted
    assert ids == [0, 1, 2, 3] + list(range(5, 15))
    assert spool.records_corrupt == 0


def test_a_damaged_record_is_skipped_and_the_records_after_it_are_read(tmp_path):
    spool = DiskSpool(str(tmp_path), max_bytes=10**7)
    for i in range(8):
        assert spool.append(_entry(i, size=50 + i), spans=2)
    spool.close()
    (segment,) = tmp_path.glob("*.seg")
    data = bytearray(segment.read_bytes())
    start = data.index(msgpack.packb(_entry(3, size=53), use_bin_type=True))
    data[start - 4:start] = b"\xff\xff\xff\xff"  # the four bytes before record 3's payload
    segment.write_bytes(bytes(data))
    ids, replayer = _replayed_ids(tmp_path)
    assert ids == [0, 1, 2, 4, 5, 6, 7]
    assert replayer.records_corrupt == 1


SHARING_WRITER = """
    import json, os, sys, time
    sys.path.insert(0, {root!r})
    from tests.tracer.test_spool_integrity import _entry
    from tracer.spool import DiskSpool

    spool = DiskSpool({directory!r}, max_bytes={bound}, segment_bytes=8000)
    open({go!r} + ".ready{worker}", "w").close()
    while not os.path.exists({go!r}):
        time.sleep(0.005)
    results = [spool.append(_entry({worker} * 1000 + i, size=400), spans=2) for i in range(100)]
    spool.close()
    print(json.dumps({{"kept": results.count(True), "full": spool.entries_dropped}}))
    sys.stdout.flush()
    os._exit(0)  # no replay at exit: the parent adopts what was written
"""


def test_four_processes_sharing_a_directory_stay_within_one_bound(tmp_path):
    directory, go, bound = tmp_path / "spool", tmp_path / "go", 20_000
    children = [_run(SHARING_WRITER, directory=str(directory), bound=bound, go=str(go), worker=worker)
                for worker in range(4)]
    wait_until(lambda: all(os.path.exists(f"{go}.ready{worker}") for worker in range(4)), timeout=60,
               message="four spool writers ready")
    go.touch()  # all four append at the same time
    reports = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        reports.append(json.loads(out))
    on_disk = sum(path.stat().st_size for path in directory.glob("*.seg"))
    assert on_disk <= bound
    kept = sum(report["kept"] for report in reports)
    assert kept + sum(report["full"] for report in reports) == 400
    ids, _spool = _replayed_ids(directory)
    assert len(ids) == len(set(ids)) == kept
    assert on_disk > bound - 2 * 600  # the bound is used, not merely respected by writing nothing


def test_a_refused_spool_write_shows_in_the_tracer_info_with_its_reason(make_manager, tmp_path):
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")  # the spool directory cannot be created where a file is
    tracing = make_manager(redis_url=f"redis://127.0.0.1:{free_port()}/0", spool_dir=str(blocked / "spool"))
    tracing.finish_span(tracing.start_span("lost"))
    info = wait_until(lambda: (i := tracing.get_tracer_info())["spans_dropped"] and i, timeout=30,
                      message="the span to be dropped")
    assert info["spans_dropped_spool_error"] == 1 and info["spans_dropped_spool_full"] == 0
    assert "Not a directory" in info["last_spool_error"]
