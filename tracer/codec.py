"""The wire format between tracers and collectors: one stream entry per batch.

A stream entry has four fields::

    v     format version (b"1")
    enc   encoding of ``data``: b"msgpack", b"msgpack+zlib" or b"json"
    n     number of spans in the batch
    data  the encoded batch

The batch is ``{"resources": [[service, {attrs}], ...], "spans": [row, ...]}``
where each row is positional (compact and fast to encode)::

    [trace_id, span_id, parent_span_id, name, kind, start_ns, end_ns,
     status_code, status_message, resource_index, attributes, events, links, scope]

``events`` is ``[[name, time_ns, {attrs}], ...]`` and ``links`` is
``[[trace_id, span_id, {attrs}], ...]``. Decoding yields plain dicts (see
:func:`decode_entry`; the spans of one entry with the same resource share one
``resource`` mapping, which callers must not modify); a batch that cannot be decoded raises
:class:`CodecError`, and single bad spans are reported, not fatal, so the
collector can dead-letter exactly what it could not read.
"""

from __future__ import annotations

import json
import re
import zlib
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import msgpack

FORMAT_VERSION = 1
ENCODINGS = ("msgpack", "msgpack+zlib", "json")
KINDS = ("internal", "server", "client", "producer", "consumer")
STATUS_CODES = ("unset", "ok", "error")
COMPRESS_ABOVE = 64 * 1024  # bytes of msgpack after which zlib pays for itself

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
_SPAN_ID = re.compile(r"^[0-9a-f]{16}$")
_ROW_LEN = 14
_KINDS = frozenset(KINDS)
_STATUS_CODES = frozenset(STATUS_CODES)


class CodecError(ValueError):
    """A stream entry that cannot be decoded; the message is the dead-letter reason."""


@dataclass
class DecodedEntry:
    spans: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)  # (row index, reason)


def is_trace_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_TRACE_ID.match(value)) and value != "0" * 32


def is_span_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_SPAN_ID.match(value)) and value != "0" * 16


# --------------------------------------------------------------------------- encode


def span_row(
    trace_id: str,
    span_id: str,
    parent_span_id: str | None,
    name: str,
    kind: str,
    start_ns: int,
    end_ns: int,
    status_code: str = "unset",
    status_message: str | None = None,
    resource_index: int = 0,
    attributes: Mapping[str, Any] | None = None,
    events: Sequence[Sequence[Any]] = (),
    links: Sequence[Sequence[Any]] = (),
    scope: str | None = None,
) -> list[Any]:
    """Build one positional span row; the exporter builds rows directly for speed."""
    return [trace_id, span_id, parent_span_id, name, kind, int(start_ns), int(end_ns), status_code,
            status_message, resource_index, dict(attributes or {}), [list(e) for e in events],
            [list(link) for link in links], scope]


def encode_batch(
    rows: Sequence[Sequence[Any]],
    resources: Sequence[tuple[str, Mapping[str, Any]]],
    encoding: str = "msgpack",
) -> dict[bytes, bytes]:
    """Encode rows and their resources as the fields of one stream entry."""
    payload = {"resources": [[service, dict(attrs)] for service, attrs in resources], "spans": list(rows)}
    if encoding == "json":
        data = json.dumps(payload, separators=(",", ":"), default=_json_default).encode()
    else:
        data = msgpack.packb(payload, use_bin_type=True, default=_msgpack_default)
        if encoding == "msgpack+zlib" or (encoding == "msgpack" and len(data) > COMPRESS_ABOVE):
            data, encoding = zlib.compress(data, 1), "msgpack+zlib"
    return {b"v": str(FORMAT_VERSION).encode(), b"enc": encoding.encode(), b"n": str(len(rows)).encode(),
            b"data": data}


