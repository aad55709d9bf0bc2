"""The stream consumer against a real Redis server and real databases."""

from __future__ import annotations

import os
import sqlite3
import threading
import time

import pytest
import redis
from sqlalchemy import create_engine, func, select

from collector_worker import consumer as consumer_module
from collector_worker.consumer import StreamConsumer, ensure_group, run_consumer, stream_health, trim_stream
from collector_worker.settings import CollectorSettings
from collector_worker.storage import block_store, open_engine, queries, schema
from tests.support.servers import wait_until
from tests.support.streams import consumed
from tracer.codec import decode_entry, encode_batch, encode_span_dicts, span_row

def make_trace(spans: int = 10, service: str = "orders") -> list[dict]:
    """One trace that just happened (retention must not see it as old): a root and its children, fresh ids."""
    t0 = time.time_ns() - 2_000_000_000
    trace_id = os.urandom(16).hex()
    ids = [os.urandom(8).hex() for _ in range(spans)]
    return [{
        "trace_id": trace_id, "span_id": sid, "parent_span_id": None if i == 0 else ids[0],
        "name": "root" if i == 0 else f"step-{i}", "kind": "server" if i == 0 else "internal",
        "start_ns": t0 + i * 1000, "end_ns": t0 + 1_000_000 + i * 1000, "status_code": "ok",
        "service": service, "resource": {}, "attributes": {"i": i}, "events": [], "links": [],
    } for i, sid in enumerate(ids)]


def make_batches(entries: int, traces_per_entry: int = 5, spans_per_trace: int = 10) -> list[list[dict]]:
    return [[s for _ in range(traces_per_entry) for s in make_trace(spans_per_trace)] for _ in range(entries)]


def publish(client: redis.Redis, batches: list[list[dict]], stream: str = "contrail:spans") -> list[str]:
    pipe = client.pipeline(transaction=False)
    for batch in batches:
        pipe.xadd(stream, encode_span_dicts(batch))
    return [i.decode() for i in pipe.execute()]


def span_count(engine) -> int:
    with engine.connect() as conn:
        return len(block_store.all_spans(conn))


def trace_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(schema.traces)).scalar_one()


def settings_for(redis_url: str, database_url: str, **extra) -> CollectorSettings:
    values = {"redis_url": redis_url, "database_url": database_url, "consumer_name": "test-consumer",
              "block": 0.1, "quiet_period": 0.2}
    values.update(extra)
    return CollectorSettings.load(env={}, **values)


class RunningConsumer:
    """run_consumer in a thread of the test process, stopped and joined on exit."""

    def __init__(self, settings: CollectorSettings, engine):
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, args=(settings, engine), daemon=True)

    def _run(self, settings, engine):
        try:
            run_consumer(settings, stop_event=self.stop, engine=engine)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "consumer did not stop"
        assert not self.errors, self.errors


def test_spans_are_stored_acknowledged_and_traces_finalized(client, redis_url, database_url, engine):
    batches = make_batches(6)
    publish(client, batches)
    settings = settings_for(redis_url, database_url)
    with RunningConsumer(settings, engine):
        wait_until(lambda: span_count(engine) == 300, timeout=60, message="300 spans stored")
        wait_until(lambda: client.xpending(settings.stream, settings.consumer_group)["pending"] == 0,
                   message="all entries acknowledged")
        wait_until(lambda: trace_count(engine) == 30, timeout=30, message="30 traces finalized")


def test_redelivered_entry_changes_nothing(client, redis_url, database_url, engine):
    batch = make_trace(20)
    publish(client, [batch, batch])  # the same batch twice, as a redelivery would look
    settings = settings_for(redis_url, database_url)
    before = consumer_module.consumer_stats()
    with RunningConsumer(settings, engine):
        wait_until(lambda: consumer_module.consumer_stats()["acked"] - before["acked"] >= 2,
                   message="both entries acknowledged")
    after = consumer_module.consumer_stats()
    assert span_count(engine) == 20
    assert after["spans_stored"] - before["spans_stored"] == 20
    assert after["duplicates_skipped"] - before["duplicates_skipped"] == 20


