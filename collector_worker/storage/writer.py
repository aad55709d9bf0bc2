"""Idempotent span writes: the only way spans enter storage.

Spans enter the ``spans`` staging table one row per trace per stream entry
(``staging.py``). Spans already stored (staged by an earlier batch, or already
compacted into their trace's block) are left out before the insert, and a
row's key is a digest of its span ids, so a redelivered stream entry changes
nothing and the caller learns exactly which spans are new (statistics must
count each span once). Every trace that received a new span is marked in
``pending_traces`` for the finalizer.

On SQLite one process runs ingest and finalization in two threads over one
database with a single writer; :func:`write_lock` serializes their write
transactions inside the process, so neither has to wait in SQLite's busy
handler (which sleeps) nor fails to upgrade a read into a write. Work that needs
no database (grouping and packing spans, assembling traces) is done before taking it.
"""

from __future__ import annotations

import json
import threading
import zlib
from itertools import chain, groupby, repeat
from operator import itemgetter
from typing import Any, Iterable

from sqlalchemy.engine import Connection

from . import staging
from .block_store import stored_span_ids
from .write_lock import take_write_lock, write_lock  # noqa: F401 (callers import them from here too)
from .schema import pending_traces

INT64_MAX = 2**63 - 1

def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _stringify_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stringify_keys(v) for v in value]
    return value


_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default).encode
try:  # the C encoder made once (JSONEncoder.encode builds one per call); no circular-reference markers
    from json.encoder import c_make_encoder as _c_make_encoder
    from json.encoder import encode_basestring as _encode_basestring

    _c_encode = _c_make_encoder(None, _json_default, _encode_basestring, None, ":", ",", False, False, True) \
        if _c_make_encoder is not None else None
except ImportError:  # pragma: no cover - interpreters without the C accelerator
    _c_encode = None


def _fast_encode(value: Any) -> str:
    """The same text as ``_encode``; a circular value raises RecursionError (handled by ``to_json``)."""
    if _c_encode is None:
        return _encode(value)
    return "".join(_c_encode(value, 0))


def to_json(value: Any) -> str:
    """Compact JSON; values JSON cannot hold are stored as their string form."""
    if not value:
        return "[]" if isinstance(value, (list, tuple)) else "{}"  # also None: an empty mapping
    try:
        return _fast_encode(value)
    except (TypeError, ValueError, RecursionError):  # keys of unusual types, circular data
        try:
            return _encode(_stringify_keys(value))
        except (TypeError, ValueError, RecursionError):
            return _encode(str(value))


def _text(value: Any, limit: int | None = None) -> Any:
    if type(value) is str and (limit is None or len(value) <= limit) and "\x00" not in value:
        return value  # the usual case
    if value is None:
        return None
    if not isinstance(value, str):
        value = str(value)
    if "\x00" in value:  # PostgreSQL text cannot hold NUL
        value = value.replace("\x00", "\ufffd")
    if limit is not None and len(value) > limit:
        value = value[:limit]
    return value


def invalid_reason(span: dict[str, Any]) -> str | None:
    """Why a decoded span cannot be stored, or None; the consumer dead-letters such spans."""
    start, end = span.get("start_ns"), span.get("end_ns")
    if not isinstance(start, int) or not isinstance(end, int):
        return "span times must be integers"
    if start > INT64_MAX or end > INT64_MAX or start < 0:
        return f"span times out of range start={start} end={end}"
    return None



_PLAIN_VALUES = frozenset((str, int, float, bool))
_loads = json.loads


def _json_value(value: Any, empty: Any) -> Any:
    """``value`` as storing it as JSON and reading it back gives it (bytes as text, odd objects as strings)."""
    if not value:
        return empty
    try:
        found = _loads(to_json(value))
    except ValueError:
        return empty
    return found if type(found) is type(empty) else empty


def _plain(mapping: Any) -> bool:
    """A dict of str keys and str, int, float or bool values (one loop: the usual dict is small)."""
    if type(mapping) is not dict:
        return False
    for key, value in mapping.items():
        if type(key) is not str or type(value) not in _PLAIN_VALUES:
            return False
    return True


