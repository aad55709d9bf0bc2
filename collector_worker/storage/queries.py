"""Read queries shared by the JSON API and the CLI.

Every query is built with SQLAlchemy Core and bound parameters, so nothing a
user types reaches SQL text. Results use the API JSON shapes of
docs/architecture.md (trace summary, span), so the API, the CLI and the
exporters all see the same dicts.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from sqlalchemy import BigInteger, Integer, and_, bindparam, cast, exists, func, or_, select, union_all
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Connection

from tracer.codec import KINDS

from . import block_store, blocks, partitions, periods, schema, search_keys
from .. import assembler

SORTS = ("start_desc", "start_asc", "duration_desc", "duration_asc")
TAG_OPS = ("=", ">", "<")
MAX_LIMIT = 1000
_OP_MASK = (1 << 32) - 1
TOTAL_CAP = 1_000  # search counts matches up to this many; beyond it "total_capped" is true
BACKLINK_WINDOW_NS = 3600 * 10**9  # linking spans are looked for within an hour of the trace
BACKLINK_SCAN_LIMIT = 50_000  # staged spans with links scanned at most per backlink lookup
BACKLINK_TRACE_LIMIT = 2_000  # finalized traces read at most per backlink lookup (nearest in start time)
# Spans in one answer for a trace: any stored trace (even one stored before ingest limits existed) is read
# and answered in pages of at most this many spans; a larger trace is marked truncated and paged by offset.
TRACE_PAGE_SPANS = 10_000


class QueryError(ValueError):
    """A query that cannot run as asked; ``parameter`` names the culprit."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter


@dataclass
class TraceQuery:
    """What a trace search asks for; every field optional."""

    service: str | None = None
    operation: str | None = None
    tags: list[tuple[str, str, str]] = field(default_factory=list)  # (key, op, value), op in TAG_OPS
    status: str | None = None  # "error" | "ok" | None
    min_duration_ns: int | None = None
    max_duration_ns: int | None = None
    services: list[str] = field(default_factory=list)  # traces touching all of these
    kind: str | None = None  # traces holding a span of this kind (one of tracer.codec.KINDS)
    start_ns: int | None = None
    end_ns: int | None = None
    sort: str = "start_desc"
    limit: int = 20
    cursor: str | None = None


# --------------------------------------------------------------------------- formatting


@functools.lru_cache(maxsize=8192)
def _second_text(seconds: int) -> str | None:
    """A Unix second as ISO-8601 UTC to the second (spans of a trace share few seconds: formatted once each)."""
    try:
        moment = datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return f"{moment:%Y-%m-%dT%H:%M:%S}"


def iso_time(ns: int | None) -> str | None:
    """Unix nanoseconds as an ISO-8601 UTC string with microseconds."""
    if ns is None:
        return None
    seconds, rest = divmod(int(ns), 1_000_000_000)
    prefix = _second_text(seconds)
    return None if prefix is None else f"{prefix}.{rest // 1000:06d}Z"


def _ms(ns: int | None) -> float:
    return round((ns or 0) / 1e6, 6)


def _json(text: Any, default: Any) -> Any:
    if text is None or text == "":
        return default
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return default


def summary_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``traces`` row as the API trace summary."""
    return {
        "trace_id": row["trace_id"],
        "root_service": row["root_service"],
        "root_operation": row["root_operation"],
        "start_time": iso_time(row["start_ns"]),
        "start_ns": int(row["start_ns"]),
        "duration_ms": _ms(row["duration_ns"]),
        "span_count": int(row["span_count"]),
        "services": list(_json(row["services"], [])),
        "error_count": int(row["error_count"]),
        "incomplete": bool(row["incomplete"]),
        "clock_skew_ms": _ms(row["clock_skew_ns"]),
    }


def span_to_api(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``spans`` row (or codec span dict) as the API span dict."""
    start, end = int(row["start_ns"]), int(row["end_ns"])
    self_ns = row.get("self_time_ns")
    return {
        "span_id": row["span_id"],
        "parent_span_id": row.get("parent_span_id"),
        "service": row["service"],
        "name": row["name"],
        "kind": row.get("kind") or "internal",
        "start_time": iso_time(start),
        "start_ns": start,
        "end_ns": end,
        "duration_ms": _ms(end - start),
        "status": row.get("status_code") or "unset",
        "status_message": row.get("status_message"),
        "attributes": _json(row.get("attributes"), {}),
        "resource": _json(row.get("resource"), {}),
        "events": _api_events(row.get("events")),
        "links": _api_links(row.get("links")),
        "depth": int(row["depth"]) if row.get("depth") is not None else 0,
        "self_time_ms": _ms(self_ns) if self_ns is not None else _ms(end - start),
        "critical_path": bool(row.get("critical_path")),
    }


def _api_events(events: Any) -> list[dict[str, Any]]:
    return [
        {"name": e.get("name"), "time": iso_time(e.get("time_ns")), "time_ns": int(e.get("time_ns") or 0),
         "attributes": e.get("attributes") or {}}
        for e in _json(events, []) if isinstance(e, dict)
    ]


def _api_links(links: Any) -> list[dict[str, Any]]:
    return [
        {"trace_id": link.get("trace_id"), "span_id": link.get("span_id"), "attributes": link.get("attributes") or {}}
        for link in _json(links, []) if isinstance(link, dict)
    ]