def test_malformed_entry_is_dead_lettered_and_neighbours_stored(client, redis_url, sqlite_url, sqlite_engine):
    good_before, good_after = make_batches(1)[0], make_batches(1)[0]
    ids = publish(client, [good_before])
    bad_id = client.xadd("contrail:spans", {"v": "1", "enc": "msgpack", "n": "3", "data": b"\xc1garbage"}).decode()
    ids += publish(client, [good_after])
    settings = settings_for(redis_url, sqlite_url)
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: span_count(sqlite_engine) == 100, timeout=60, message="both good batches stored")
        wait_until(lambda: client.xlen(settings.dead_stream) == 1, message="one dead letter")
        wait_until(lambda: client.xpending(settings.stream, settings.consumer_group)["pending"] == 0,
                   message="all acknowledged")
    [(_, letter)] = client.xrange(settings.dead_stream)
    letter = {k.decode(): v for k, v in letter.items()}
    assert letter["reason"].decode().startswith("cannot decode msgpack data")
    assert letter["source_id"].decode() == bad_id
    assert letter["consumer"] == b"test-consumer"
    assert letter["deliveries"] == b"1"
    assert int(letter["dead_ns"]) > 0
    assert (letter["orig_v"], letter["orig_enc"], letter["orig_n"], letter["orig_data"]) == (
        b"1", b"msgpack", b"3", b"\xc1garbage")


def test_partly_bad_entry_stores_good_rows_and_dead_letters_the_rest(client, redis_url, sqlite_url, sqlite_engine):
    spans = make_trace(3)
    rows = [span_row(s["trace_id"], s["span_id"], s["parent_span_id"], s["name"], s["kind"], s["start_ns"],
                     s["end_ns"]) for s in spans]
    rows[1][0] = "not-a-trace-id"
    client.xadd("contrail:spans", encode_batch(rows, [("orders", {})]))
    settings = settings_for(redis_url, sqlite_url)
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: client.xlen(settings.dead_stream) == 1, message="a dead letter")
    with sqlite_engine.connect() as conn:
        stored = {s["span_id"] for s in block_store.all_spans(conn)}
    assert stored == {spans[0]["span_id"], spans[2]["span_id"]}
    [(_, letter)] = client.xrange(settings.dead_stream)
    reason = letter[b"reason"].decode()
    assert reason.startswith("rejected 1 of 3 spans: row 1: invalid trace id 'not-a-trace-id'")
    assert letter[b"scope"] == b"spans"
    # The letter holds the bad row alone, re-encoded as an entry: fixed, it can be added back.
    assert letter[b"orig_n"] == b"1"
    held = decode_entry({k[len(b"orig_"):]: v for k, v in letter.items() if k.startswith(b"orig_")})
    assert held.spans == [] and held.rejected_rows == [rows[1]]


def test_entries_of_a_dead_consumer_are_claimed(client, redis_url, database_url, engine):
    settings = settings_for(redis_url, database_url, claim_idle=0.2)
    ensure_group(client, settings)
    publish(client, make_batches(4))
    # A consumer that read everything and then died without acknowledging.
    client.xreadgroup(settings.consumer_group, "dead-one", {settings.stream: ">"}, count=10)
    assert client.xpending(settings.stream, settings.consumer_group)["pending"] == 4
    before = consumer_module.consumer_stats()["claimed"]
    with RunningConsumer(settings, engine):
        wait_until(lambda: span_count(engine) == 200, timeout=60, message="claimed entries stored")
        wait_until(lambda: client.xpending(settings.stream, settings.consumer_group)["pending"] == 0,
                   message="claimed entries acknowledged")
    assert consumer_module.consumer_stats()["claimed"] - before == 4


def test_entry_delivered_too_often_goes_to_dead_letters_alone(client, redis_url, sqlite_url, sqlite_engine):
    """Only the entry a collector stopped on is dead-lettered, not the valid entries that shared its batches."""
    settings = settings_for(redis_url, sqlite_url, claim_idle=0.1, max_deliveries=2)
    ensure_group(client, settings)
    poison, *neighbours = publish(client, [make_trace(4), make_trace(5), make_trace(6)])
    for _ in range(3):  # three deliveries of the whole batch to consumers that never finished it
        client.xreadgroup(settings.consumer_group, "crashing-one", {settings.stream: "0" if _ else ">"}, count=3)
    # The last of them was trying the poison entry alone when it stopped (see StreamConsumer._try_alone).
    marks = f"{settings.stream}:{settings.consumer_group}:on-trial"
    client.sadd(marks, poison)
    time.sleep(0.2)
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: client.xlen(settings.dead_stream) == 1, message="dead letter of the poison entry")
        wait_until(lambda: client.xpending(settings.stream, settings.consumer_group)["pending"] == 0,
                   message="all three entries acknowledged")
        wait_until(lambda: span_count(sqlite_engine) == 11, message="the neighbours stored")
    [(_, letter)] = client.xrange(settings.dead_stream)
    assert letter[b"reason"] == b"delivered 4 times; a collector stopped while it was tried alone"
    assert letter[b"source_id"].decode() == poison
    assert letter[b"deliveries"] == b"4"  # three earlier deliveries plus the claim
    assert client.scard(marks) == 0
    assert len(neighbours) == 2


