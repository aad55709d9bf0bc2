"""Reads behind the latency heat map: histogram counts per (time column, duration row), and the traces of a cell.

The counts come from ``stats_histogram`` (never from spans), summed in the
database per column of ``step_s`` seconds and per row of ``row_bins``
adjacent histogram bins, so a day of minute rows comes back as a few
thousand numbers. The traces of a selected region come from ``traces``:
trace-scope histograms are keyed by the trace's root service and operation
and its start minute, so the same keys select exactly the traces counted.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, case, func, or_, select
from sqlalchemy.engine import Connection

from . import schema
from .queries import MAX_LIMIT, TOTAL_CAP, QueryError, decode_cursor, encode_cursor, summary_from_row

CELL_SORTS = ("start_desc", "start_asc", "duration_desc", "duration_asc")


def histogram_cells(conn: Connection, scopes: tuple[str, ...], service: str | None, operation: str | None,
                    first_bucket: int, end_bucket: int, resolution: int, step_s: int,
                    row_bins: int) -> list[tuple[str, int, int, int]]:
    """``(scope, column start, row, count)`` summed over ``[first_bucket, end_bucket)`` (unix seconds).

    A column starts at a multiple of ``step_s``; row ``r`` holds bins
    ``r * row_bins + 1 .. (r + 1) * row_bins`` (row 0 also bin 0, the zero-length samples).
    """
    h = schema.stats_histogram
    column = h.c.bucket - h.c.bucket % step_s
    row = case((h.c.bin < 1, 0), else_=(h.c.bin - 1) // row_bins)
    query = (select(h.c.scope, column.label("col"), row.label("row"), func.sum(h.c.count).label("n"))
             .where(h.c.scope.in_(scopes), h.c.resolution == resolution,
                    h.c.bucket >= first_bucket, h.c.bucket < end_bucket)
             .group_by(h.c.scope, column, row))
    if service is not None:
        query = query.where(h.c.service == service)
    if operation is not None:
        query = query.where(h.c.operation == operation)
    return [(scope, int(col), int(r), int(n)) for scope, col, r, n in conn.execute(query) if n and n > 0]


def cell_traces(conn: Connection, *, root_service: str | None, root_operation: str | None, start_ns: int,
                end_ns: int, min_duration_ns: int, max_duration_ns: int, status: str | None = None,
                sort: str = "start_desc", limit: int = 20, cursor: str | None = None) -> dict[str, Any]:
    """Finalized traces starting in ``[start_ns, end_ns)`` with durations in ``[min, max]`` ns, one page.

    ``root_service`` / ``root_operation`` match the trace's root, the keys of the
    trace-scope histograms the heat map draws. Paged by keyset (``next_cursor``).
    """
    if sort not in CELL_SORTS:
        raise QueryError("sort", f"unknown sort {sort!r}: use one of {', '.join(CELL_SORTS)}")
    if not 1 <= limit <= MAX_LIMIT:
        raise QueryError("limit", f"limit must be between 1 and {MAX_LIMIT}")
    t = schema.traces
    where = [t.c.start_ns >= start_ns, t.c.start_ns < end_ns,
             t.c.duration_ns >= min_duration_ns, t.c.duration_ns <= max_duration_ns]
    if root_service is not None:
        where.append(t.c.root_service == root_service)
    if root_operation is not None:
        where.append(t.c.root_operation == root_operation)
    if status == "error":
        where.append(t.c.error_count > 0)
    elif status == "ok":
        where.append(t.c.error_count == 0)
    column = t.c.duration_ns if sort.startswith("duration") else t.c.start_ns
    descending = sort.endswith("desc")
    page_where = list(where)
    if cursor:
        value, trace_id = decode_cursor(cursor, sort)
        if descending:
            page_where.append(or_(column < value, and_(column == value, t.c.trace_id < trace_id)))
        else:
            page_where.append(or_(column > value, and_(column == value, t.c.trace_id > trace_id)))
    order = [column.desc(), t.c.trace_id.desc()] if descending else [column.asc(), t.c.trace_id.asc()]
    rows = conn.execute(select(t).where(*page_where).order_by(*order).limit(limit + 1)).mappings().all()
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(sort, last["duration_ns"] if column is t.c.duration_ns else last["start_ns"],
                                    last["trace_id"])
    counted = select(t.c.trace_id).where(*where).limit(TOTAL_CAP + 1).subquery()
    total = int(conn.execute(select(func.count()).select_from(counted)).scalar_one())
    return {"traces": [summary_from_row(r) for r in rows], "total": min(total, TOTAL_CAP),
            "total_capped": total > TOTAL_CAP, "next_cursor": next_cursor}
