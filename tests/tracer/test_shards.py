"""Shard routing (tracer.shards) and the Redis client factory (tracer.redis_client), without a server."""

from __future__ import annotations

import os

import pytest
from redis.cluster import RedisCluster

from tracer import shards
from tracer.codec import encode_span_dicts
from tracer.export import RedisStreamExporter
from tracer.metrics_codec import encode_metrics
from tracer.redis_client import connect, is_cluster_url
from tracer.settings import TracerSettings


def span(trace_id: str) -> dict:
    return {"trace_id": trace_id, "span_id": os.urandom(8).hex(), "name": "op", "service": "svc",
            "start_ns": 1, "end_ns": 2}


def test_a_trace_id_picks_the_same_shard_as_int_and_as_hex_and_ids_spread():
    ids = [os.urandom(16).hex() for _ in range(3000)]
    assert all(shards.trace_shard(t, 3) == shards.trace_shard(int(t, 16), 3) for t in ids)
    counts = [sum(1 for t in ids if shards.trace_shard(t, 3) == i) for i in range(3)]
    assert min(counts) > 800  # about 1000 each
    # 64-bit ids (upper half zero) and ids random only in the upper half spread too
    assert {shards.trace_shard(format(i << 64, "032x"), 3) for i in range(1, 30)} == {0, 1, 2}
    assert {shards.trace_shard(format(i, "032x"), 3) for i in range(1, 30)} == {0, 1, 2}


def test_entries_go_to_the_shard_of_their_route_and_unrouted_ones_spread():
    settings = TracerSettings.load({}, stream_shards=4, redis_url="redis://127.0.0.1:6379/0")
    exporter = RedisStreamExporter(settings)
    for _ in range(20):
        trace_id = os.urandom(16).hex()
        fields = shards.routed(encode_span_dicts([span(trace_id), span(trace_id)]), trace_id)
        assert exporter.stream_of(fields) == shards.trace_stream(settings, trace_id) == \
            f"contrail:spans:{{{shards.trace_shard(trace_id, 4)}}}"
    metric_entries = [encode_metrics([["m", "gauge", "", "", 0, {"n": i}, 1, 1.0, []]], [("svc", {})])
                      for i in range(40)]
    assert len({exporter.stream_of(fields) for fields in metric_entries}) > 1
    plain = RedisStreamExporter(TracerSettings.load({}, redis_url="redis://127.0.0.1:6379/0"))
    assert plain.stream_of(metric_entries[0]) == "contrail:spans"


def test_cluster_urls_build_a_cluster_client_and_plain_ones_a_single_client():
    assert is_cluster_url("redis+cluster://a:7000") and is_cluster_url("rediss+cluster://a:7000")
    assert not is_cluster_url("redis://a:6379/0") and not is_cluster_url("unix:///tmp/r.sock")
    with pytest.raises(ValueError, match="database 0"):
        connect("redis+cluster://127.0.0.1:7000/2")
    with pytest.raises(ValueError, match="host:port"):
        connect("redis+cluster://127.0.0.1:7000,127.0.0.1:x")
    assert not isinstance(connect("redis://127.0.0.1:1/0"), RedisCluster)