def test_trim_never_drops_unread_or_unacknowledged_entries(client, redis_url, sqlite_url):
    settings = settings_for(redis_url, sqlite_url)
    ensure_group(client, settings)
    ids = publish(client, make_batches(10, traces_per_entry=1, spans_per_trace=1))
    read = client.xreadgroup(settings.consumer_group, "a", {settings.stream: ">"}, count=6)
    delivered = [i.decode() for i, _ in read[0][1]]
    assert delivered == ids[:6]
    client.xack(settings.stream, settings.consumer_group, ids[0], ids[1], ids[3])  # ids[2] still pending

    assert trim_stream(client, settings) == 2
    assert [i.decode() for i, _ in client.xrange(settings.stream)] == ids[2:]

    # A second group that has read nothing holds everything.
    client.xgroup_create(settings.stream, "other-readers", id="0")
    client.xack(settings.stream, settings.consumer_group, *ids[2:6])
    assert trim_stream(client, settings) == 0
    client.xgroup_destroy(settings.stream, "other-readers")

    # With nothing pending, only what was delivered and acknowledged goes; unread entries stay.
    assert trim_stream(client, settings) == 4
    assert [i.decode() for i, _ in client.xrange(settings.stream)] == ids[6:]
    rest = client.xreadgroup(settings.consumer_group, "a", {settings.stream: ">"}, count=10)
    assert [i.decode() for i, _ in rest[0][1]] == ids[6:]


def test_consumer_trims_only_what_it_stored(client, redis_url, sqlite_url, sqlite_engine):
    settings = settings_for(redis_url, sqlite_url)
    publish(client, make_batches(8))
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: span_count(sqlite_engine) == 400, timeout=60, message="all stored")
        wait_until(lambda: client.xlen(settings.stream) == 0, timeout=30, message="stream trimmed")


def test_stream_health_reports_backlog(client, redis_url, sqlite_url):
    settings = settings_for(redis_url, sqlite_url)
    empty = stream_health(client, settings)
    assert (empty["stream_length"], empty["pending"], empty["lag"], empty["dead_letters"]) == (0, 0, 0, 0)
    ensure_group(client, settings)
    ids = publish(client, make_batches(5, traces_per_entry=1, spans_per_trace=1))
    client.xreadgroup(settings.consumer_group, "busy", {settings.stream: ">"}, count=2)
    client.xadd(settings.dead_stream, {"reason": "x"})
    health = stream_health(client, settings)
    assert health["stream_length"] == 5
    assert health["pending"] == 2
    assert health["lag"] == 3
    assert health["dead_letters"] == 1
    assert health["last_entry_id"] == ids[-1]
    assert [(c["name"], c["pending"]) for c in health["consumers"]] == [("busy", 2)]
    assert health["oldest_pending_idle_ms"] >= 0


def test_database_outage_keeps_entries_pending_until_it_returns(client, redis_url, sqlite_url):
    """A database that refuses writes must not lose or dead-letter the batch in hand."""
    open_engine(sqlite_url).dispose()  # schema
    engine = create_engine(sqlite_url, connect_args={"timeout": 0.1})  # gives up on a lock quickly
    settings = settings_for(redis_url, sqlite_url)
    ensure_group(client, settings)
    publish(client, make_batches(2))
    consumer = StreamConsumer(settings, engine, client, "test-consumer")
    entries = consumer.read_new()
    assert len(entries) == 2
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
    try:
        with pytest.raises(consumer_module.StorageUnavailable):
            consumer.process(entries)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert client.xpending(settings.stream, settings.consumer_group)["pending"] == 2
    assert client.xlen(settings.dead_stream) == 0
    assert consumer.held == entries
    consumer.process(consumer.held)
    assert span_count(engine) == 100
    assert client.xpending(settings.stream, settings.consumer_group)["pending"] == 0
    assert consumer.held == []
    engine.dispose()


