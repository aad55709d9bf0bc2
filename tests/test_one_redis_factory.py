"""Every Redis client built from a URL is built by ``tracer.redis_client.connect`` (single server or cluster).

A client made with ``redis.Redis.from_url`` / ``redis.Redis(...)`` elsewhere would accept only single-server
URLs, so a ``redis+cluster://`` URL that works for the collector would fail in that one place. Read from the
source of the packages, the benchmarks and the scripts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("tracer", "collector_worker", "web", "contrail_cli", "contrail_demo", "bench", "scripts")
FACTORY = ROOT / "tracer" / "redis_client.py"
CLIENT_CLASSES = {"Redis", "StrictRedis", "RedisCluster"}


def client_constructions(tree: ast.AST) -> list[int]:
    """Lines that call ``<x>.from_url(...)`` on a Redis class or construct a Redis client class directly."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "from_url":
            owner = func.value
            name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
            if name in CLIENT_CLASSES:
                lines.append(node.lineno)
        elif isinstance(func, ast.Attribute) and func.attr in CLIENT_CLASSES:
            if isinstance(func.value, ast.Name) and func.value.id in ("redis", "cluster"):
                lines.append(node.lineno)
        elif isinstance(func, ast.Name) and func.id in CLIENT_CLASSES:
            lines.append(node.lineno)
    return lines


def test_redis_clients_come_from_the_one_factory():
    found = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == FACTORY or "__pycache__" in path.parts:
                continue
            for line in client_constructions(ast.parse(path.read_text(encoding="utf-8"))):
                found.append(f"{path.relative_to(ROOT)}:{line}")
    assert found == [], "build Redis clients with tracer.redis_client.connect, not: " + ", ".join(found)


def test_the_scan_sees_what_it_looks_for():
    source = "import redis\na = redis.Redis.from_url(u)\nb = redis.Redis(port=1)\nc = Redis(host='x')\nd = f(u)\n"
    assert client_constructions(ast.parse(source)) == [2, 3, 4]
