"""One way to build a Redis client from a URL: a single server, or a Redis Cluster.

``redis://`` and ``rediss://`` (and ``unix://``) URLs give a ``redis.Redis``;
``redis+cluster://host:port`` and ``rediss+cluster://`` give a
``redis.cluster.RedisCluster`` that discovers the cluster from that node (list
several as ``host1:port1,host2:port2`` so any one of them may be down at
start). Every process that talks to the span stream builds its clients here,
so both kinds are accepted wherever a Redis URL is.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str | None) -> bool:
    """True for a ``redis+cluster://`` or ``rediss+cluster://`` URL."""
    return bool(url) and urlsplit(url).scheme.lower() in CLUSTER_SCHEMES


def connect(url: str, **options: Any) -> Any:
    """A client for ``url``: ``redis.Redis`` for one server, ``RedisCluster`` for a cluster URL.

    ``options`` are passed on (socket timeouts, ``retry``, ``health_check_interval``, ...).
    """
    if not is_cluster_url(url):
        return redis.Redis.from_url(url, **options)
    from redis.cluster import ClusterNode, RedisCluster

    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES[parts.scheme.lower()]
    credentials, _, hosts = parts.netloc.rpartition("@")
    addresses = [h.strip() for h in hosts.split(",") if h.strip()]
    if not addresses:
        raise ValueError(f"{parts.scheme} URL names no host")
    path = parts.path.strip("/")
    if path not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, not {path!r}")
    first = urlunsplit((scheme, (credentials + "@" if credentials else "") + addresses[0], "", parts.query, ""))
    nodes = [_node(address, ClusterNode) for address in addresses[1:]]
    if nodes:
        options = {**options, "startup_nodes": [_node(addresses[0], ClusterNode)] + nodes}
    return RedisCluster.from_url(first, **options)


def _node(address: str, node_type: Any) -> Any:
    host, _, port = address.rpartition(":")
    if not host:
        host, port = address, "6379"
    try:
        return node_type(host.strip("[]"), int(port))
    except ValueError:
        raise ValueError(f"invalid Redis Cluster node address {address!r}: use host:port") from None


def is_cluster(client: Any) -> bool:
    """True when ``client`` talks to a Redis Cluster."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)