def encode_spans(spans: Iterable[Mapping[str, Any]], encoding: str = "msgpack") -> dict[bytes, bytes]:
    """Encode span dicts (the shape :func:`decode_entry` returns); used by tests and the OTLP receiver."""
    resources: list[tuple[str, Mapping[str, Any]]] = []
    index: dict[Any, int] = {}
    rows = []
    for s in spans:
        resource = s.get("resource") or {}
        key = (s["service"], _freeze(resource))
        if key not in index:
            index[key] = len(resources)
            resources.append((s["service"], resource))
        rows.append(span_row(
            s["trace_id"], s["span_id"], s.get("parent_span_id"), s["name"], s.get("kind", "internal"),
            s["start_ns"], s["end_ns"], s.get("status_code", "unset"), s.get("status_message"), index[key],
            s.get("attributes") or {},
            [[e["name"], e["time_ns"], e.get("attributes") or {}] for e in s.get("events") or ()],
            [[link["trace_id"], link["span_id"], link.get("attributes") or {}] for link in s.get("links") or ()],
            s.get("scope"),
        ))
    return encode_batch(rows, resources, encoding)


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _msgpack_default(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# --------------------------------------------------------------------------- decode


def _field(fields: Mapping[Any, Any], name: str) -> Any:
    value = fields.get(name.encode())
    if value is None:
        value = fields.get(name)
    return value


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, (bytes, bytearray)) else str(value)


