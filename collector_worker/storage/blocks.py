"""Trace blocks: a finalized trace's spans, encoded once and compressed, read back as a unit.

A block is ``zstd(msgpack([...]))`` of one trace's spans in columns: span and
parent ids as bytes and indexes, times as offsets from the trace's first
start, service / name / kind / status / scope strings through a string table
of the block, resources once per distinct resource, the assembly results
(depth, self time, critical path) beside them. The search postings a trace
wrote are derived from its spans again when they must be deleted
(``block_store.postings_of``), so they are not stored twice.

Spans come out as the same row dicts the ``spans`` staging table yields
(``trace_id, span_id, parent_span_id, service, name, kind, start_ns, end_ns,
duration_ns, status_code, status_message, attributes, events, links, resource,
scope, received_ns, depth, self_time_ns, critical_path``) except that
attributes, events, links and resource are already parsed.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Iterable, NamedTuple

import msgpack
import zstandard

FORMAT = 1
LEVEL = 3  # zstd level: blocks are small, higher levels buy little and cost the finalizer CPU

_local = threading.local()


# Trained zstd dictionaries by dictionary id (see block_dictionary.py); a block's frame names its own.
dictionaries: dict[int, zstandard.ZstdCompressionDict] = {}


def _compressor(dictionary: zstandard.ZstdCompressionDict | None) -> zstandard.ZstdCompressor:
    """A compressor of this thread for ``dictionary`` (compressors are not thread-safe; they are reused)."""
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    key = dictionary.dict_id() if dictionary is not None else 0
    found = cache.get(key)
    if found is None:
        found = cache[key] = zstandard.ZstdCompressor(level=LEVEL, dict_data=dictionary) if dictionary is not None \
            else zstandard.ZstdCompressor(level=LEVEL)
    return found


def dictionary_id(data: bytes) -> int:
    """The id of the dictionary a block was compressed with (0: none)."""
    return zstandard.get_frame_parameters(data).dict_id


def _decompress(data: bytes) -> bytes:
    dict_id = dictionary_id(data)
    cache = getattr(_local, "decompressors", None)
    if cache is None:
        cache = _local.decompressors = {}
    found = cache.get(dict_id)
    if found is None:
        if dict_id and dict_id not in dictionaries:
            raise LookupError(f"trace block compressed with dictionary {dict_id}, which is not loaded")
        found = cache[dict_id] = zstandard.ZstdDecompressor(dict_data=dictionaries[dict_id]) if dict_id \
            else zstandard.ZstdDecompressor()
    return found.decompress(data)


def _default(value: Any) -> Any:
    """What msgpack cannot hold is stored as JSON would have stored it (the staging rows are JSON)."""
    if isinstance(value, (set, frozenset)):
        return list(value)
    return str(value)


_json_cache: dict[str, Any] = {}
_UNREADABLE = object()  # cached for text that is not JSON: each field then gets its own default


def _parsed(value: Any, default: Any) -> Any:
    """A staging row's JSON text parsed (resources repeat: each text is parsed once per process)."""
    if not isinstance(value, str):
        return default if value is None else value
    if value in ("{}", "[]", ""):
        return default
    found = _json_cache.get(value)
    if found is None:
        try:
            found = json.loads(value)
        except ValueError:
            found = _UNREADABLE
        if len(_json_cache) > 4096:
            _json_cache.clear()
        _json_cache[value] = found
    return default if found is _UNREADABLE else found


def _hex_ids(ids: list[Any]) -> bytes | None:
    """All ids as one byte string when every id is 16 lowercase hex digits (the usual case), else None."""
    try:
        raw = bytes.fromhex("".join(ids))
    except (TypeError, ValueError):
        return None
    if len(raw) != 8 * len(ids) or raw.hex() != "".join(ids):
        return None
    return raw


def encode(spans: list[dict[str, Any]], depth: dict[str, int], self_time_ns: dict[str, int],
           critical: set[str], dictionary: zstandard.ZstdCompressionDict | None = None) -> bytes:
    """One block of ``spans`` (row dicts or decoded spans, span ids unique) with their assembly results."""
    return compress(pack(spans, depth, self_time_ns, critical), dictionary)


def compress(body: bytes, dictionary: zstandard.ZstdCompressionDict | None = None) -> bytes:
    """A packed block body compressed (with ``dictionary`` when given; its id goes into the frame)."""
    return _compressor(dictionary).compress(body)


def compressor(dictionary: zstandard.ZstdCompressionDict | None = None) -> Callable[[bytes], bytes]:
    """:func:`compress` with ``dictionary`` for this thread, looked up once for many blocks (a batch's)."""
    return _compressor(dictionary).compress


