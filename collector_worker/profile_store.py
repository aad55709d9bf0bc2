"""Profiles in the collector: decoded ``kind=profiles`` entries into the ``profiles`` table, and back out
as flame graphs (folded stacks) and top-functions tables.

A profile is stored once per (trace, span, name, mode); a redelivered entry inserts nothing. The stacks
are kept as zlib-compressed JSON, most samples first. Reading merges any number of profiles: their
folded stacks are added up, and each function's *self* samples (stacks where it is the leaf) and
*total* samples (stacks where it appears at all, counted once per stack however deep the recursion)
make the top-functions table.
"""

from __future__ import annotations

import json
import zlib
from collections import defaultdict
from typing import Any, Iterable, Mapping

from sqlalchemy.engine import Connection, Engine

from tracer.profile_codec import decode_profiles

from .storage import profiles as sql
from .storage.writer import write_lock

TOP_FUNCTIONS = 50  # rows of a top-functions table
STACKS_RETURNED = 2000  # folded stacks of one merged flame graph, most samples first; the rest are summed up
OTHER = "[other stacks]"


def pack_stacks(stacks: Iterable[tuple[str, int]]) -> bytes:
    return zlib.compress(json.dumps([[s, c] for s, c in stacks], separators=(",", ":")).encode(), 6)


def unpack_stacks(data: bytes) -> list[tuple[str, int]]:
    return [(s, int(c)) for s, c in json.loads(zlib.decompress(bytes(data)))]


def row_of(profile: Mapping[str, Any]) -> tuple:
    return (profile["trace_id"], profile["span_id"], profile["name"], profile["mode"], profile["service"][:255],
            profile["operation"], profile["start_ns"], profile["end_ns"], profile["interval_ns"],
            profile["samples"], profile["dropped"], pack_stacks(profile["stacks"]))


def read_entry(fields: Mapping[Any, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """The readable profiles of a ``kind=profiles`` entry and, if any row was refused, the dead-letter reason
    (the entry is then dead-lettered as it came, its readable profiles stored). Raises CodecError when the
    entry cannot be read at all."""
    decoded = decode_profiles(fields)
    reason = "; ".join(f"profile row {i}: {why}" for i, why in decoded.rejected[:3]) or None
    return decoded.profiles, reason


def store_entry(engine: Engine, profiles: list[Mapping[str, Any]]) -> int:
    """Insert the decoded profiles of one entry in one transaction; how many were new."""
    rows = [row_of(p) for p in profiles]
    with write_lock(engine), engine.begin() as conn:
        return sql.insert_rows(conn, rows)


def _summary(row: Any) -> dict[str, Any]:
    return {"trace_id": row.trace_id, "span_id": row.span_id, "name": row.name, "mode": row.mode,
            "service": row.service, "operation": row.operation, "start_ns": row.start_ns,
            "duration_ms": (row.end_ns - row.start_ns) / 1e6, "interval_ms": row.interval_ns / 1e6,
            "samples": row.samples, "dropped": row.dropped}


def merge(rows: Iterable[Any]) -> dict[str, Any]:
    """One flame graph and top-functions table of profile rows (with stacks)."""
    folded: dict[str, int] = defaultdict(int)
    samples = dropped = count = 0
    for row in rows:
        count += 1
        samples += row.samples
        dropped += row.dropped
        for stack, weight in unpack_stacks(row.stacks):
            folded[stack] += weight
    ordered = sorted(folded.items(), key=lambda item: (-item[1], item[0]))
    stacks = [{"stack": stack, "samples": weight} for stack, weight in ordered[:STACKS_RETURNED]]
    rest = sum(weight for _, weight in ordered[STACKS_RETURNED:])
    if rest:
        stacks.append({"stack": OTHER, "samples": rest})
    return {"profiles": count, "samples": samples, "dropped": dropped, "stacks": stacks,
            "functions": top_functions(ordered)}


def top_functions(stacks: Iterable[tuple[str, int]], limit: int = TOP_FUNCTIONS) -> list[dict[str, Any]]:
    """Functions by self samples (leaf of the stack), then total samples (anywhere in it)."""
    own: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    all_samples = 0
    for stack, weight in stacks:
        frames = stack.split(";")
        all_samples += weight
        own[frames[-1]] += weight
        for frame in set(frames):
            total[frame] += weight
    ranked = sorted(total, key=lambda f: (-own.get(f, 0), -total[f], f))[:limit]
    return [{"function": f, "self_samples": own.get(f, 0), "total_samples": total[f],
             "self_pct": round(100.0 * own.get(f, 0) / all_samples, 2) if all_samples else 0.0,
             "total_pct": round(100.0 * total[f] / all_samples, 2) if all_samples else 0.0} for f in ranked]


def of_trace(conn: Connection, trace_id: str, span_id: str | None = None) -> list[dict[str, Any]]:
    """Each profile of a trace (of one span) with its flame graph and top functions."""
    return [{**_summary(row), **{k: v for k, v in merge([row]).items() if k in ("stacks", "functions")}}
            for row in sql.of_trace(conn, trace_id, span_id)]


def aggregate(conn: Connection, since_ns: int, until_ns: int, operation: str | None = None,
              service: str | None = None, limit: int = 1000) -> dict[str, Any]:
    """The profiles of an operation (and/or service) in a window merged into one flame graph; the latest
    ``limit`` profiles count."""
    rows = sql.matching(conn, since_ns, until_ns, operation, service, limit)
    merged = merge(rows)
    merged["traces"] = sorted({row.trace_id for row in rows})[:20]
    return merged


def hot_functions(conn: Connection, since_ns: int, until_ns: int, operation: str, service: str | None = None,
                  limit: int = 200) -> list[dict[str, Any]]:
    """The top functions of an operation's recent profiles (for bottleneck hints)."""
    rows = sql.matching(conn, since_ns, until_ns, operation, service, limit)
    return merge(rows)["functions"] if rows else []
