"""The wire format between tracers and collectors: one stream entry per batch.

A span entry has four fields (a metrics entry adds ``kind=metrics``, see
:mod:`tracer.metrics_codec`, a profiles entry ``kind=profiles``, see
:mod:`tracer.profile_codec`; an entry without ``kind`` holds spans, and a kind
this version does not know is refused with that reason)::

    v     format version (b"1")
    enc   encoding of ``data``: b"msgpack", b"msgpack+zlib" or b"json"
    n     number of spans in the batch
    data  the encoded batch

With sharded streams (``stream_shards`` > 1) producers add ``route``, the
trace id the entry's spans were grouped by, which picks its shard (see
:mod:`tracer.shards`); decoders ignore it.

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
ENTRY_KINDS = ("spans", "metrics", "profiles")  # the ``kind`` field; absent means spans
COMPRESS_ABOVE = 64 * 1024  # bytes of msgpack after which zlib pays for itself
# Most bytes a msgpack+zlib entry may inflate to; beyond it the entry is refused (a compression bomb: 1 GB of
# zeros compresses to 1 MB). A full batch of 512 spans at the default attribute limits is far below it.
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
REASON_CHARS = 1000  # longest reason kept for one entry or span (values quoted in it are cut)

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
    rejected_rows: list[Any] = field(default_factory=list)  # the raw rows of ``rejected``, in the same order
    resources: list[Any] = field(default_factory=list)  # the batch's raw resources, to re-encode rejected rows


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
    return encode_payload(payload, len(rows), encoding)


def encode_payload(payload: Any, count: int, encoding: str = "msgpack") -> dict[bytes, bytes]:
    """The version, encoding, item count and encoded data of an entry of any kind."""
    if encoding == "json":
        data = json.dumps(payload, separators=(",", ":"), default=_json_default).encode()
    else:
        data = msgpack.packb(payload, use_bin_type=True, default=_msgpack_default)
        if encoding == "msgpack+zlib" or (encoding == "msgpack" and len(data) > COMPRESS_ABOVE):
            data, encoding = zlib.compress(data, 1), "msgpack+zlib"
    return {b"v": str(FORMAT_VERSION).encode(), b"enc": encoding.encode(), b"n": str(count).encode(),
            b"data": data}


def encode_span_dicts(spans: Iterable[Mapping[str, Any]], encoding: str = "msgpack") -> dict[bytes, bytes]:
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


def encode_rejected(rows: Sequence[Any], resources: Sequence[Any], spans: Sequence[Mapping[str, Any]] = ()
                    ) -> dict[bytes, bytes]:
    """Rows an entry could not use (with that entry's raw resources) and decoded spans storage refused, as
    the fields of one stream entry: the dead letter of just those spans, to fix and add back.

    Never raises, whatever the rows hold: what msgpack cannot carry (ints beyond 64 bits, lone surrogates)
    is written as JSON, and what JSON cannot carry either as its ``repr`` (encoding ``repr``).
    """
    try:
        rows, resources = list(rows), list(resources)
        for span in spans:
            resources.append([span.get("service"), span.get("resource") or {}])
            rows.append(_row_of(span, len(resources) - 1))
        payload: Any = {"resources": resources, "spans": rows}
        count = len(rows)
    except Exception:  # noqa: BLE001 - spans that are not mappings after all: kept as they are
        payload, count = {"resources": resources, "spans": rows, "decoded": spans}, len(rows) + len(spans)
    try:
        data, encoding = msgpack.packb(payload, use_bin_type=True, default=_msgpack_default), "msgpack"
    except Exception:  # noqa: BLE001
        try:
            data, encoding = json.dumps(payload, separators=(",", ":"), default=repr).encode(), "json"
        except Exception:  # noqa: BLE001
            try:
                data = repr(payload).encode("utf-8", "backslashreplace")
            except Exception as exc:  # noqa: BLE001 - e.g. nested too deep even for repr
                data = f"unrepresentable rows: {type(exc).__name__}".encode()
            encoding = "repr"
    return {b"v": str(FORMAT_VERSION).encode(), b"enc": encoding.encode(), b"n": str(count).encode(),
            b"data": data}


def _row_of(span: Mapping[str, Any], resource_index: int) -> list[Any]:
    """A decoded span as a positional row again, its values as they are (no conversion that could raise)."""
    get = span.get
    return [get("trace_id"), get("span_id"), get("parent_span_id"), get("name"), get("kind"), get("start_ns"),
            get("end_ns"), get("status_code"), get("status_message"), resource_index, get("attributes"),
            [[e.get("name"), e.get("time_ns"), e.get("attributes")] for e in get("events") or ()],
            [[link.get("trace_id"), link.get("span_id"), link.get("attributes")] for link in get("links") or ()],
            get("scope")]


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


def decode_entry(fields: Mapping[Any, Any], max_decompressed: int = MAX_DECOMPRESSED_BYTES) -> DecodedEntry:
    """Decode one stream entry into span dicts.

    Raises :class:`CodecError` when the entry as a whole is unreadable (unknown
    version or encoding, corrupt data, count mismatch, data inflating beyond
    ``max_decompressed`` bytes), and nothing else whatever the fields hold.
    Rows that are individually invalid are listed in ``rejected`` with a reason.
    """
    try:
        return _decode_entry(fields, max_decompressed)
    except CodecError:
        raise
    except Exception as exc:  # whatever an entry holds, it fails alone and with a reason
        raise CodecError(_cut(f"unreadable entry: {type(exc).__name__}: {exc}")) from None


def _cut(reason: str) -> str:
    return reason if len(reason) <= REASON_CHARS else reason[:REASON_CHARS] + f"... ({len(reason)} characters)"


cut = _cut  # for the other entry kinds' decoders (tracer.metrics_codec)


def _inflate(data: bytes, limit: int) -> bytes:
    """zlib data decompressed, refusing more than ``limit`` bytes without ever holding more."""
    inflater = zlib.decompressobj()
    out = inflater.decompress(data, limit + 1)
    if len(out) > limit:
        raise CodecError(f"msgpack+zlib data inflates beyond {limit} bytes")
    if not inflater.eof:
        raise CodecError("cannot decode msgpack+zlib data: incomplete or truncated zlib stream")
    return out


def entry_kind(fields: Mapping[Any, Any]) -> str:
    """What an entry carries: ``"spans"`` (no ``kind`` field, as every entry before metrics), ``"metrics"`` or
    ``"profiles"``.

    Raises :class:`CodecError` for any other kind, so a kind this collector does not know is dead-lettered
    with that reason instead of being read as spans.
    """
    kind = _field(fields, "kind")
    if kind is None:
        return "spans"
    try:
        kind = _text(kind)
    except UnicodeDecodeError:
        raise CodecError(_cut(f"unknown entry kind {kind!r}")) from None
    if kind not in ENTRY_KINDS:
        raise CodecError(_cut(f"unknown entry kind {kind!r} (this collector reads {', '.join(ENTRY_KINDS)})"))
    return kind


def decode_payload(fields: Mapping[Any, Any], max_decompressed: int = MAX_DECOMPRESSED_BYTES) -> tuple[Any, int | None]:
    """The decoded ``data`` of an entry of any kind and the item count its header gives (None without ``n``).

    Checks the version and encoding; raises :class:`CodecError` when they or the data are unreadable.
    """
    version, encoding, count, data = (_field(fields, k) for k in ("v", "enc", "n", "data"))
    if version is None or encoding is None or data is None:
        raise CodecError("missing field: an entry needs v, enc, n and data")
    try:
        version_number = int(_text(version))
    except (ValueError, UnicodeDecodeError):
        raise CodecError(_cut(f"unreadable format version {version!r}")) from None
    if version_number != FORMAT_VERSION:
        raise CodecError(f"unsupported format version {version_number} (this collector reads {FORMAT_VERSION})")
    try:
        encoding = _text(encoding)
    except UnicodeDecodeError:
        raise CodecError(_cut(f"unknown encoding {encoding!r}")) from None
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    try:
        if encoding == "json":
            payload = json.loads(data)
        elif encoding in ("msgpack", "msgpack+zlib"):
            if encoding == "msgpack+zlib":
                data = _inflate(data, max_decompressed)
            payload = msgpack.unpackb(data, raw=False, strict_map_key=False)
        else:
            raise CodecError(_cut(f"unknown encoding {encoding!r}"))
    except CodecError:
        raise
    except Exception as exc:  # corrupt bytes: msgpack, zlib and json each raise their own types
        raise CodecError(_cut(f"cannot decode {encoding} data: {type(exc).__name__}: {exc}")) from None
    expected = None
    if count is not None:
        try:
            expected = int(_text(count))
        except (ValueError, UnicodeDecodeError):
            raise CodecError(_cut(f"unreadable item count {count!r}")) from None
    return payload, expected


def _decode_entry(fields: Mapping[Any, Any], max_decompressed: int) -> DecodedEntry:
    kind = entry_kind(fields)
    if kind != "spans":
        reader = {"metrics": "tracer.metrics_codec", "profiles": "tracer.profile_codec"}[kind]
        raise CodecError(f"entry holds {kind}, not spans: read it with {reader}")
    payload, expected = decode_payload(fields, max_decompressed)
    if not isinstance(payload, dict) or not isinstance(payload.get("spans"), list):
        raise CodecError("batch is not a mapping with a 'spans' list")
    resources = payload.get("resources") or []
    if not isinstance(resources, list):
        raise CodecError("batch 'resources' is not a list")
    rows = payload["spans"]
    if expected is not None:
        if expected != len(rows):
            raise CodecError(f"span count mismatch: header says {expected}, batch holds {len(rows)}")
    entry = DecodedEntry(resources=resources)
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
                except Exception:  # noqa: BLE001 - _decode_row below rejects the row with the same error
                    pass
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
        except Exception as exc:  # a row holding anything at all (inf, nan, huge ints) is rejected alone
            rejected.append((index, _cut(str(exc) if isinstance(exc, CodecError) else
                                         f"{type(exc).__name__}: {exc}")))
            entry.rejected_rows.append(row)
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