def test_consumer_runs_retention_in_the_background(client, redis_url, sqlite_url, sqlite_engine):
    old = make_trace(3)
    for span in old:
        span["start_ns"] -= 2 * 86400 * 10**9
        span["end_ns"] -= 2 * 86400 * 10**9
    fresh = make_trace(2)
    publish(client, [old, fresh])
    settings = settings_for(redis_url, sqlite_url, retention="1d", retention_interval="200ms")
    before = consumer_module.consumer_stats()["retention_runs"]
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: consumer_module.consumer_stats()["retention_runs"] > before
                   and span_count(sqlite_engine) == 2, timeout=60, message="old spans deleted by retention")
    with sqlite_engine.connect() as conn:
        left = {s["span_id"] for s in block_store.all_spans(conn)}
    assert left == {s["span_id"] for s in fresh}


def test_nul_characters_in_attributes_are_stored_and_finalized(client, redis_url, database_url, engine):
    """PostgreSQL text cannot hold NUL: search tags and LLM usage keys made from attributes replace it, so
    the entry is not dead-lettered and its traces' finalization is not refused again and again."""
    trace, other = make_trace(3), make_trace(2)
    trace[1]["attributes"] = {"tag": "a\x00b", "k\x00": "v"}
    trace[2]["attributes"] = {"gen_ai.operation.name": "chat", "gen_ai.request.model": "m\x00", "user.id": "u\x00",
                              "gen_ai.agent.name": "x\x00", "gen_ai.usage.input_tokens": 3,
                              "gen_ai.usage.output_tokens": 1}
    publish(client, [trace + other])
    settings = settings_for(redis_url, database_url)
    with RunningConsumer(settings, engine):
        wait_until(lambda: trace_count(engine) == 2, timeout=60, message="both traces finalized")
    assert span_count(engine) == 5
    assert client.xlen(settings.dead_stream) == 0
    with engine.connect() as conn:
        tagged = {pair for pair in [("tag", "a\ufffdb"), ("k\ufffd", "v"), ("gen_ai.request.model", "m\ufffd")]
                  if [t["trace_id"] for t in queries.search_traces(conn, queries.TraceQuery(
                      tags=[(pair[0], "=", pair[1])]))["traces"]] == [trace[0]["trace_id"]]}
        usage = conn.execute(select(schema.llm_usage.c.model, schema.llm_usage.c.user_id, schema.llm_usage.c.agent,
                                    schema.llm_usage.c.calls).where(schema.llm_usage.c.resolution == 60)).all()
        left = conn.execute(select(func.count()).select_from(schema.pending_traces)).scalar_one()
    assert tagged == {("tag", "a\ufffdb"), ("k\ufffd", "v"), ("gen_ai.request.model", "m\ufffd")}
    assert [tuple(u) for u in usage] == [("m\ufffd", "u\ufffd", "x\ufffd", 1)]
    assert left == 0


def test_traces_of_spans_stored_before_ingest_bounds_are_finalized(client, redis_url, database_url, engine):
    """Two traces whose durations add up beyond a 64-bit integer in one trace-statistics row (spans near the
    end of time, stored directly as a collector without ingest bounds could have): the statistics saturate,
    so the batch holding them is not refused and every trace is finalized; nothing stays pending."""
    from collector_worker.storage.writer import store_spans

    huge = []
    for _ in range(2):  # short spans, one of them near the end of time: the trace lasts about 230 years
        trace = make_trace(2)
        trace[1]["start_ns"], trace[1]["end_ns"] = 2**63 - 10**6, 2**63 - 1
        huge += trace
    with engine.begin() as conn:
        store_spans(conn, huge, time.time_ns())
    normal = make_batches(1, traces_per_entry=20, spans_per_trace=3)[0]
    publish(client, [normal])
    settings = settings_for(redis_url, database_url)
    with RunningConsumer(settings, engine):
        wait_until(lambda: span_count(engine) == 64, timeout=60, message="spans stored")
        with engine.connect() as conn:
            wait_until(lambda: conn.execute(select(func.count()).select_from(schema.pending_traces)).scalar_one() == 0
                       and trace_count(engine) == 22, timeout=60, message="traces finalized")
            conn.rollback()
    assert client.xlen(settings.dead_stream) == 0


