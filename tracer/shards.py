"""Which stream shard an entry goes to, and the shards' names.

With ``stream_shards`` = 1 (the default) on a single Redis there is one
stream, ``<stream>``. With N > 1, or on a Redis Cluster, there are N shards,
``<stream>:{0}`` .. ``<stream>:{N-1}``: the braces are a Redis Cluster hash
tag, so a shard's stream, its dead-letter stream (``<stream>:{i}:dead``) and
its consumer group's keys share one hash slot and live on one node (the
collector acknowledges an entry and writes its dead letter in one MULTI), and
different shards can live on different nodes.

Producers (the tracer's exporter, the OTLP and Zipkin receivers) group the
spans of a batch by trace id, so a trace's spans go to one shard, and mark the
entry with that trace id in its ``route`` field; the entry's stream is
derived from it when it is written (also when replayed from the spool, so a
changed shard count still routes consistently). Entries without a route
(metrics) are spread by a checksum of their data. Collectors read every shard
and, on a single Redis with N > 1, the unsharded ``<stream>`` too, so entries
written before the switch (or by a producer still configured with one shard)
are not left behind.
"""

from __future__ import annotations

import zlib
from typing import Any, Mapping

from .redis_client import is_cluster_url

ROUTE_FIELD = b"route"


def shard_stream(stream: str, index: int) -> str:
    """The name of shard ``index`` of ``stream``."""
    return f"{stream}:{{{index}}}"


def is_sharded(settings: Any) -> bool:
    """Whether entries go to hash-tagged shard streams: with more than one shard, and always on a Redis Cluster
    (there even one shard needs the tag, so a stream and its dead letters share a slot)."""
    return settings.stream_shards > 1 or is_cluster_url(settings.redis_url)


def shard_streams(settings: Any) -> list[str]:
    """The streams producers write to: ``stream`` itself unsharded, else its shards."""
    if not is_sharded(settings):
        return [settings.stream]
    return [shard_stream(settings.stream, i) for i in range(settings.stream_shards)]


def consumed_streams(settings: Any) -> list[str]:
    """The streams collectors read: every shard, and on a single Redis with shards the unsharded stream too."""
    streams = shard_streams(settings)
    if settings.stream_shards > 1 and not is_cluster_url(settings.redis_url):
        streams.append(settings.stream)
    return streams


def trace_shard(trace_id: int | str, shards: int) -> int:
    """The shard of a trace id (an int, or 32 hex digits): both halves of the id count, so ids whose
    randomness is in either half spread evenly."""
    if shards <= 1:
        return 0
    value = trace_id if isinstance(trace_id, int) else int(trace_id, 16)
    return ((value >> 64) ^ value) % shards


def entry_shard(fields: Mapping[Any, Any], shards: int) -> int:
    """The shard of an encoded entry: by its ``route`` trace id, else by a checksum of its data."""
    if shards <= 1:
        return 0
    route = fields.get(ROUTE_FIELD) or fields.get("route")
    if route:
        try:
            return trace_shard(route.decode() if isinstance(route, bytes) else str(route), shards)
        except ValueError:
            pass
    data = fields.get(b"data") or fields.get("data") or b""
    return zlib.crc32(data if isinstance(data, bytes) else str(data).encode()) % shards


def entry_stream(settings: Any, fields: Mapping[Any, Any]) -> str:
    """The stream an encoded entry is written to."""
    if not is_sharded(settings):
        return settings.stream
    return shard_stream(settings.stream, entry_shard(fields, settings.stream_shards))


def trace_stream(settings: Any, trace_id: int | str) -> str:
    """The stream the spans of a trace are written to."""
    if not is_sharded(settings):
        return settings.stream
    return shard_stream(settings.stream, trace_shard(trace_id, settings.stream_shards))


def routed(fields: dict, trace_id: int | str) -> dict:
    """``fields`` with the ``route`` trace id set (as 32 hex digits)."""
    fields[ROUTE_FIELD] = (format(trace_id, "032x") if isinstance(trace_id, int) else trace_id).encode()
    return fields
