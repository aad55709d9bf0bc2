"""Compact keys of the search postings: name ids from the ``names`` table, and tag value hashes.

Service, operation and tag key names are few and repeat on every trace, so a
posting holds a small integer for each; ids are assigned once and never
change or go away, so a process caches them for good. Tag values are many
and mostly unique: a posting holds a 64-bit hash of the value's string form
(a false match needs two values of one key to collide in 64 bits).
"""

from __future__ import annotations

import functools
import hashlib
import threading
import weakref
from typing import Iterable

from sqlalchemy.engine import Connection, Engine

from .schema import names

_caches: "weakref.WeakKeyDictionary[Engine, dict[str, int]]" = weakref.WeakKeyDictionary()
_caches_guard = threading.Lock()
_CHUNK = 500
# The reserved tag key a trace's span kinds are posted under (one posting per kind it holds), so a search
# by kind is a tag search; a span attribute of that name posts into the same key.
SPAN_KIND_KEY = "span.kind"


@functools.lru_cache(maxsize=16384)  # values repeat across traces (methods, routes, models); <= ~7 MB held
def tag_hash(value: str) -> int:
    """The signed 64-bit hash a tag value is posted and searched under."""
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "big", signed=True)


def _cache(engine: Engine) -> dict[str, int]:
    with _caches_guard:
        found = _caches.get(engine)
        if found is None:
            found = _caches[engine] = {}
        return found


def _mark(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


def _select(conn: Connection, wanted: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i:i + _CHUNK]
        marks = ",".join([_mark(conn)] * len(chunk))
        out.update((r[1], int(r[0])) for r in conn.exec_driver_sql(
            f"SELECT id, name FROM {names.name} WHERE name IN ({marks})", tuple(chunk)))
    return out


def add_names(conn: Connection, wanted: Iterable[str]) -> dict[str, int]:
    """Ids of ``wanted`` names, adding those the database lacks, inside the caller's write transaction.

    Nothing is cached here (the transaction may roll back); :func:`lookup` caches ids once committed.
    """
    wanted = sorted(set(wanted))
    if not wanted:
        return {}
    conn.exec_driver_sql(f"INSERT INTO {names.name} (name) VALUES ({_mark(conn)}) ON CONFLICT (name) DO NOTHING",
                         [(name,) for name in wanted])
    return _select(conn, wanted)


def known(engine: Engine) -> dict[str, int]:
    """The ids this process has cached for ``engine`` (committed, so they never change): what most
    traces' names need once a collector has run a while, without listing the names first."""
    return _cache(engine)


def lookup(conn: Connection, wanted: Iterable[str]) -> dict[str, int]:
    """Ids of the ``wanted`` names the database knows; an unknown name is absent.

    Only for a connection that has not added names in its open transaction: what it reads is committed,
    and ids never change once committed, so they are cached for good.
    """
    cache = _cache(conn.engine)
    wanted = list(wanted)
    missing = sorted({name for name in wanted if name not in cache})
    if missing:
        cache.update(_select(conn, missing))
    return {name: cache[name] for name in wanted if name in cache}


def names_of(conn: Connection, ids: Iterable[int]) -> dict[int, str]:
    """Names of ``ids``."""
    ids = sorted(set(ids))
    out: dict[int, str] = {}
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        marks = ",".join([_mark(conn)] * len(chunk))
        out.update((int(r[0]), r[1]) for r in conn.exec_driver_sql(
            f"SELECT id, name FROM {names.name} WHERE id IN ({marks})", tuple(chunk)))
    return out


def postings(operations, tags, ids: dict[str, int]) -> list[list]:
    """A trace's search postings ``[ops, tags, numbers]`` from its assembly's operations and tags.

    ops are ``(service_id, operation_id, error)``, tags ``(key_id, value_hash)``, numbers
    ``(key_id, value)``, each list sorted; raises KeyError when a name has no id in ``ids``.
    """
    return [sorted({(ids[svc[:255]], ids[op[:512]], bool(err)) for svc, op, err in operations}),
            sorted({(ids[k], tag_hash(v)) for k, v, _ in tags}),
            sorted({(ids[k], float(n)) for k, _, n in tags if n is not None})]


def names_in(operations, tags) -> set[str]:
    """The names :func:`postings` needs ids of."""
    wanted = {name for svc, op, _ in operations for name in (svc[:255], op[:512])}
    wanted.update(k for k, _, _ in tags)
    return wanted


def search_tags(assembly) -> list[tuple[str, str, float | None]]:
    """The tags an assembly is posted under: its span attributes and its span kinds (under ``SPAN_KIND_KEY``)."""
    return [*assembly.tags, *((SPAN_KIND_KEY, kind, None) for kind in assembly.kinds)]


# PostgreSQL keeps a trace's tag and operation postings as arrays of 64-bit keys in one row
# (``trace_search_keys``, GIN-indexed) instead of a row per posting: a heap row costs 28 bytes of
# header and line pointer whatever it holds. The keys pack the name id and the value:
TAG_VALUE_BITS = 40  # a tag key: key id in the high 24 bits, the value hash's low 40 bits
TAG_VALUE_MASK = (1 << TAG_VALUE_BITS) - 1
OP_SHIFT = 32  # an operation key: service id << 32 | operation id; a service alone: service id << 32;
# an operation alone (any service): its id (service 0, ids start at 1)


def tag_key(key_id: int, value_hash: int) -> int:
    """The array key of a tag posting (a false match needs two values of one key to collide in 40 bits)."""
    return _signed((int(key_id) << TAG_VALUE_BITS) | (int(value_hash) & TAG_VALUE_MASK))


def tag_key_marker(key_id: int) -> int:
    """The array key saying a trace has some value of ``key_id`` (value bits 0)."""
    return _signed(int(key_id) << TAG_VALUE_BITS)


def op_key(service_id: int, operation_id: int = 0) -> int:
    return (int(service_id) << OP_SHIFT) | int(operation_id)


def _signed(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def search_arrays(posted: list[list]) -> tuple[list[int], list[int], list[int]]:
    """A trace's postings ``[ops, tags, numbers]`` as the arrays of ``trace_search_keys``:
    (tag keys with a marker per key, operation keys with service and operation markers, error operations)."""
    ops, tags, _ = posted
    tag_keys = {tag_key(k, h) for k, h in tags} | {tag_key_marker(k) for k, _ in tags}
    op_keys = {op_key(s, o) for s, o, _ in ops} | {op_key(s) for s, _, _ in ops} | {op_key(0, o) for _, o, _ in ops}
    errors = {op_key(s, o) for s, o, e in ops if e}
    return sorted(tag_keys), sorted(op_keys), sorted(errors)