def test_stopped_consumers_holding_nothing_are_pruned(client, redis_url, sqlite_url):
    """Idle consumers without pending entries go; one holding entries, a recent one and our own name stay."""
    settings = settings_for(redis_url, sqlite_url)
    assert consumer_module.prune_consumers(client, settings, idle_ms=0) == []  # no group yet: nothing to do
    ensure_group(client, settings)
    ids = publish(client, make_batches(3, traces_per_entry=1, spans_per_trace=1))
    group, stream = settings.consumer_group, settings.stream
    done = client.xreadgroup(group, "stopped-empty", {stream: ">"}, count=1)[0][1][0][0]
    client.xack(stream, group, done)
    client.xreadgroup(group, "stopped-busy", {stream: ">"}, count=1)  # delivered, never acknowledged
    client.xreadgroup(group, settings.resolved_consumer_name, {stream: ">"}, count=1)
    client.xack(stream, group, ids[2])
    time.sleep(0.3)
    client.xgroup_createconsumer(stream, group, "recent")  # a collector that has just joined
    assert consumer_module.prune_consumers(client, settings, idle_ms=200) == ["stopped-empty"]
    names = {c["name"].decode() for c in client.xinfo_consumers(stream, group)}
    assert names == {"stopped-busy", settings.resolved_consumer_name, "recent"}
    assert client.xpending(stream, group)["pending"] == 1  # the busy one's entry is still there to claim


def test_sharded_collector_reads_every_shard_and_the_unsharded_stream(client, redis_url, sqlite_url, sqlite_engine):
    """On a single Redis with three shards: entries of each shard, and of a producer still writing the unsharded
    stream, are all stored, acknowledged and finalized; a dead letter lands beside its own shard."""
    settings = settings_for(redis_url, sqlite_url, stream_shards=3)
    for index in range(3):
        publish(client, make_batches(2), stream=f"contrail:spans:{{{index}}}")
    publish(client, make_batches(2), stream="contrail:spans")
    client.xadd("contrail:spans:{1}", {b"v": b"1", b"enc": b"msgpack", b"n": b"1", b"data": b"\xc1"})
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: span_count(sqlite_engine) == 4 * 100, timeout=60, message="every stream stored")
        wait_until(lambda: trace_count(sqlite_engine) == 4 * 10, timeout=60, message="every trace finalized")
        wait_until(lambda: client.xlen("contrail:spans:{1}:dead") == 1, message="the dead letter of shard 1")
    health = stream_health(client, settings)
    assert [s["stream"] for s in health["shards"]] == ["contrail:spans:{0}", "contrail:spans:{1}",
                                                       "contrail:spans:{2}", "contrail:spans"]
    assert health["pending"] == health["lag"] == 0 and health["dead_letters"] == 1
    assert health["stream_length"] == sum(s["stream_length"] for s in health["shards"])
    assert client.xlen("contrail:spans:dead") == 0


def test_metric_entries_of_two_shards_with_the_same_id_are_both_stored(client, redis_url, sqlite_url, sqlite_engine):
    """Entry ids are unique per stream only: two shards (two cluster nodes, one clock) can hand out the same id."""
    from collector_worker.metrics_store import list_metrics
    from tracer.metrics_codec import encode_metrics

    settings = settings_for(redis_url, sqlite_url, stream_shards=2)
    now = time.time_ns()
    for index, name in enumerate(("shard_zero_total", "shard_one_total")):
        fields = encode_metrics([[name, "counter", "", "", 0, {}, now, 1.0, []]], [("svc", {})])
        client.xadd(f"contrail:spans:{{{index}}}", fields, id="1-1")
    with RunningConsumer(settings, sqlite_engine):
        wait_until(lambda: all(consumed(client, f"contrail:spans:{{{i}}}", settings.consumer_group, "1-1")
                               for i in range(2)), message="both entries acknowledged")
    with sqlite_engine.connect() as conn:
        names = {item["name"] for item in list_metrics(conn, now - 3600 * 10**9)}
    assert names == {"shard_zero_total", "shard_one_total"}
