"""The wire format of profile entries: the ``profiles`` kind of stream entry (see :mod:`tracer.codec`).

A profiles entry has the fields of a span entry plus ``kind``::

    v     format version (b"1"), as for spans
    kind  b"profiles"
    enc   encoding of ``data``, as for spans
    n     number of profiles in the batch
    data  ``{"resources": [[service, {attrs}], ...], "profiles": [row, ...]}``

Each row is the sampling profile of one span (or of one ``tracing.profile`` block inside it)::

    [trace_id, span_id, operation, name, mode, resource_index, start_ns, end_ns, interval_ns,
     samples, stacks, dropped]

``operation`` is the span's name, ``name`` the profile's, ``mode`` ``explicit`` (``tracing.profile``)
or ``slow`` (the continuous sampling of spans slower than a threshold). ``stacks`` is a list of
``[folded, count]``: ``folded`` is the stack root first, one frame per ``;``-separated part
(``qualified.name (file.py:line)``), ``count`` how many samples found it. ``samples`` counts every
sample taken, ``dropped`` those whose stack was left out to keep the profile within its bounds.

Decoding yields plain dicts; rows that are individually invalid are listed with a reason, an entry
that cannot be read at all raises :class:`tracer.codec.CodecError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from . import codec, row_entries
from .codec import CodecError

KIND = "profiles"
MODES = ("explicit", "slow")
MAX_NAME = 255
MAX_STACKS = 1000  # distinct stacks per profile
MAX_STACK_CHARS = 8192  # characters of one folded stack
MAX_PROFILE_CHARS = 256 * 1024  # characters of all folded stacks of one profile
_ROW_LEN = 12
_MODES = frozenset(MODES)


@dataclass
class DecodedProfiles:
    profiles: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row index, reason)


def encode_profiles(rows: Sequence[Sequence[Any]], resources: Sequence[tuple[str, Mapping[str, Any]]],
                    encoding: str = "msgpack") -> dict[bytes, bytes]:
    """Rows and their resources as the fields of one ``kind=profiles`` stream entry."""
    return row_entries.encode_rows(KIND, "profiles", rows, resources, encoding)


def is_profiles_entry(fields: Mapping[Any, Any]) -> bool:
    """True for a ``kind=profiles`` entry; raises CodecError for a kind no collector of this version knows."""
    return codec.entry_kind(fields) == KIND


def decode_profiles(fields: Mapping[Any, Any],
                    max_decompressed: int = codec.MAX_DECOMPRESSED_BYTES) -> DecodedProfiles:
    """Decode a ``kind=profiles`` entry; raises :class:`CodecError` (and nothing else) when it is unreadable."""
    rows, rejected = row_entries.decode_rows(fields, KIND, "profiles", _decode_row, max_decompressed,
                                             wrong_kind="entry does not hold profiles", unit="profile")
    return DecodedProfiles(profiles=rows, rejected=rejected)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2 ** 63:
        raise CodecError(f"{what} must be a count (integer >= 0), not {value!r}")
    return value


def _name(value: Any, what: str, required: bool) -> str | None:
    if value is None or value == "":
        if required:
            raise CodecError(f"profile {what} must be a non-empty string")
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME:
        raise CodecError(f"profile {what} must be a string of at most {MAX_NAME} characters")
    return value


def _stacks(value: Any) -> list[tuple[str, int]]:
    if not isinstance(value, list) or len(value) > MAX_STACKS:
        raise CodecError(f"profile stacks must be a list of at most {MAX_STACKS}")
    stacks, chars = [], 0
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise CodecError("a profile stack must be [folded, count]")
        folded, count = item
        if not isinstance(folded, str) or not folded or len(folded) > MAX_STACK_CHARS:
            raise CodecError(f"a folded stack must be a non-empty string of at most {MAX_STACK_CHARS} characters")
        chars += len(folded)
        if chars > MAX_PROFILE_CHARS:
            raise CodecError(f"profile stacks hold more than {MAX_PROFILE_CHARS} characters")
        stacks.append((folded, _count(count, "stack count")))
    return stacks


def _decode_row(row: Any, resources: list[Any]) -> dict[str, Any]:
    if not isinstance(row, (list, tuple)) or len(row) != _ROW_LEN:
        raise CodecError(f"profile row must be a list of {_ROW_LEN} fields")
    (trace_id, span_id, operation, name, mode, resource_index, start_ns, end_ns, interval_ns, samples, stacks,
     dropped) = row
    if not codec.is_trace_id(trace_id) or not codec.is_span_id(span_id):
        raise CodecError(f"invalid profile ids {trace_id!r}/{span_id!r}")
    if mode not in _MODES:
        raise CodecError(f"invalid profile mode {mode!r} (one of {', '.join(MODES)})")
    if isinstance(resource_index, bool) or not isinstance(resource_index, int) \
            or not 0 <= resource_index < len(resources):
        raise CodecError(f"invalid resource index {resource_index!r}")
    service, resource = resources[resource_index]
    start_ns, end_ns = _count(start_ns, "profile start"), _count(end_ns, "profile end")
    if start_ns <= 0 or end_ns < start_ns:
        raise CodecError(f"invalid profile times {start_ns!r}..{end_ns!r}")
    return {"trace_id": trace_id, "span_id": span_id, "operation": _name(operation, "operation", False),
            "name": _name(name, "name", True), "mode": mode, "service": str(service),
            "resource": dict(resource or {}), "start_ns": start_ns, "end_ns": end_ns,
            "interval_ns": _count(interval_ns, "profile interval"), "samples": _count(samples, "sample count"),
            "stacks": _stacks(stacks), "dropped": _count(dropped, "dropped sample count")}