def pack(spans: list[dict[str, Any]], depth: dict[str, int], self_time_ns: dict[str, int],
         critical: set[str]) -> bytes:
    """The uncompressed msgpack body of a block (what dictionaries are trained on)."""
    refs: dict[Any, int] = {}
    ref = refs.setdefault  # a string's index in the block's table: its first position
    resource_refs: dict[Any, int] = {}
    resources: list[Any] = []
    base = min([s["start_ns"] for s in spans])
    ids = [s["span_id"] for s in spans]
    position = {span_id: i for i, span_id in enumerate(ids)}
    parents = [None if not p else position.get(p, p) for p in [s.get("parent_span_id") for s in spans]]
    services = [ref(s.get("service") or "unknown_service", len(refs)) for s in spans]
    names = [ref(s.get("name") or "", len(refs)) for s in spans]
    kinds = [ref(s.get("kind") or "internal", len(refs)) for s in spans]
    statuses = [ref(s.get("status_code") or "unset", len(refs)) for s in spans]
    scopes = [None if (sc := s.get("scope")) is None else ref(sc, len(refs)) for s in spans]
    messages = [s.get("status_message") or None for s in spans]
    starts = [s["start_ns"] - base for s in spans]
    durations = [s["end_ns"] - s["start_ns"] for s in spans]
    attributes = [a if type(a := s.get("attributes")) is dict else _parsed(a, {}) for s in spans]
    events = [e if type(e := s.get("events")) is list else _parsed(e, []) for s in spans]
    links = [k if type(k := s.get("links")) is list else _parsed(k, []) for s in spans]
    received = [(s.get("received_ns") or base) - base for s in spans]
    resource_col = []
    for s in spans:
        resource = s.get("resource")
        key = resource if isinstance(resource, str) else id(resource)
        index = resource_refs.get(key)
        if index is None:
            index = resource_refs[key] = len(resources)
            resources.append(_parsed(resource, {}))
        resource_col.append(index)
    depths = [depth.get(i, 0) for i in ids]
    selfs = [self_time_ns.get(i, 0) for i in ids]
    crit = [i in critical for i in ids]
    strings = list(refs)
    packed_ids = _hex_ids(ids)
    body = [FORMAT, spans[0]["trace_id"], base, strings, resources, packed_ids if packed_ids is not None else ids,
            parents, services, names, kinds, statuses, messages, starts, durations, attributes, events, links,
            resource_col, scopes, received, depths, selfs, crit]
    return _packb(body)


def _packb(body: list) -> bytes:
    """``msgpack.packb(body, default=_default, use_bin_type=True)``, by a packer of this thread without
    ``default`` first (packers are not thread-safe; reusing one and skipping the default hook costs less).
    A value only ``default`` can pack fails that packer (TypeError, or OverflowError for a huge int), so
    whatever it packs is what packb would have made; the rest goes through packb."""
    packer = getattr(_local, "packer", None)
    if packer is None:
        packer = _local.packer = msgpack.Packer(use_bin_type=True)
    try:
        return packer.pack(body)
    except (TypeError, OverflowError):
        return msgpack.packb(body, default=_default, use_bin_type=True)


class Columns(NamedTuple):
    """A block's body as read: one list per span field, span ``i`` at index ``i`` of each."""

    format: int
    trace_id: str
    base: int  # starts and received times are offsets from this
    strings: list  # service / name / kind / status / scope columns index into it
    resources: list  # resource_col indexes into it
    ids: Any  # span ids: list of hex strings, or the 8-byte ids concatenated
    parents: list  # index into ids, or the parent id itself when not in the block, or None
    services: list
    names: list
    kinds: list
    statuses: list
    messages: list
    starts: list
    durations: list
    attributes: list
    events: list
    links: list
    resource_col: list
    scopes: list
    received: list
    depths: list
    selfs: list
    crit: list


def columns(data: bytes) -> Columns:
    """The columns of a block, span ids as hex strings (readers that build their own span shape start here)."""
    body = msgpack.unpackb(_decompress(data), raw=False, strict_map_key=False)
    if not body or body[0] != FORMAT:
        raise ValueError(f"unknown trace block format {body[0] if body else None!r}")
    found = Columns(*body)
    if isinstance(found.ids, bytes):
        hexed = found.ids.hex()
        found = found._replace(ids=[hexed[i:i + 16] for i in range(0, len(hexed), 16)])
    return found


def decode(data: bytes) -> list[dict[str, Any]]:
    """The spans of a block as row dicts (attributes, events, links and resource parsed)."""
    (_, trace_id, base, strings, resources, ids, parents, services, names, kinds, statuses, messages, starts,
     durations, attributes, events, links, resource_col, scopes, received, depths, selfs, crit) = columns(data)
    out = []
    append = out.append
    for i, span_id in enumerate(ids):
        parent = parents[i]
        start = base + starts[i]
        duration = durations[i]
        scope = scopes[i]
        append({
            "trace_id": trace_id, "span_id": span_id,
            "parent_span_id": ids[parent] if type(parent) is int else parent,
            "service": strings[services[i]], "name": strings[names[i]], "kind": strings[kinds[i]],
            "start_ns": start, "end_ns": start + duration, "duration_ns": duration,
            "status_code": strings[statuses[i]], "status_message": messages[i], "attributes": attributes[i],
            "events": events[i], "links": links[i], "resource": resources[resource_col[i]],
            "scope": None if scope is None else strings[scope], "received_ns": base + received[i],
            "depth": depths[i], "self_time_ns": selfs[i], "critical_path": crit[i],
        })
    return out


def span_ids(data: bytes) -> set[str]:
    """The span ids a block holds (ingest skips redelivered spans already compacted)."""
    return set(columns(data).ids)


def merge(block_spans: Iterable[dict[str, Any]], staged: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A trace's spans from its block and its staging rows; a span id already in the block keeps that copy."""
    out = list(block_spans)
    seen = {s["span_id"] for s in out}
    for span in staged:
        if span["span_id"] not in seen:
            seen.add(span["span_id"])
            out.append(span)
    return out