def _plain_items(items: Any, first: str, second: str, second_type: type) -> bool:
    """Events (name, time_ns, attributes) or links (trace_id, span_id, attributes) as the codec decodes them,
    with plain attributes: JSON keeps them as they are."""
    if type(items) is not list:
        return False
    for item in items:
        if not (type(item) is dict and len(item) == 3 and type(item.get(first)) is str
                and type(item.get(second)) is second_type and _plain(item.get("attributes"))):
            return False
    return True


_UNCHECKED = object()  # no service checked with this resource yet


def staged_span(span: dict[str, Any], resources: dict[int, Any]) -> dict[str, Any]:
    """The span as staged: the decoded dict itself in the usual case, else :func:`normalised_span`.

    ``resources`` caches, by resource identity, the staged resource and the service last seen with it (an
    entry's spans share both), so the usual span checks neither again.
    """
    get = span.get
    service, resource = get("service"), get("resource")
    found = resources.get(id(resource))
    if found is None:  # the resource object is held too, so its id is not reused meanwhile
        found = resources[id(resource)] = [resource, resource if _plain(resource) else _json_value(resource, {}),
                                           _UNCHECKED]
    if found[2] is not service:
        if not (type(service) is str and service and len(service) <= 255 and "\x00" not in service):
            return normalised_span(span, found[1])
        found[2] = service  # a service known to be fine
    name, scope, kind, status = get("name"), get("scope"), get("kind"), get("status_code")
    if (found[1] is resource
            and type(name) is str and len(name) <= 512 and "\x00" not in name
            and (scope is None or (type(scope) is str and len(scope) <= 255 and "\x00" not in scope))
            and _plain(get("attributes"))
            and ((events := get("events")) == [] or _plain_items(events, "name", "time_ns", int))
            and ((links := get("links")) == [] or _plain_items(links, "trace_id", "span_id", str))
            and type(kind) is str and kind and type(status) is str and status
            and ((message := get("status_message")) is None or (type(message) is str and message
                                                                 and "\x00" not in message))
            and "depth" not in span):
        return span
    return normalised_span(span, found[1])


def normalised_span(span: dict[str, Any], resource: Any = None) -> dict[str, Any]:
    """A copy of the span cut to v2's column sizes (service and scope 255, name 512 characters), NUL
    replaced in them, defaults filled in, and attributes, events, links and resource (``resource`` when
    given) holding what JSON would hold: what every reader of a staged span gets back."""
    get = span.get
    service, message = get("service"), get("status_message")
    return {
        "trace_id": span["trace_id"], "span_id": span["span_id"], "parent_span_id": get("parent_span_id"),
        "name": _text(get("name"), 512) or "", "kind": get("kind") or "internal", "start_ns": span["start_ns"],
        "end_ns": span["end_ns"], "status_code": get("status_code") or "unset",
        "status_message": _text(message) if message else None,
        "service": _text(service or "unknown_service", 255),
        "resource": _json_value(get("resource"), {}) if resource is None else resource,
        "attributes": _json_value(get("attributes"), {}), "events": _json_value(get("events"), []),
        "links": _json_value(get("links"), []), "scope": _text(get("scope"), 255),
    }


def _runs(sources: list[str]) -> list[tuple[str, int]]:
    """``sources`` as (source, how many in a row) pairs."""
    runs: list[tuple[str, int]] = []
    for source in sources:
        if runs and runs[-1][0] == source:
            runs[-1] = (source, runs[-1][1] + 1)
        else:
            runs.append((source, 1))
    return runs


