"""forward_mode=kept: the finalizer's kept traces go to a real OTLP/HTTP endpoint, each span once, after the
write transaction commits; dropped traces and rolled-back writes send nothing. SQLite and PostgreSQL."""

from __future__ import annotations

from collections import Counter

import pytest

from collector_worker import finalizer, forwarding
from tests.collector.test_finalizer import (BASE, S, _stolen_meanwhile, _two_refinalized_traces, finalize_all,
                                            ingest, make_span, settings, sid, tid)
from tests.support.otlp_sink import OtlpSink
from tests.support.servers import wait_until

POLICY = dict(tail_sampling=True, tail_keep_ratio=0.0, tail_slow_threshold=1.0)


@pytest.fixture
def sink():
    sink = OtlpSink(require={"authorization": "Bearer s3cret"})
    yield sink
    sink.close()


def _kept_forwarder(engine, sink, **kw):
    return forwarding.start(settings(forward_endpoint=sink.url, forward_mode="kept",
                                     forward_headers=(("authorization", "Bearer s3cret"),), **kw), engine)


def _keys(spans):
    return Counter((s["trace_id"], s["span_id"]) for s in spans)


def test_kept_traces_are_forwarded_complete_and_late_spans_once(engine, sink):
    kept, dropped = tid(401), tid(402)
    forwarder = _kept_forwarder(engine, sink)
    try:
        ingest(engine, [make_span(kept, sid(1), None, 0, 10, name="root", status="error"),
                        make_span(kept, sid(2), sid(1), 1, 5, service="db", name="query"),
                        make_span(dropped, sid(1), None, 0, 10, name="root"),
                        make_span(dropped, sid(2), sid(1), 1, 5, service="db", name="query")])
        assert finalize_all(engine, BASE + 5 * S, **POLICY) == 2
        wait_until(lambda: len(sink.received()) == 2, timeout=30, message="the kept trace at the endpoint")

        # late spans of both, and a redelivery of a span the kept trace's block already holds
        ingest(engine, [make_span(kept, sid(3), sid(1), 6, 9, name="late"),
                        make_span(kept, sid(1), None, 0, 10, name="root", status="error"),
                        make_span(dropped, sid(3), sid(1), 6, 9, name="late")], received_ns=BASE + 10 * S)
        assert finalize_all(engine, BASE + 20 * S, **POLICY) == 2
        wait_until(lambda: len(sink.received()) == 3, timeout=30, message="the late span at the endpoint")
    finally:
        forwarding.stop(engine, forwarder)  # sends whatever is still queued
    received = sink.received()
    assert _keys(received) == Counter({(kept, sid(1)): 1, (kept, sid(2)): 1, (kept, sid(3)): 1})
    by_id = {s["span_id"]: s for s in received}
    assert by_id[sid(1)]["status"] == 2 and by_id[sid(1)]["status_message"] == "boom"  # STATUS_CODE_ERROR
    assert (by_id[sid(2)]["service"], by_id[sid(2)]["parent_span_id"], by_id[sid(3)]["name"]) == \
        ("db", sid(1), "late")
    assert sink.refused == 0 and all(r["authorization"] == "Bearer s3cret" for r in sink.requests)


def test_a_rolled_back_write_forwards_nothing_and_its_retry_forwards_once(engine, sink, monkeypatch):
    """c1's batch loses a lease (c2 took trace A meanwhile): its transaction rolls back, B is written alone.
    A's late span goes out with c2's write, B's with c1's retry: each span once."""
    forwarder = _kept_forwarder(engine, sink)
    try:
        a, b = _two_refinalized_traces(engine)  # finalized once (sent), then a late span each
        wait_until(lambda: len(sink.received()) == 2, timeout=30, message="the first finalization's spans")
        now = BASE + 20 * S
        taken = _stolen_meanwhile(monkeypatch, engine, lambda: now + finalizer.LEASE_NS + 1)
        assert finalizer.finalize_ready(engine, settings(), "c1", now_ns=now) == 1
        assert [t for t, _ in taken] == [a]
        wait_until(lambda: len(sink.received()) >= 4, timeout=30, message="both late spans")
    finally:
        forwarding.stop(engine, forwarder)
    assert _keys(sink.received()) == Counter({(a, sid(1)): 1, (a, sid(2)): 1, (b, sid(1)): 1, (b, sid(2)): 1})


def test_stored_mode_leaves_the_finalizer_alone(engine, sink):
    forwarder = forwarding.start(settings(forward_endpoint=sink.url), engine)
    try:
        ingest(engine, [make_span(tid(403), sid(1), None, 0, 10)])
        assert finalize_all(engine, BASE + 5 * S) == 1
    finally:
        forwarding.stop(engine, forwarder)
    assert sink.received() == [] and sink.refused == 0  # stored mode forwards from ingest (the consumer) only


def test_a_backend_that_refuses_the_credentials_gets_nothing_retried(engine, sink):
    forwarder = forwarding.start(settings(forward_endpoint=sink.url, forward_mode="kept",
                                          forward_headers=(("authorization", "Bearer wrong"),)), engine)
    before = forwarding.counters()
    try:
        ingest(engine, [make_span(tid(404), sid(1), None, 0, 10)])
        assert finalize_all(engine, BASE + 5 * S) == 1
        wait_until(lambda: forwarding.counters()["forward_dropped"] > before["forward_dropped"], timeout=30,
                   message="the refused batch counted")
    finally:
        forwarding.stop(engine, forwarder)
    after = forwarding.counters()
    assert sink.refused == 1 and sink.received() == []  # 401 is not retried
    assert after["forward_errors"] - before["forward_errors"] == 1
    assert after["forward_dropped"] - before["forward_dropped"] == 1


def test_a_trace_larger_than_the_queue_still_goes_whole_and_a_full_queue_drops_whole_traces(sink):
    """The queue bound counts spans; a kept trace's new spans are taken whole while there is room at all."""
    from collector_worker.assembler import assemble
    from collector_worker.storage import blocks

    def block(trace_no, count):
        spans = [make_span(tid(trace_no), sid(1), None, 0, 100)] + \
                [make_span(tid(trace_no), sid(i), sid(1), i, i + 1) for i in range(2, count + 1)]
        a = assemble(spans)
        return blocks.encode(spans, a.depth, a.self_time_ns, a.critical_path), {s["span_id"] for s in spans}

    forwarder = forwarding.Forwarder(sink.url, queue_size=5, headers={"authorization": "Bearer s3cret"})
    forwarder.close()  # its thread stops: the queue fills as if the endpoint were slow
    before = forwarding.counters()
    forwarder.put_blocks([block(405, 8), block(406, 2)])  # 8 spans enter an empty queue of 5; then it is full
    assert forwarder.queued == 8
    assert forwarding.counters()["forward_dropped"] - before["forward_dropped"] == 2
    forwarder._run()  # what the thread does: send everything queued (stopping, it returns once empty)
    assert _keys(sink.received()) == Counter({(tid(405), sid(i)): 1 for i in range(1, 9)})
    assert forwarder.queued == 0
