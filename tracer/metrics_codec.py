"""The wire format of metric entries: the ``metrics`` kind of stream entry (see :mod:`tracer.codec`).

A metrics entry has the fields of a span entry plus ``kind``::

    v     format version (b"1"), as for spans
    kind  b"metrics" (span entries have no kind field)
    enc   encoding of ``data``, as for spans
    n     number of metric points in the batch
    data  ``{"resources": [[service, {attrs}], ...], "metrics": [row, ...]}``

Each row is one data point of one series over one export interval::

    [name, kind, unit, description, resource_index, attributes, time_ns, value, exemplars]

``kind`` is ``counter`` (``value``: the increase over the interval, delta temporality), ``gauge``
(``value``: the last value set) or ``histogram`` (``value``: a base-2 exponential histogram of the
interval, as OpenTelemetry's ``ExponentialHistogramDataPoint``:
``{"count", "sum", "min", "max", "scale", "zero", "pos": [offset, [counts]], "neg": [offset, [counts]]}``).
``exemplars`` is ``[[trace_id, span_id, value, time_ns], ...]``: measurements taken inside a sampled span.

Decoding yields plain dicts; rows that are individually invalid are listed with a reason (the rest of
the entry is used), an entry that cannot be read at all raises :class:`tracer.codec.CodecError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from . import codec, row_entries
from .codec import CodecError

KIND = "metrics"
METRIC_KINDS = ("counter", "gauge", "histogram")
MAX_NAME = 255
MAX_UNIT = 64
MAX_DESCRIPTION = 1000
MAX_BUCKETS = 4096  # counts per side of one exponential histogram (the SDK keeps at most max_size)
MAX_EXEMPLARS = 16
_ROW_LEN = 9
_KINDS = frozenset(METRIC_KINDS)


@dataclass
class DecodedMetrics:
    points: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row index, reason)


def encode_metrics(rows: Sequence[Sequence[Any]], resources: Sequence[tuple[str, Mapping[str, Any]]],
                   encoding: str = "msgpack") -> dict[bytes, bytes]:
    """Rows and their resources as the fields of one ``kind=metrics`` stream entry."""
    return row_entries.encode_rows(KIND, "metrics", rows, resources, encoding)


def is_metrics_entry(fields: Mapping[Any, Any]) -> bool:
    """True for a ``kind=metrics`` entry; raises CodecError for a kind no collector of this version knows."""
    return codec.entry_kind(fields) == KIND


def decode_metrics(fields: Mapping[Any, Any],
                   max_decompressed: int = codec.MAX_DECOMPRESSED_BYTES) -> DecodedMetrics:
    """Decode a ``kind=metrics`` entry; raises :class:`CodecError` (and nothing else) when it is unreadable."""
    rows, rejected = row_entries.decode_rows(fields, KIND, "metrics", _decode_row, max_decompressed,
                                             wrong_kind="entry holds spans, not metrics", unit="point")
    return DecodedMetrics(points=rows, rejected=rejected)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CodecError(f"{what} must be a finite number, not {value!r}")
    return float(value)


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0 or value >= 2 ** 63:
        raise CodecError(f"{what} must be a count (integer >= 0), not {value!r}")
    return value


def _buckets(value: Any, side: str) -> tuple[int, list[int]]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise CodecError(f"histogram {side} buckets must be [offset, [counts]]")
    offset, counts = value
    if isinstance(offset, bool) or not isinstance(offset, int) or abs(offset) > 2 ** 31:
        raise CodecError(f"histogram {side} offset must be an integer, not {offset!r}")
    if not isinstance(counts, (list, tuple)) or len(counts) > MAX_BUCKETS:
        raise CodecError(f"histogram {side} counts must be a list of at most {MAX_BUCKETS}")
    return offset, [_count(c, f"histogram {side} bucket count") for c in counts]


def _histogram(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CodecError("histogram value must be a mapping")
    scale = value.get("scale")
    if isinstance(scale, bool) or not isinstance(scale, int) or not -10 <= scale <= 20:
        raise CodecError(f"histogram scale must be an integer from -10 to 20, not {scale!r}")
    histogram = {"count": _count(value.get("count"), "histogram count"), "sum": _number(value.get("sum"), "histogram sum"),
                 "scale": scale, "zero": _count(value.get("zero", 0), "histogram zero count"),
                 "pos": _buckets(value.get("pos", [0, []]), "positive"),
                 "neg": _buckets(value.get("neg", [0, []]), "negative")}
    for bound in ("min", "max"):
        histogram[bound] = _number(value[bound], f"histogram {bound}") if value.get(bound) is not None else None
    return histogram


def _exemplars(value: Any) -> list[list[Any]]:
    if not value:
        return []
    if not isinstance(value, list) or len(value) > MAX_EXEMPLARS:
        raise CodecError(f"exemplars must be a list of at most {MAX_EXEMPLARS}")
    out = []
    for item in value:
        if not isinstance(item, (list, tuple)) or len(item) != 4:
            raise CodecError("an exemplar must be [trace_id, span_id, value, time_ns]")
        trace_id, span_id, number, time_ns = item
        if not codec.is_trace_id(trace_id) or not codec.is_span_id(span_id):
            raise CodecError(f"invalid exemplar ids {trace_id!r}/{span_id!r}")
        out.append([trace_id, span_id, _number(number, "exemplar value"), _count(time_ns, "exemplar time")])
    return out


def _text(value: Any, what: str, limit: int, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise CodecError(f"metric {what} must be a non-empty string")
        return None
    if not isinstance(value, str):
        raise CodecError(f"metric {what} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise CodecError(f"metric {what} is longer than {limit} characters")
    return value


def _decode_row(row: Any, resources: list[Any]) -> dict[str, Any]:
    if not isinstance(row, (list, tuple)) or len(row) != _ROW_LEN:
        raise CodecError(f"metric row must be a list of {_ROW_LEN} fields")
    name, kind, unit, description, resource_index, attributes, time_ns, value, exemplars = row
    name = _text(name, "name", MAX_NAME, required=True)
    if kind not in _KINDS:
        raise CodecError(f"invalid metric kind {kind!r} (one of {', '.join(METRIC_KINDS)})")
    if not isinstance(attributes, dict):
        raise CodecError("metric attributes must be a mapping")
    if isinstance(resource_index, bool) or not isinstance(resource_index, int) \
            or not 0 <= resource_index < len(resources):
        raise CodecError(f"invalid resource index {resource_index!r}")
    service, resource = resources[resource_index]
    if isinstance(time_ns, bool) or not isinstance(time_ns, int) or time_ns <= 0 or time_ns >= 2 ** 63:
        raise CodecError(f"invalid point time {time_ns!r}")
    if kind == "histogram":
        value = _histogram(value)
    else:
        value = _number(value, f"{kind} value")
        if kind == "counter" and value < 0:
            raise CodecError(f"counter increase must not be negative, not {value!r}")
    description = description[:MAX_DESCRIPTION] if isinstance(description, str) else None
    return {"name": name, "kind": kind, "unit": _text(unit, "unit", MAX_UNIT) or "", "description": description,
            "service": str(service), "resource": dict(resource or {}), "attributes": attributes,
            "time_ns": time_ns, "value": value, "exemplars": _exemplars(exemplars)}
