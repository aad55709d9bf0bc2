"""Stream entries that carry rows of one kind (metric points, profiles) beside the spans' entries.

An entry is ``{"resources": [[service, attributes], ...], <key>: [row, ...]}``
through the versioned codec's payload framing, tagged ``kind=<kind>``. Each
row names its resource by index; a row that cannot be read is rejected alone
with its reason, an entry that cannot be read at all raises
:class:`tracer.codec.CodecError` and nothing else.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from . import codec
from .codec import CodecError


def encode_rows(kind: str, key: str, rows: Sequence[Sequence[Any]],
                resources: Sequence[tuple[str, Mapping[str, Any]]], encoding: str = "msgpack") -> dict[bytes, bytes]:
    """Rows and their resources as the fields of one ``kind=<kind>`` stream entry."""
    fields = codec.encode_payload({"resources": [[service, dict(attrs)] for service, attrs in resources],
                                   key: list(rows)}, len(rows), encoding)
    fields[b"kind"] = kind.encode()
    return fields


def decode_rows(fields: Mapping[Any, Any], kind: str, key: str, decode_row: Callable[[Any, list], Any],
                max_decompressed: int, *, wrong_kind: str, unit: str) -> tuple[list[Any], list[tuple[int, str]]]:
    """The decoded rows of a ``kind=<kind>`` entry and the rejected ones as ``(row index, reason)``.

    ``wrong_kind`` is the error for an entry of another kind; ``unit`` names a row in the count check.
    """
    try:
        return _decode(fields, kind, key, decode_row, max_decompressed, wrong_kind, unit)
    except CodecError:
        raise
    except Exception as exc:  # whatever an entry holds, it fails alone and with a reason
        raise CodecError(codec.cut(f"unreadable {kind} entry: {type(exc).__name__}: {exc}")) from None


def _decode(fields: Mapping[Any, Any], kind: str, key: str, decode_row: Callable[[Any, list], Any],
            max_decompressed: int, wrong_kind: str, unit: str) -> tuple[list[Any], list[tuple[int, str]]]:
    if codec.entry_kind(fields) != kind:
        raise CodecError(wrong_kind)
    payload, expected = codec.decode_payload(fields, max_decompressed)
    if not isinstance(payload, dict) or not isinstance(payload.get(key), list):
        raise CodecError(f"{kind} batch is not a mapping with a '{key}' list")
    resources = payload.get("resources") or []
    if not isinstance(resources, list):
        raise CodecError("batch 'resources' is not a list")
    rows = payload[key]
    if expected is not None and expected != len(rows):
        raise CodecError(f"{unit} count mismatch: header says {expected}, batch holds {len(rows)}")
    decoded, rejected = [], []
    for index, row in enumerate(rows):
        try:
            decoded.append(decode_row(row, resources))
        except Exception as exc:  # a row holding anything at all is rejected alone
            rejected.append((index, codec.cut(str(exc) if isinstance(exc, CodecError)
                                              else f"{type(exc).__name__}: {exc}")))
    return decoded, rejected