def api_spans_of_block(cols: blocks.Columns, order: list[int]) -> list[dict[str, Any]]:
    """Spans ``order`` (indexes) of a block as API span dicts, straight from its columns.

    The same dicts :func:`span_to_api` makes of :func:`blocks.decode` rows, without the row dicts between:
    fetching a big trace spends its time here.
    """
    (_, _, base, strings, resources, ids, parents, services, names, kinds, statuses, messages, starts, durations,
     attributes, events, links, resource_col, _, _, depths, selfs, crit) = cols
    resources = [_json(r, {}) for r in resources]
    out = []
    append = out.append
    for i in order:
        start = base + starts[i]
        duration = durations[i]
        parent = parents[i]
        attrs = attributes[i]
        self_ns = selfs[i]
        depth = depths[i]
        append({
            "span_id": ids[i],
            "parent_span_id": ids[parent] if type(parent) is int else parent,
            "service": strings[services[i]],
            "name": strings[names[i]],
            "kind": strings[kinds[i]] or "internal",
            "start_time": iso_time(start),
            "start_ns": start,
            "end_ns": start + duration,
            "duration_ms": round(duration / 1e6, 6),
            "status": strings[statuses[i]] or "unset",
            "status_message": messages[i],
            "attributes": attrs if type(attrs) is dict else _json(attrs, {}),
            "resource": resources[resource_col[i]],
            "events": _api_events(events[i]) if events[i] else [],
            "links": _api_links(links[i]) if links[i] else [],
            "depth": 0 if depth is None else int(depth),
            "self_time_ms": round((duration if self_ns is None else self_ns) / 1e6, 6),
            "critical_path": bool(crit[i]),
        })
    return out


# --------------------------------------------------------------------------- search


