"""Reads behind the AI sessions and users views: traces carrying a tag key, newest first, by keyset.

Session and user ids are span attributes (``session.id``, ``user.id``), so a
finalized trace is posted under them like any tag (``trace_tags``). A search
for one value goes through :func:`queries.search_traces`; listing sessions
needs every trace that has *some* value of the key, which is this module's
query. Like the trace search it pages by (start time, trace id).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_, select, union_all
from sqlalchemy.engine import Connection

from . import block_store, periods, schema, search_keys
from .queries import TraceQuery, key_array, window_days


def traces_with_key(conn: Connection, key: str, start_ns: int | None, end_ns: int | None,
                    before: tuple[int, str] | None, limit: int, tags: list[tuple[str, str]] = (),
                    exclude: list[str] = ()) -> list[dict[str, Any]]:
    """Finalized traces posted under tag ``key`` (any value), newest first, strictly after ``before``
    (the (start_ns, trace_id) of the last trace already read); ``trace_id`` and ``start_ns`` of each.

    ``tags`` (key, value) pairs must also be posted on the trace; traces posted under ``key`` with one of
    the ``exclude`` values are left out (sessions already found need not be read again). Every part is read
    (SQLite: the main file and the period files of sealed days; PostgreSQL: the array postings).
    """
    wanted = [key, *(k for k, _ in tags)]
    ids = search_keys.lookup(conn, wanted)
    if any(name not in ids for name in wanted):
        return []
    arms = []
    for part in periods.parts(conn):
        if not part.holds_days(*window_days(TraceQuery(start_ns=start_ns, end_ns=end_ns))):
            continue
        t = part.table(schema.traces).c
        if part.postgres:
            k = schema.trace_search_keys.c
            wanted_keys = [search_keys.tag_key_marker(ids[key])]
            wanted_keys += [search_keys.tag_key(ids[tag_key], search_keys.tag_hash(value)) for tag_key, value in tags]
            where = [t.trace_no.in_(select(k.trace_no).where(k.tag_keys.contains(key_array(wanted_keys))))]
            if exclude:
                unwanted = key_array(search_keys.tag_key(ids[key], search_keys.tag_hash(v)) for v in exclude)
                where.append(~t.trace_no.in_(select(k.trace_no).where(k.tag_keys.overlap(unwanted))))
        else:
            g = part.table(schema.trace_tags).c
            where = [t.trace_no.in_(select(g.trace_no).where(g.key_id == ids[key]))]
            for tag_key, value in tags:
                where.append(t.trace_no.in_(select(g.trace_no).where(
                    g.key_id == ids[tag_key], g.value_hash == search_keys.tag_hash(value))))
            if exclude:
                hashes = sorted({search_keys.tag_hash(value) for value in exclude})
                where.append(~t.trace_no.in_(select(g.trace_no).where(g.key_id == ids[key],
                                                                     g.value_hash.in_(hashes))))
        if start_ns is not None:
            where.append(t.start_ns >= start_ns)
        if end_ns is not None:
            where.append(t.start_ns <= end_ns)
        if before is not None:
            where.append(or_(t.start_ns < before[0], and_(t.start_ns == before[0], t.trace_id < before[1])))
        visible = part.visible(t.trace_no)
        if visible is not None:
            where.append(visible)
        arms.append(select(t.trace_id, t.start_ns).where(*where))
    if not arms:
        return []
    found = (arms[0] if len(arms) == 1 else union_all(*arms)).subquery()
    rows = conn.execute(select(found.c.trace_id, found.c.start_ns)
                        .order_by(found.c.start_ns.desc(), found.c.trace_id.desc()).limit(limit)).all()
    return [{"trace_id": trace_id, "start_ns": int(start)} for trace_id, start in rows]


def trace_rows(conn: Connection, trace_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The summary columns the AI views read (start, duration, errors) of finalized ``trace_ids``."""
    if not trace_ids:
        return {}
    found = block_store.trace_rows(conn, trace_ids, ("trace_id", "start_ns", "duration_ns", "error_count"))
    return {trace_id: dict(row) for trace_id, row in found.items()}