class PreparedSpans:
    """A batch of decoded spans grouped by trace and source and made ready to stage (no database needed).

    ``by_key`` maps (trace_id, span_id) to the decoded span (the first copy wins within a batch);
    ``keys`` are those keys sorted; ``groups`` maps (trace_id, source) to the staged span dicts, the
    source being the span's stream entry id (``sources``, parallel to the spans, or ``runs``: (source,
    how many spans in a row)) or ""; ``rows`` maps each group to its staged row if all its spans turn
    out new (the usual case), packed one source at a time while its spans are still in the CPU's caches.
    """

    __slots__ = ("keys", "by_key", "groups", "rows", "received_ns")

    def __init__(self, spans_in: list[dict[str, Any]], received_ns: int, sources: list[str] | None = None,
                 runs: list[tuple[str, int]] | None = None) -> None:
        if runs is None:
            if sources is not None and len(sources) < len(spans_in):
                raise ValueError(f"{len(spans_in)} spans but {len(sources)} sources")
            runs = [("", len(spans_in))] if sources is None else _runs(sources[:len(spans_in)])
        parts, start = [], 0
        for source, count in runs:
            parts.append((source, spans_in[start:start + count]))
            start += count
        self._group(parts, received_ns)
        self.received_ns = received_ns

    def _group(self, parts: list[tuple[str, list[dict[str, Any]]]], received_ns: int) -> None:
        by_key: dict[tuple[str, str], dict[str, Any]] = {}
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        rows: dict[tuple[str, str], tuple] = {}
        resources: dict[int, Any] = {}
        row_of = staging.row
        for source, spans in parts:
            touched = _add_as_they_are(spans, source, by_key, groups, resources)
            if touched is None:
                touched = {}
                last_trace, last = None, None  # a trace's spans usually come one after another
                for span in spans:
                    trace_id = span["trace_id"]
                    key = (trace_id, span["span_id"])
                    if key in by_key:
                        continue
                    by_key[key] = span
                    staged = staged_span(span, resources)
                    if trace_id != last_trace or last is None:
                        last_trace, last = trace_id, groups.get((trace_id, source))
                        if last is None:
                            last = groups[(trace_id, source)] = []
                        touched[(trace_id, source)] = None
                    last.append(staged)
            for trace_id, source_ in touched:  # a group a later part adds to is packed again then
                try:
                    rows[(trace_id, source_)] = row_of(trace_id, groups[(trace_id, source_)], received_ns, source_)
                except Exception:  # noqa: BLE001 - store_spans builds it again, and fails there, only if stored
                    rows.pop((trace_id, source_), None)
        self.keys = sorted(by_key)
        self.by_key = by_key
        self.groups = groups
        self.rows = rows


_FIELDS = itemgetter("trace_id", "span_id", "service", "resource", "name", "kind", "status_code", "status_message",
                     "scope", "attributes", "events", "links")
_trace_id = itemgetter("trace_id")
_STR, _DICT, _LIST = frozenset((str,)), frozenset((dict,)), frozenset((list,))
_NONE_OR_STR = frozenset((type(None), str))


def _add_as_they_are(spans: list[dict[str, Any]], source: str, by_key: dict, groups: dict,
                     resources: dict[int, Any]) -> dict[tuple[str, str], None] | None:
    """Add the spans of one source to ``by_key`` and ``groups`` when every one of them is new to the batch and
    staged as it is (what :func:`staged_span` says of each), checked field by field over all of them at once;
    the groups added to, or None, adding nothing, when any span might not be (the caller then takes them one
    by one)."""
    if not spans:
        return {}
    try:
        (trace_ids, span_ids, services, resource_column, names, kinds, statuses, messages, scopes, attributes, events,
         links) = zip(*map(_FIELDS, spans))
        if not (_STR.issuperset(map(type, services)) and _STR.issuperset(map(type, names))
                and _STR.issuperset(map(type, kinds)) and _STR.issuperset(map(type, statuses))
                and _NONE_OR_STR.issuperset(map(type, messages)) and _NONE_OR_STR.issuperset(map(type, scopes))
                and _DICT.issuperset(map(type, attributes)) and _LIST.issuperset(map(type, events))
                and _LIST.issuperset(map(type, links))):
            return None
        if not (all(kinds) and all(statuses) and "" not in messages and max(map(len, names)) <= 512
                and "\x00" not in "".join(names) and "\x00" not in "".join(filter(None, messages))):
            return None
        named_scopes = list(filter(None, scopes))
        if named_scopes and (max(map(len, named_scopes)) > 255 or "\x00" in "".join(named_scopes)):
            return None
        for service in set(services):
            if not (service and len(service) <= 255 and "\x00" not in service):
                return None
        if not (_STR.issuperset(map(type, chain.from_iterable(attributes)))
                and _PLAIN_VALUES.issuperset(map(type, chain.from_iterable(map(dict.values, attributes))))):
            return None
        for items in filter(None, events):
            if not _plain_items(items, "name", "time_ns", int):
                return None
        for items in filter(None, links):
            if not _plain_items(items, "trace_id", "span_id", str):
                return None
        if any(map(dict.__contains__, spans, repeat("depth"))):
            return None
        for resource in dict(zip(map(id, resource_column), resource_column)).values():
            found = resources.get(id(resource))
            if found is None:  # cached as staged_span caches it
                found = resources[id(resource)] = [resource, resource if _plain(resource) else
                                                   _json_value(resource, {}), _UNCHECKED]
            if found[1] is not resource:
                return None
        keyed = dict(zip(zip(trace_ids, span_ids), spans))
    except (KeyError, TypeError, ValueError):  # a span lacking a field, a field of an unusual type
        return None
    if len(keyed) != len(spans) or not keyed.keys().isdisjoint(by_key.keys()):
        return None  # a span twice: the first copy wins, which the one-by-one path decides
    by_key.update(keyed)
    touched: dict[tuple[str, str], None] = {}
    for trace_id, run in groupby(spans, _trace_id):
        group = groups.get((trace_id, source))
        if group is None:
            groups[(trace_id, source)] = list(run)
        else:
            group.extend(run)
        touched[(trace_id, source)] = None
    return touched