def encode_cursor(sort: str, value: int, trace_id: str) -> str:
    raw = json.dumps([sort, int(value), trace_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[int, str]:
    """Return (sort value, trace id) of the last row of the previous page."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        cursor_sort, value, trace_id = json.loads(raw)
        value = int(value)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):  # Infinity: OverflowError
        raise QueryError("cursor", "invalid cursor: pass next_cursor from a previous page unchanged") from None
    if not isinstance(trace_id, str) or not isinstance(cursor_sort, str) or abs(value) >= 2**63:
        raise QueryError("cursor", "invalid cursor: pass next_cursor from a previous page unchanged")
    if cursor_sort != sort:
        raise QueryError("cursor", f"cursor belongs to sort={cursor_sort}, not sort={sort}")
    return value, trace_id


def _names(conn: Connection, q: TraceQuery) -> tuple[list[tuple[str, str, str]], dict[str, int] | None]:
    """The query's tag filters (span kind included) and the ids of every name it needs; None when the
    database has never seen one of them (nothing can match)."""
    tags = list(q.tags)
    if q.kind:
        if q.kind not in KINDS:
            raise QueryError("kind", f"unknown span kind {q.kind!r}: use one of {', '.join(KINDS)}")
        tags.append((search_keys.SPAN_KIND_KEY, "=", q.kind))  # span kinds are posted as tags
    wanted = [name for name in (q.service, q.operation, *q.services) if name]
    wanted += [key for key, _, _ in tags]
    ids = search_keys.lookup(conn, wanted) if wanted else {}
    if any(name not in ids for name in wanted):
        return tags, None
    for key, op, value in tags:
        if op != "=":
            try:
                float(value)
            except ValueError:
                raise QueryError("tag", f"tag {key}{op}{value}: a comparison needs a number") from None
    return tags, ids


@dataclass(frozen=True)
class _Shape:
    """What a search's SQL depends on besides its values (those are bound parameters): the filters it has
    and its sort. Searches of one shape over the same parts run one statement, built once."""

    sort: str = "start_desc"
    cursor: bool = False
    start: bool = False
    end: bool = False
    min_duration: bool = False
    max_duration: bool = False
    status: str | None = None
    service: bool = False
    operation: bool = False
    services: int = 0  # services touched besides ``service``
    tags: tuple[str, ...] = ()  # each tag filter's op (span kind included), in order

    @property
    def op_keys(self) -> bool:
        """PostgreSQL: whether the search probes the operation key arrays."""
        return self.service or self.operation or self.services > 0

    @property
    def tag_keys(self) -> bool:
        """PostgreSQL: whether the search probes the tag key arrays."""
        return "=" in self.tags


def _shape(q: TraceQuery, tags: list[tuple[str, str, str]]) -> _Shape:
    return _Shape(sort=q.sort, cursor=q.cursor is not None, start=q.start_ns is not None, end=q.end_ns is not None,
                  min_duration=q.min_duration_ns is not None, max_duration=q.max_duration_ns is not None,
                  status=q.status if q.status in ("error", "ok") else None, service=bool(q.service),
                  operation=bool(q.operation), services=len(_other_services(q)), tags=tuple(op for _, op, _ in tags))


def _other_services(q: TraceQuery) -> list[str]:
    return [name for name in q.services if name != q.service]


def _values(q: TraceQuery, tags: list[tuple[str, str, str]], ids: dict[str, int],
            cursor: tuple[int, str] | None = None) -> dict[str, Any]:
    """The bound parameters of ``q``'s statement, by the names :func:`_filters` gives them."""
    values: dict[str, Any] = {"start_ns": q.start_ns, "end_ns": q.end_ns, "min_duration_ns": q.min_duration_ns,
                              "max_duration_ns": q.max_duration_ns, "page_limit": q.limit + 1}
    if q.service:
        values["service_id"] = ids[q.service]
    if q.operation:
        values["operation_id"] = ids[q.operation]
    for i, name in enumerate(_other_services(q)):
        values[f"service_{i}"] = ids[name]
    for i, (key, op, value) in enumerate(tags):
        values[f"tag_{i}_key"] = ids[key]
        if op == "=":
            values[f"tag_{i}_hash"] = search_keys.tag_hash(value)
        else:
            values[f"tag_{i}_number"] = float(value)
    ops = [search_keys.op_key(ids[name]) for name in q.services]  # PostgreSQL's arrays (see _array_filter)
    if q.service or q.operation:
        ops.append(search_keys.op_key(ids[q.service] if q.service else 0, ids[q.operation] if q.operation else 0))
    values["op_keys"] = sorted(set(ops))
    values["tag_keys"] = sorted({search_keys.tag_key(ids[key], search_keys.tag_hash(value))
                                 for key, op, value in tags if op == "="})
    if cursor is not None:
        values["cursor_value"], values["cursor_trace_id"] = cursor
    return values


def _filters(shape: _Shape, part: periods.Part, bind: Any, walk: bool = False) -> list[Any]:
    """WHERE conditions on ``part``'s ``traces`` for a search of ``shape``, its postings read from the same
    part; ``bind(name)`` gives each value (a bound parameter of that name, or the value itself).

    ``walk``: the part's numeric tag filters match many traces (:func:`dense_parts`); they are then written
    ``trace_no + 0 IN (...)``, so SQLite walks the sort column's index, probes the filter's list and stops at
    the page's end, instead of reading every match through the list and sorting them all.
    """
    t, o = part.table(schema.traces), part.table(schema.trace_operations)
    g, n = part.table(schema.trace_tags), part.table(schema.trace_tag_numbers)
    where: list[Any] = []
    if shape.start:
        where.append(t.c.start_ns >= bind("start_ns"))
    if shape.end:
        where.append(t.c.start_ns <= bind("end_ns"))
    # In a period file's arm (a day's part, searched for one page) the duration and error filters are
    # written "column + 0": SQLite then walks the sort column's index and stops at the page's end instead
    # of reading every matching row of the file through the filter's index and sorting them all.
    duration = t.c.duration_ns if part.schema is None or shape.sort.startswith("duration") else t.c.duration_ns + 0
    errors = t.c.error_count if part.schema is None else t.c.error_count + 0
    if shape.min_duration:
        where.append(duration >= bind("min_duration_ns"))
    if shape.max_duration:
        where.append(duration <= bind("max_duration_ns"))
    if shape.status == "error":
        where.append(errors > 0)
    elif shape.status == "ok":
        where.append(errors == 0)
    if part.postgres:  # one probe of the GIN-indexed arrays for every equality filter (see _array_filter)
        found = _array_filter(shape, bind)
        if found is not None:
            where.append(t.c.trace_no.in_(found))
    else:
        if shape.service or shape.operation:
            cond = [o.c.trace_no == t.c.trace_no]
            if shape.service:
                cond.append(o.c.service_id == bind("service_id"))
            if shape.operation:
                cond.append(o.c.operation_id == bind("operation_id"))
            where.append(exists().where(and_(*cond)))
        for i in range(shape.services):
            where.append(exists().where(and_(o.c.trace_no == t.c.trace_no, o.c.service_id == bind(f"service_{i}"))))
        for i, op in enumerate(shape.tags):
            if op == "=":  # usually selective: drive the search from the (key, value) postings
                where.append(t.c.trace_no.in_(select(g.c.trace_no).where(
                    g.c.key_id == bind(f"tag_{i}_key"), g.c.value_hash == bind(f"tag_{i}_hash"))))
    for i, op in enumerate(shape.tags):
        if op == "=":
            continue
        compare = n.c.value_num > bind(f"tag_{i}_number") if op == ">" else n.c.value_num < bind(f"tag_{i}_number")
        numbered = t.c.trace_no + 0 if walk else t.c.trace_no
        where.append(numbered.in_(select(n.c.trace_no).where(n.c.key_id == bind(f"tag_{i}_key"), compare)))
    visible = part.visible(t.c.trace_no)
    if visible is not None:
        where.append(visible)
    return where


WALK_AT = 1000  # matching postings in a part from which its numeric tag filters are walked, not driven


def dense_parts(conn: Connection, shape: _Shape, parts: list[periods.Part], values: dict[str, Any]) -> tuple:
    """For each SQLite part, whether one of the search's numeric tag filters matches ``WALK_AT`` postings
    or more there (a probe of its index that stops at that many); () when the search has none.

    Few matches are best read through the filter's list and sorted; many (``http.status_code<500``: most
    traces) are best found walking the part in sort order, which stops after a page of them but walks
    the whole part when hardly any trace matches. Probing costs a tenth of a millisecond a part.
    """
    ranges = [i for i, op in enumerate(shape.tags) if op != "="]
    if not ranges or parts[0].postgres:
        return ()
    dense = []
    for part in parts:
        table = f"{part.schema}.{schema.trace_tag_numbers.name}" if part.schema else schema.trace_tag_numbers.name
        found = False
        for i in ranges:
            sql = (f"SELECT count(*) FROM (SELECT 1 FROM {table} WHERE key_id = ? "
                   f"AND value_num {'>' if shape.tags[i] == '>' else '<'} ? LIMIT {WALK_AT})")
            if conn.exec_driver_sql(sql, (values[f"tag_{i}_key"], values[f"tag_{i}_number"])).scalar_one() >= WALK_AT:
                found = True
                break
        dense.append(found)
    return tuple(dense)


def main_part_filters(conn: Connection, q: TraceQuery) -> list[Any] | None:
    """WHERE conditions for ``q`` on the main ``traces`` table (where traces finalized lately live); None
    when the database has never seen a name ``q`` asks for, so nothing can match."""
    tags, ids = _names(conn, q)
    if ids is None:
        return None
    return _filters(_shape(q, tags), periods.parts(conn)[0], _values(q, tags, ids).__getitem__)


def key_array(values) -> Any:
    return cast(sorted(set(values)), ARRAY(BigInteger))


def _array_filter(shape: _Shape, bind: Any) -> Any | None:
    """PostgreSQL: trace numbers whose ``trace_search_keys`` arrays hold every service / operation / tag
    equality the query asks for (None when it asks for none)."""
    k = schema.trace_search_keys
    conditions = []
    if shape.op_keys:
        conditions.append(k.c.op_keys.contains(cast(bind("op_keys"), ARRAY(BigInteger))))
    if shape.tag_keys:
        conditions.append(k.c.tag_keys.contains(cast(bind("tag_keys"), ARRAY(BigInteger))))
    return select(k.c.trace_no).where(*conditions) if conditions else None


def window_days(q: TraceQuery) -> tuple[int | None, int | None]:
    """The days a trace matching ``q``'s time window can be numbered in (its start's day)."""
    return (None if q.start_ns is None else partitions.day_of(max(0, q.start_ns)),
            None if q.end_ns is None else partitions.day_of(max(0, q.end_ns)))


_ARRAY_PARAMETERS = frozenset(("op_keys", "tag_keys"))


def _parameter(name: str) -> Any:
    return bindparam(name, type_=ARRAY(BigInteger) if name in _ARRAY_PARAMETERS else None)


_statements: dict[tuple, tuple[Any, Any]] = {}
_STATEMENTS_KEPT = 128  # shapes x layouts; a seal or a drop makes a new layout


def _search_statements(shape: _Shape, parts: list[periods.Part], dense: tuple = ()) -> tuple[Any, Any]:
    """The page and the count statements of a search of ``shape`` over ``parts``, with bound parameters.

    Built once per shape and set of parts (the layout the parts come from, and which of its parts the
    search's days need): building a UNION ALL of an arm per period file, and SQLAlchemy computing its cache
    key, cost more than SQLite's answer did. A seal changes the layout, hence the statements.
    """
    key = (shape, parts[0].layout, tuple(part.schema for part in parts), dense)
    found = _statements.get(key)
    if found is None:
        if len(_statements) >= _STATEMENTS_KEPT:
            _statements.clear()
        found = _statements[key] = _build_search(shape, parts, dense)
    return found


def _build_search(shape: _Shape, parts: list[periods.Part], dense: tuple = ()) -> tuple[Any, Any]:
    by_duration = shape.sort.startswith("duration")
    descending = shape.sort.endswith("desc")
    pages, counts = [], []
    for index, part in enumerate(parts):
        t = part.table(schema.traces)
        where = _filters(shape, part, _parameter, walk=bool(dense) and dense[index])
        column = t.c.duration_ns if by_duration else t.c.start_ns
        page_where = list(where)
        if shape.cursor:
            value, trace_id = bindparam("cursor_value"), bindparam("cursor_trace_id")
            if descending:
                page_where.append(or_(column < value, and_(column == value, t.c.trace_id < trace_id)))
            else:
                page_where.append(or_(column > value, and_(column == value, t.c.trace_id > trace_id)))
        pages.append(select(t).where(*page_where))
        counts.append(select(t.c.trace_id).where(*where))
    # SQLite merges the parts' arms in sort order, each walking its sort index, and stops at the page's end.
    found = (pages[0] if len(pages) == 1 else union_all(*pages)).subquery()
    column = found.c.duration_ns if by_duration else found.c.start_ns
    order = [column.desc(), found.c.trace_id.desc()] if descending else [column.asc(), found.c.trace_id.asc()]
    page = select(found).order_by(*order).limit(bindparam("page_limit"))
    counted = (counts[0] if len(counts) == 1 else union_all(*counts)).limit(TOTAL_CAP + 1).subquery()
    return page, select(func.count()).select_from(counted)


def search_traces(conn: Connection, q: TraceQuery) -> dict[str, Any]:
    """Trace summaries matching ``q``, one page at a time.

    Paging is by keyset: ``next_cursor`` holds the sort value and trace id of
    the page's last row, so pages stay stable while new traces arrive.
    ``total`` counts all matches (ignoring the cursor) up to ``TOTAL_CAP``.
    Each part (the main tables, a SQLite period file) is searched with its own postings, as one UNION
    ALL whose arms SQLite merges in sort order.
    """
    if q.sort not in SORTS:
        raise QueryError("sort", f"unknown sort {q.sort!r}: use one of {', '.join(SORTS)}")
    if not 1 <= q.limit <= MAX_LIMIT:
        raise QueryError("limit", f"limit must be between 1 and {MAX_LIMIT}")
    cursor = decode_cursor(q.cursor, q.sort) if q.cursor else None
    tags, ids = _names(conn, q)
    empty = {"traces": [], "total": 0, "total_capped": False, "next_cursor": None}
    if ids is None:
        return empty
    days = window_days(q)
    parts = [part for part in periods.parts(conn) if part.holds_days(*days)]
    if not parts:
        return empty
    shape = _shape(q, tags)
    values = _values(q, tags, ids, cursor)
    page, count = _search_statements(shape, parts, dense_parts(conn, shape, parts, values))
    rows = conn.execute(page, values).mappings().all()
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(q.sort, last["duration_ns"] if q.sort.startswith("duration") else last["start_ns"],
                                    last["trace_id"])
    total = int(conn.execute(count, values).scalar_one())
    return {
        "traces": [summary_from_row(r) for r in rows],
        "total": min(total, TOTAL_CAP),
        "total_capped": total > TOTAL_CAP,
        "next_cursor": next_cursor,
    }


def tagged_trace_ids(conn: Connection, tags: Mapping[str, str], any_keys: list[str], start_ns: int | None,
                     end_ns: int | None, limit: int) -> list[str]:
    """Ids of the newest traces holding every ``tags`` key=value (or, with no tags, any value of one of
    ``any_keys``), starting within the window; the AI pages' filters."""
    ids = search_keys.lookup(conn, [*tags, *any_keys])
    if any(key not in ids for key in tags) or not tags and not ids:
        return []
    arms = []
    for part in periods.parts(conn):
        if not part.holds_days(*window_days(TraceQuery(start_ns=start_ns, end_ns=end_ns))):
            continue
        t = part.table(schema.traces)
        if part.postgres:
            k = schema.trace_search_keys
            wanted = (k.c.tag_keys.contains(key_array(search_keys.tag_key(ids[key], search_keys.tag_hash(value))
                                                  for key, value in tags.items())) if tags else
                      k.c.tag_keys.overlap(key_array(search_keys.tag_key_marker(i) for i in ids.values())))
            where = [t.c.trace_no.in_(select(k.c.trace_no).where(wanted))]
        else:
            g = part.table(schema.trace_tags)
            where = [t.c.trace_no.in_(select(g.c.trace_no).where(g.c.key_id == ids[key],
                                                                g.c.value_hash == search_keys.tag_hash(value)))
                     for key, value in tags.items()]
            if not tags:
                where.append(t.c.trace_no.in_(select(g.c.trace_no).where(g.c.key_id.in_(sorted(ids.values())))))
        if start_ns is not None:
            where.append(t.c.start_ns >= start_ns)
        if end_ns is not None:
            where.append(t.c.start_ns <= end_ns)
        visible = part.visible(t.c.trace_no)
        if visible is not None:
            where.append(visible)
        arms.append(select(t.c.trace_id, t.c.start_ns).where(*where))
    if not arms:
        return []
    found = (arms[0] if len(arms) == 1 else union_all(*arms)).subquery()
    return list(conn.execute(select(found.c.trace_id).order_by(found.c.start_ns.desc(), found.c.trace_id)
                             .limit(limit)).scalars())


# --------------------------------------------------------------------------- one trace


def _field(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _assemble_on_the_fly(spans: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict], int, Any]:
    """depth / self time / critical path for spans the finalizer has not assembled yet.

    Returns ({span_id: assembled span}, warnings, clock skew ns, summary).
    """
    codec_spans = [
        {**s, "attributes": _json(s.get("attributes"), {}), "events": _json(s.get("events"), []),
         "links": _json(s.get("links"), []), "resource": _json(s.get("resource"), {})}
        for s in spans
    ]
    result = assembler.assemble(codec_spans)
    found = _field(result, "spans", result)
    if isinstance(found, Mapping):
        found = list(found.values())
    per_span = {_field(item, "span_id"): item for item in found or []}
    warnings = [w if isinstance(w, dict) else vars(w) for w in _field(result, "warnings", None) or []]
    summary = _field(result, "summary", None)
    return per_span, warnings, int(_field(result, "clock_skew_ns", 0) or 0), summary


def _summary_from_spans(trace_id: str, spans: list[dict[str, Any]]) -> dict[str, Any]:
    """A provisional summary for a trace that has spans but no ``traces`` row yet."""
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if not s.get("parent_span_id")]
    root = min(roots or spans, key=lambda s: (s["start_ns"], s["span_id"]))
    start = min(s["start_ns"] for s in spans)
    end = max(s["end_ns"] for s in spans)
    return {
        "trace_id": trace_id,
        "root_service": root["service"],
        "root_operation": root["name"],
        "start_time": iso_time(start),
        "start_ns": int(start),
        "duration_ms": _ms(end - start),
        "span_count": len(spans),
        "services": sorted({s["service"] for s in spans}),
        "error_count": sum(1 for s in spans if s.get("status_code") == "error"),
        "incomplete": any(s.get("parent_span_id") and s["parent_span_id"] not in ids for s in spans),
        "clock_skew_ms": 0.0,
    }


def _missing_parent_warnings(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    ids = {s["span_id"] for s in spans}
    return [
        {"code": "missing_parent", "span_id": s["span_id"],
         "message": f"parent span {s['parent_span_id']} of {s['name']!r} never arrived; shown as an extra root"}
        for s in spans if s.get("parent_span_id") and s["parent_span_id"] not in ids
    ]


def _span_order(span: Mapping[str, Any]) -> tuple:
    return span["start_ns"], span["span_id"]


def get_trace(conn: Connection, trace_id: str, offset: int = 0,
              limit: int = TRACE_PAGE_SPANS) -> dict[str, Any] | None:
    """The trace ``{trace_id, summary, spans, warnings}`` or None when unknown; at most ``limit`` spans.

    Spans are ordered by start time; a trace of more than ``limit`` spans (or a
    request with an ``offset``) answers one page: ``truncated`` is true,
    ``total_spans`` says how many there are and ``next_offset`` where the next
    page starts (null on the last). A whole trace uses the assembly the
    finalizer stored; while a trace is still open (or a late span has not been
    re-assembled yet) depth, self time and critical path are computed on the
    fly so the trace can be shown as it grows. A page of a bigger trace shows
    the stored assembly only.
    """
    limit = max(1, min(int(limit), TRACE_PAGE_SPANS))
    offset = max(0, int(offset))
    staged, found = block_store.trace_parts(conn, [trace_id])
    data, staged_rows = found.get(trace_id), staged.get(trace_id, [])
    trace_row = None
    if data is not None:
        cols = blocks.columns(data)
        trace_row = _trace_row(conn, trace_id)
        if not staged_rows and trace_row is not None:
            answer = _trace_of_block(trace_id, cols, trace_row, offset, limit)
            if answer is not None:
                return answer
    every = block_store.merged(data, staged_rows)
    if not every:
        return None
    every.sort(key=_span_order)
    total = len(every)
    paged = offset > 0 or total > limit
    rows = every[offset:offset + limit] if paged else every
    if trace_row is None:
        trace_row = _trace_row(conn, trace_id)
    page = _page(total, offset, limit, len(rows))
    if paged:
        summary = summary_from_row(trace_row) if trace_row is not None else _summary_of_page(trace_id, rows, every)
        warnings = _stored_warnings(trace_row) if trace_row else []
        warnings.append(_truncated_warning(total, offset, len(rows)))
        return {"trace_id": trace_id, "summary": summary, "spans": [span_to_api(r) for r in rows],
                "warnings": warnings, **page}
    assembled = trace_row is not None and all(r["depth"] is not None for r in rows) \
        and int(trace_row["span_count"]) == len(rows)
    warnings: list[dict[str, Any]] = []
    if assembled:
        summary = summary_from_row(trace_row)
        warnings = _stored_warnings(trace_row)
    else:
        summary = _summary_from_spans(trace_id, rows)
        computed = _assemble_on_the_fly(rows)
        if computed:
            per_span, warnings, skew_ns, assembled_summary = computed
            if isinstance(assembled_summary, Mapping) and assembled_summary.get("span_count"):
                summary = summary_from_row({**assembled_summary, "trace_id": trace_id})
            for r in rows:
                item = per_span.get(r["span_id"])
                if item is not None:
                    r["depth"] = _field(item, "depth")
                    r["self_time_ns"] = _field(item, "self_time_ns")
                    r["critical_path"] = bool(_field(item, "critical_path", False))
            summary["clock_skew_ms"] = _ms(skew_ns)
        if not warnings:
            warnings = _missing_parent_warnings(rows)
    return {"trace_id": trace_id, "summary": summary, "spans": [span_to_api(r) for r in rows],
            "warnings": warnings, **page}


def _trace_row(conn: Connection, trace_id: str) -> Mapping[str, Any] | None:
    return block_store.trace_rows(conn, [trace_id]).get(trace_id)


def _stored_warnings(trace_row: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [w for w in _json(trace_row["warnings"], []) if isinstance(w, dict)]


def _page(total: int, offset: int, limit: int, shown: int) -> dict[str, Any]:
    """The paging fields of a trace answer showing ``shown`` spans from ``offset``."""
    paged = offset > 0 or total > limit
    return {"total_spans": int(total), "offset": offset, "limit": limit, "truncated": paged,
            "next_offset": offset + shown if paged and offset + shown < total else None}


def _truncated_warning(total: int, offset: int, shown: int) -> dict[str, Any]:
    return {"code": "truncated", "message": f"{total} spans: this answer holds spans {offset} to "
            f"{offset + shown} in start order; ask for the rest with ?offset="}


def _trace_of_block(trace_id: str, cols: blocks.Columns, trace_row: Mapping[str, Any], offset: int,
                    limit: int) -> dict[str, Any] | None:
    """The answer for a finalized trace with no staged span, built from its block's columns (the common
    case, and the one big traces take); None when the block and the summary disagree on the span count
    (the general path then re-assembles, as for a trace still growing)."""
    total = len(cols.ids)
    paged = offset > 0 or total > limit
    if not paged and int(trace_row["span_count"]) != total:
        return None
    order = sorted(range(total), key=list(zip(cols.starts, cols.ids)).__getitem__)  # start order, then span id
    if paged:
        order = order[offset:offset + limit]
    warnings = _stored_warnings(trace_row)
    if paged:
        warnings.append(_truncated_warning(total, offset, len(order)))
    return {"trace_id": trace_id, "summary": summary_from_row(trace_row), "spans": api_spans_of_block(cols, order),
            "warnings": warnings, **_page(total, offset, limit, len(order))}


def _summary_of_page(trace_id: str, rows: list[dict[str, Any]], every: list[dict[str, Any]]) -> dict[str, Any]:
    """A provisional summary of a big unfinalized trace: counts and extent from all its spans, the rest
    from the page (the root is the earliest span shown)."""
    start, end = min(s["start_ns"] for s in every), max(s["end_ns"] for s in every)
    summary = _summary_from_spans(trace_id, rows) if rows else {"trace_id": trace_id, "services": []}
    summary.update(start_time=iso_time(start), start_ns=int(start), duration_ms=_ms(int(end) - int(start)),
                   span_count=len(every), error_count=sum(1 for s in every if s.get("status_code") == "error"))
    return summary


def find_linking_traces(conn: Connection, trace_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Traces whose spans link to ``trace_id`` (span links point forward only, so this is the way back).

    Bounded on purpose: only traces starting within ``BACKLINK_WINDOW_NS`` of the trace are read, the
    ``BACKLINK_TRACE_LIMIT`` nearest in start time (half before, half after), plus spans still staged
    there (at most ``BACKLINK_SCAN_LIMIT``), which covers fan-in and batch consumers of the same flow.
    """
    s = schema.spans
    row = _trace_row(conn, trace_id)
    start = None if row is None else row["start_ns"]
    if start is None:
        start = conn.execute(select(func.min(s.c.start_ns)).where(s.c.trace_id == trace_id)).scalar()
    if start is None:
        return []
    half = BACKLINK_TRACE_LIMIT // 2

    def nearest(lo: int, hi: int, descending: bool) -> list[str]:
        found = periods.union(conn, schema.traces, lambda t: [t.c.trace_id, t.c.start_ns],
                              lambda t: [t.c.start_ns.between(lo, hi), t.c.trace_id != trace_id],
                              days=(partitions.day_of(max(0, lo)), partitions.day_of(max(0, hi)))).subquery()
        order = found.c.start_ns.desc() if descending else found.c.start_ns
        return list(conn.execute(select(found.c.trace_id).order_by(order).limit(half)).scalars())

    candidates = nearest(start, start + BACKLINK_WINDOW_NS, False) + \
        nearest(start - BACKLINK_WINDOW_NS, start - 1, True)
    staged = conn.execute(
        select(s.c.trace_id).where(s.c.start_ns.between(start - BACKLINK_WINDOW_NS, start + BACKLINK_WINDOW_NS))
        .where(s.c.linked).where(s.c.trace_id != trace_id).limit(BACKLINK_SCAN_LIMIT)).scalars()
    candidates = sorted(set(candidates) | set(staged))
    spans = [span for found in block_store.trace_spans(conn, candidates).values() for span in found
             if span["links"] and span["links"] != "[]"]
    spans.sort(key=_span_order)
    out: list[dict[str, Any]] = []
    for span in spans:
        for link in _json(span["links"], []):
            if isinstance(link, dict) and link.get("trace_id") == trace_id:
                out.append({"trace_id": span["trace_id"], "span_id": span["span_id"], "service": span["service"],
                            "name": span["name"], "linked_span_id": link.get("span_id")})
                break
        if len(out) >= limit:
            break
    return out


# --------------------------------------------------------------------------- services


def list_services(conn: Connection) -> list[dict[str, Any]]:
    """Every service seen in finalized traces, with its operation and trace counts."""
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            f"SELECT x >> {search_keys.OP_SHIFT}, count(DISTINCT x & {_OP_MASK}), count(DISTINCT trace_no) "
            f"FROM {schema.trace_search_keys.name}, unnest(op_keys) AS x "
            f"WHERE x >> {search_keys.OP_SHIFT} > 0 AND x & {_OP_MASK} > 0 GROUP BY 1").all()
    else:
        o = _postings(conn, lambda t: [t.c.service_id, t.c.operation_id, t.c.trace_no])
        rows = conn.execute(
            select(o.c.service_id, func.count(func.distinct(o.c.operation_id)),
                   func.count(func.distinct(o.c.trace_no))).group_by(o.c.service_id)
        ).all()
    names = search_keys.names_of(conn, [r[0] for r in rows])
    out = [{"name": names[sid], "operation_count": int(ops), "trace_count": int(traces)}
           for sid, ops, traces in rows if sid in names]
    return sorted(out, key=lambda item: item["name"])


def list_operations(conn: Connection, service: str) -> list[dict[str, Any]]:
    """Operations of ``service``: name, how many traces contain it, how many with an error there."""
    sid = search_keys.lookup(conn, [service]).get(service)
    if sid is None:
        return []
    if conn.dialect.name == "postgresql":
        rows = conn.exec_driver_sql(
            f"SELECT x & {_OP_MASK}, count(*), sum(CASE WHEN x = ANY(error_ops) THEN 1 ELSE 0 END) "
            f"FROM {schema.trace_search_keys.name}, unnest(op_keys) AS x "
            f"WHERE x >> {search_keys.OP_SHIFT} = %(sid)s AND x & {_OP_MASK} > 0 GROUP BY 1", {"sid": sid}).all()
    else:
        o = _postings(conn, lambda t: [t.c.operation_id, t.c.error], lambda t: [t.c.service_id == sid])
        rows = conn.execute(
            select(o.c.operation_id, func.count(), func.sum(cast(o.c.error, Integer))).group_by(o.c.operation_id)
        ).all()
    names = search_keys.names_of(conn, [r[0] for r in rows])
    out = [{"name": names[oid], "count": int(count), "error_count": int(errors or 0)}
           for oid, count, errors in rows if oid in names]
    return sorted(out, key=lambda item: item["name"])


def _postings(conn: Connection, columns, where=None):
    """``trace_operations`` of every part (rows readers see) as one subquery."""
    return periods.union(conn, schema.trace_operations, columns, where).subquery()


def service_exists(conn: Connection, service: str) -> bool:
    sid = search_keys.lookup(conn, [service]).get(service)
    if sid is None:
        return False
    if conn.dialect.name == "postgresql":
        k = schema.trace_search_keys
        return conn.execute(select(k.c.trace_no).where(k.c.op_keys.contains(key_array([search_keys.op_key(sid)])))
                            .limit(1)).first() is not None
    o = _postings(conn, lambda t: [t.c.trace_no], lambda t: [t.c.service_id == sid])
    return conn.execute(select(o.c.trace_no).limit(1)).first() is not None


def last_finalized_ns(conn: Connection) -> int | None:
    latest = periods.union(conn, schema.traces, lambda t: [func.max(t.c.finalized_ns).label("finalized_ns")])
    return conn.execute(select(func.max(latest.subquery().c.finalized_ns))).scalar()


# --------------------------------------------------------------------------- derived views


def trace_timeline(trace: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The trace as events in time order: span starts and ends, checkpoints, errors.

    Each event also carries ``time`` (ISO-8601) besides ``time_ns``.
    """
    from collector_worker.exporters import timeline_events

    events = timeline_events(dict(trace))
    for event in events:
        event["time"] = iso_time(event.get("time_ns"))
    return events


def _operation_profile(trace: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, float]]:
    profile: dict[tuple[str, str], dict[str, float]] = {}
    for span in trace.get("spans") or []:
        item = profile.setdefault((span["service"], span["name"]),
                                  {"count": 0, "duration_ms": 0.0, "self_time_ms": 0.0, "errors": 0})
        item["count"] += 1
        item["duration_ms"] += float(span.get("duration_ms") or 0.0)
        item["self_time_ms"] += float(span.get("self_time_ms") or 0.0)
        item["errors"] += 1 if span.get("status") == "error" else 0
    return profile


def compare_traces(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Where two traces of the same flow differ, per (service, operation).

    For each operation: span counts, total and self time in each trace and the
    difference (b - a); operations present in only one trace are the
    structural differences. Sorted by the largest absolute self-time change.
    """
    pa, pb = _operation_profile(a), _operation_profile(b)
    empty = {"count": 0, "duration_ms": 0.0, "self_time_ms": 0.0, "errors": 0}
    operations = []
    for key in set(pa) | set(pb):
        x, y = pa.get(key, empty), pb.get(key, empty)
        presence = "both" if key in pa and key in pb else ("only_a" if key in pa else "only_b")
        operations.append({
            "service": key[0], "name": key[1], "presence": presence,
            "count_a": int(x["count"]), "count_b": int(y["count"]),
            "duration_ms_a": round(x["duration_ms"], 6), "duration_ms_b": round(y["duration_ms"], 6),
            "self_time_ms_a": round(x["self_time_ms"], 6), "self_time_ms_b": round(y["self_time_ms"], 6),
            "errors_a": int(x["errors"]), "errors_b": int(y["errors"]),
            "delta_ms": round(y["duration_ms"] - x["duration_ms"], 6),
            "self_delta_ms": round(y["self_time_ms"] - x["self_time_ms"], 6),
        })
    operations.sort(key=lambda op: (-abs(op["self_delta_ms"]), op["service"], op["name"]))
    sa, sb = a["summary"], b["summary"]
    return {
        "a": sa,
        "b": sb,
        "duration_delta_ms": round(sb["duration_ms"] - sa["duration_ms"], 6),
        "span_count_delta": sb["span_count"] - sa["span_count"],
        "same_root": (sa["root_service"], sa["root_operation"]) == (sb["root_service"], sb["root_operation"]),
        "operations": operations,
        "structure": {
            "only_in_a": [op for op in operations if op["presence"] == "only_a"],
            "only_in_b": [op for op in operations if op["presence"] == "only_b"],
            "count_changed": [op for op in operations if op["presence"] == "both" and op["count_a"] != op["count_b"]],
        },
    }



def trace_exists(conn: Connection, trace_id: str) -> bool:
    """Whether any span of ``trace_id`` is stored (in its block or staged)."""
    s = schema.spans
    return _trace_row(conn, trace_id) is not None \
        or conn.execute(select(s.c.batch_id).where(s.c.trace_id == trace_id).limit(1)).first() is not None