def decode_entry(fields: Mapping[Any, Any]) -> DecodedEntry:
    """Decode one stream entry into span dicts.

    Raises :class:`CodecError` when the entry as a whole is unreadable (unknown
    version or encoding, corrupt data, count mismatch). Rows that are
    individually invalid are listed in ``rejected`` with a reason.
    """
    version, encoding, count, data = (_field(fields, k) for k in ("v", "enc", "n", "data"))
    if version is None or encoding is None or data is None:
        raise CodecError("missing field: an entry needs v, enc, n and data")
    try:
        version_number = int(_text(version))
    except ValueError:
        raise CodecError(f"unreadable format version {version!r}") from None
    if version_number != FORMAT_VERSION:
        raise CodecError(f"unsupported format version {version_number} (this collector reads {FORMAT_VERSION})")
    encoding = _text(encoding)
    if isinstance(data, str):
        data = data.encode()
    try:
        if encoding == "json":
            payload = json.loads(data)
        elif encoding in ("msgpack", "msgpack+zlib"):
            if encoding == "msgpack+zlib":
                data = zlib.decompress(data)
            payload = msgpack.unpackb(data, raw=False, strict_map_key=False)
        else:
            raise CodecError(f"unknown encoding {encoding!r}")
    except CodecError:
        raise
    except Exception as exc:  # corrupt bytes: msgpack, zlib and json each raise their own types
        raise CodecError(f"cannot decode {encoding} data: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("spans"), list):
        raise CodecError("batch is not a mapping with a 'spans' list")
    resources = payload.get("resources") or []
    if not isinstance(resources, list):
        raise CodecError("batch 'resources' is not a list")
    rows = payload["spans"]
    if count is not None:
        try:
            expected = int(_text(count))
        except ValueError:
            raise CodecError(f"unreadable span count {count!r}") from None
        if expected != len(rows):
            raise CodecError(f"span count mismatch: header says {expected}, batch holds {len(rows)}")
    entry = DecodedEntry()
    spans, rejected = entry.spans, entry.rejected
    append = spans.append
    # (service, resource) per resource index, from the first row of the entry that used it: the spans of
    # one entry that share a resource share its mapping (one copy per entry instead of one per span).
    shared: dict[int, tuple[str, dict[str, Any]]] = {}
    match_trace, match_span = _TRACE_ID.match, _SPAN_ID.match
    zero_trace, zero_span = "0" * 32, "0" * 16
    for index, row in enumerate(rows):
        # The usual row is checked inline with the same tests as _decode_row; any other row (or one
        # whose events or links do not convert) goes through _decode_row for the exact rejection reason.
        if type(row) is list and len(row) == _ROW_LEN:
            (trace_id, span_id, parent, name, kind, start_ns, end_ns, status_code, status_message,
             resource_index, attributes, events, links, scope) = row
            resource = shared.get(resource_index) if type(resource_index) is int else None
            if (resource is not None and type(trace_id) is str and match_trace(trace_id)
                    and trace_id != zero_trace and type(span_id) is str and match_span(span_id)
                    and span_id != zero_span
                    and (parent is None or (type(parent) is str and match_span(parent) and parent != zero_span))
                    and type(name) is str and name and type(kind) is str and kind in _KINDS
                    and type(start_ns) is int and type(end_ns) is int and 0 < start_ns <= end_ns
                    and type(status_code) is str and status_code in _STATUS_CODES and type(attributes) is dict):
                try:
                    decoded_events = [{"name": str(e[0]), "time_ns": int(e[1]), "attributes": dict(e[2] or {})}
                                      for e in events] if events else []
                    decoded_links = [{"trace_id": str(link[0]), "span_id": str(link[1]),
                                      "attributes": dict(link[2] or {})} for link in links] if links else []
                except (TypeError, ValueError, IndexError, KeyError):
                    pass  # _decode_row below rejects the row with the same error
                else:
                    append({
                        "trace_id": trace_id,
                        "span_id": span_id,
                        "parent_span_id": parent,
                        "name": name,
                        "kind": kind,
                        "start_ns": start_ns,
                        "end_ns": end_ns,
                        "status_code": status_code,
                        "status_message": status_message or None,
                        "service": resource[0],
                        "resource": resource[1],
                        "attributes": attributes,
                        "events": decoded_events,
                        "links": decoded_links,
                        "scope": scope,
                    })
                    continue
        try:
            span = _decode_row(row, resources)
        except (CodecError, TypeError, ValueError, IndexError, KeyError) as exc:
            rejected.append((index, str(exc) or type(exc).__name__))
            continue
        resource_index = row[9]
        if type(resource_index) is int and resource_index not in shared:
            shared[resource_index] = (span["service"], span["resource"])
        append(span)
    return entry


def _decode_row(row: Any, resources: list[Any]) -> dict[str, Any]:
    if not isinstance(row, (list, tuple)) or len(row) != _ROW_LEN:
        raise CodecError(f"span row must be a list of {_ROW_LEN} fields")
    (trace_id, span_id, parent, name, kind, start_ns, end_ns, status_code, status_message,
     resource_index, attributes, events, links, scope) = row
    if not is_trace_id(trace_id):
        raise CodecError(f"invalid trace id {trace_id!r}")
    if not is_span_id(span_id):
        raise CodecError(f"invalid span id {span_id!r}")
    if parent in ("", "0" * 16):
        parent = None
    if parent is not None and not is_span_id(parent):
        raise CodecError(f"invalid parent span id {parent!r}")
    if not isinstance(name, str) or not name:
        raise CodecError("span name must be a non-empty string")
    if kind not in KINDS:
        raise CodecError(f"invalid span kind {kind!r}")
    if not isinstance(start_ns, int) or not isinstance(end_ns, int) or start_ns <= 0 or end_ns < start_ns:
        raise CodecError(f"invalid span times start={start_ns!r} end={end_ns!r}")
    if status_code not in STATUS_CODES:
        raise CodecError(f"invalid status code {status_code!r}")
    if not isinstance(attributes, dict):
        raise CodecError("span attributes must be a mapping")
    service, resource = resources[resource_index]
    return {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "kind": kind,
        "start_ns": start_ns,
        "end_ns": end_ns,
        "status_code": status_code,
        "status_message": status_message or None,
        "service": str(service),
        "resource": dict(resource or {}),
        "attributes": attributes,
        "events": [{"name": str(e[0]), "time_ns": int(e[1]), "attributes": dict(e[2] or {})} for e in events or ()],
        "links": [{"trace_id": str(link[0]), "span_id": str(link[1]), "attributes": dict(link[2] or {})}
                  for link in links or ()],
        "scope": scope,
    }
