"""Live tail: the traces finalized after a cursor, with the trace search filters applied.

The cursor is ``(finalized_ns, trace_id)`` of the last trace handed out, so a
poll answers exactly what was finalized since (a re-finalized trace comes
again with its new summary). Only traces that started within ``window_ns`` of
now are looked at: that bound is what lets the start-time index narrow every
poll to the recent traces.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.engine import Connection

from . import schema
from .queries import QueryError, TraceQuery, main_part_filters, summary_from_row


def encode_tail_cursor(finalized_ns: int, trace_id: str) -> str:
    raw = json.dumps([int(finalized_ns), trace_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_tail_cursor(cursor: str) -> tuple[int, str]:
    try:
        finalized_ns, trace_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        finalized_ns = int(finalized_ns)
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise QueryError("cursor", "invalid cursor: pass the cursor of the previous answer unchanged") from None
    if not isinstance(trace_id, str) or not 0 <= finalized_ns < 2**63:
        raise QueryError("cursor", "invalid cursor: pass the cursor of the previous answer unchanged")
    return finalized_ns, trace_id


def finalized_since(conn: Connection, q: TraceQuery, *, since_start_ns: int, cursor: str | None,
                    limit: int) -> dict[str, Any]:
    """The traces matching ``q`` finalized after ``cursor``, oldest first; without a cursor the newest ``limit``.

    Answers ``{traces, cursor, more}``: pass ``cursor`` back on the next poll;
    ``more`` says a full page came back and the next poll should follow at once.
    Each summary carries ``finalized_ns``.
    """
    t = schema.traces
    after = decode_tail_cursor(cursor) if cursor else None  # a bad cursor is the caller's error, whatever matches
    filters = main_part_filters(conn, q)
    if filters is None:  # a name never seen: nothing matches yet
        return {"traces": [], "cursor": cursor or encode_tail_cursor(0, ""), "more": False}
    where = [*filters, t.c.start_ns >= since_start_ns]
    if after is not None:
        after_ns, after_id = after
        where.append(or_(t.c.finalized_ns > after_ns, and_(t.c.finalized_ns == after_ns, t.c.trace_id > after_id)))
        rows = conn.execute(select(t).where(*where).order_by(t.c.finalized_ns.asc(), t.c.trace_id.asc())
                            .limit(limit + 1)).mappings().all()
        more = len(rows) > limit
        rows = list(rows[:limit])
        last = rows[-1] if rows else None
        next_cursor = encode_tail_cursor(last["finalized_ns"], last["trace_id"]) if last else cursor
    else:
        rows = conn.execute(select(t).where(*where).order_by(t.c.finalized_ns.desc(), t.c.trace_id.desc())
                            .limit(limit)).mappings().all()
        rows = list(reversed(rows))
        more = False
        last = rows[-1] if rows else None
        next_cursor = encode_tail_cursor(last["finalized_ns"], last["trace_id"]) if last else encode_tail_cursor(0, "")
    return {"traces": [{**summary_from_row(r), "finalized_ns": int(r["finalized_ns"])} for r in rows],
            "cursor": next_cursor, "more": more}