def prepare_spans(spans_in: list[dict[str, Any]], received_ns: int, sources: list[str] | None = None,
                  runs: list[tuple[str, int]] | None = None) -> PreparedSpans:
    """Group and normalise a batch ahead of :func:`store_spans` (outside any lock or transaction);
    ``sources``: the stream entry id of each span, or ``runs``: (entry id, its number of spans) in order."""
    return PreparedSpans(spans_in, received_ns, sources, runs)


_statements: dict[tuple[str, int], str] = {}


def _pending_upsert_sql(conn: Connection, rows: int) -> str:
    key = (conn.dialect.name, rows)
    sql = _statements.get(key)
    if sql is None:
        mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
        sql = (f"INSERT INTO {pending_traces.name} (trace_id, first_seen_ns, last_seen_ns) VALUES "
               + ",".join([f"({mark},{mark},{mark})"] * rows)
               + " ON CONFLICT (trace_id) DO UPDATE SET last_seen_ns = excluded.last_seen_ns")
        _statements[key] = sql
    return sql


def _chunks(items: list, size: int) -> Iterable[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


_dropped_lock = threading.Lock()
dropped_over_limit = {"spans": 0}  # spans of traces past trace_span_limit, in this process


def _within_limit(spans: list[dict[str, Any]], stored: int, limit: int) -> list[dict[str, Any]]:
    """The new spans of a trace holding ``stored`` spans that keep it within ``limit``: the earliest starting."""
    room = max(0, limit - stored)
    if len(spans) <= room:
        return spans
    kept = sorted(spans, key=lambda s: (s["start_ns"], s["span_id"]))[:room]
    with _dropped_lock:
        dropped_over_limit["spans"] += len(spans) - room
    keep = {id(s) for s in kept}
    return [s for s in spans if id(s) in keep]


TRACE_LOCK_SPACE = 742018  # the first key of the advisory locks ingest takes per trace (PostgreSQL)


def _lock_traces(conn: Connection, trace_ids: list[str]) -> None:
    """Take a transaction advisory lock per trace, in one order, before looking for spans already stored.

    Two collectors storing the same span from two different entries at once (a tracer's spool replayed, a
    claimed entry) would otherwise each miss the other's uncommitted row and both stage it, counting its
    statistics twice. With the lock the second waits for the first to commit, and its next statement
    (READ COMMITTED) sees the span staged. Different traces whose ids share a key only wait for each other.
    """
    keys = sorted({zlib.crc32(trace_id.encode("utf-8", "replace")) - 2**31 for trace_id in trace_ids})
    for chunk in _chunks(keys, 10000):
        conn.exec_driver_sql("SELECT count(pg_advisory_xact_lock(%s, k)) FROM "
                             "(SELECT unnest(%s::integer[]) AS k ORDER BY k) AS keys",
                             (TRACE_LOCK_SPACE, list(chunk)))


def store_spans(conn: Connection, spans_in: list[dict[str, Any]], received_ns: int,
                prepared: PreparedSpans | None = None, stored_rows: list | None = None,
                trace_span_limit: int | None = None, sources: list[str] | None = None) -> list[dict[str, Any]]:
    """Stage spans that are not stored yet; return exactly those newly stored (the decoded spans given).

    Runs inside the caller's transaction. Spans already staged are found first, then spans already in a
    block: a finalizer committing between the two reads moved them from staging into a block, so they
    are seen in one or the other, never in neither. Rows are written in key order so concurrent collectors
    on PostgreSQL take locks in the same order.

    ``sources`` gives each span's stream entry id: a row holds one trace's spans of one entry, keyed by
    both, so the same entry stored by two collectors at once is stored once (the second insert waits for
    the first and conflicts). ``prepared`` (from :func:`prepare_spans` over the same spans, ``received_ns``
    and sources) skips grouping here. ``stored_rows``, when given, receives ``(trace_id, batch_id, spans, packed_bytes)`` for every
    row staged (``spans`` as staged, ``received_ns`` set), for the recent-span cache.

    ``trace_span_limit``, when given, caps the spans stored per trace: new spans of a trace beyond it (the
    latest starting) are left out, neither returned nor counted; ``dropped_over_limit`` counts them.
    """
    if not spans_in:
        return []
    if conn.dialect.name not in ("sqlite", "postgresql"):
        raise RuntimeError(f"unsupported database backend {conn.dialect.name!r} (use SQLite or PostgreSQL)")
    if prepared is None or prepared.received_ns != received_ns:
        prepared = PreparedSpans(spans_in, received_ns, sources)
    trace_ids = sorted({trace_id for trace_id, _ in prepared.groups})
    if conn.dialect.name == "postgresql":
        _lock_traces(conn, trace_ids)
    staged = staging.staged_ids(conn, trace_ids)
    compacted = stored_span_ids(conn, trace_ids)
    rows, spans_of, held = [], {}, {}
    groups, prebuilt, row_of = prepared.groups, prepared.rows, staging.row
    have = done = None  # the usual batch: none of its traces has spans stored yet
    for key in sorted(groups):
        trace_id, source = key
        group = groups[key]
        if staged or compacted:
            have, done = staged.get(trace_id), compacted.get(trace_id)
            if have or done:
                group = [s for s in group if not ((have and s["span_id"] in have) or (done and s["span_id"] in done))]
        if trace_span_limit is not None:
            stored = held.get(trace_id)
            if stored is None:
                stored = len(have or ()) + len(done or ())
            if len(group) > trace_span_limit - stored:
                group = _within_limit(group, stored, trace_span_limit)
            held[trace_id] = stored + len(group)
        if group:
            row = prebuilt.get(key) if group is groups[key] else None  # None: some spans left out
            if row is None:
                row = row_of(trace_id, group, received_ns, source)
            rows.append(row)
            spans_of[(trace_id, row[1])] = (group, len(row[7]))
    inserted = staging.insert(conn, rows, all_new=not staged)
    if not inserted:
        return []
    new_traces = sorted({trace_id for trace_id, _ in inserted})
    for chunk in _chunks(new_traces, 10000):
        params = []
        for trace_id in chunk:
            params.extend((trace_id, received_ns, received_ns))
        conn.exec_driver_sql(_pending_upsert_sql(conn, len(chunk)), tuple(params))
    by_key = prepared.by_key
    inserted = sorted(inserted)
    count = 0
    for key in inserted:
        group, size = spans_of[key]
        for span in group:
            span["received_ns"] = received_ns
        count += len(group)
        if stored_rows is not None:
            stored_rows.append((key[0], key[1], group, size))
    if count == len(prepared.keys):  # the usual case: every span was new; the caller's order
        return [by_key[key] for key in prepared.keys]
    return [by_key[(key[0], span["span_id"])] for key in inserted for span in spans_of[key][0]]
