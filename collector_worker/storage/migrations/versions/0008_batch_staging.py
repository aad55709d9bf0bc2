"""Staging rows per trace and batch: ``spans`` holds one row per trace per stored batch, not one per span.

Each row keeps that trace's spans of the batch as one msgpack list of span dicts (``staging.py``), their span
ids (8 bytes each), count, earliest start, receive time and whether any links. Staged spans are converted:
grouped by trace and receive time, JSON columns parsed; the assembly columns (``depth``, ``self_time_ns``,
``critical_path``) of spans assembled before are kept in their dicts, so re-finalizing a trace queued by
revision 0002 still applies only the difference of its dependency edges. Nothing else moves.
"""

from __future__ import annotations

import hashlib
import json

import msgpack
import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_OLD = ("trace_id", "span_id", "parent_span_id", "service", "name", "kind", "start_ns", "end_ns", "status_code",
        "status_message", "attributes", "events", "links", "resource", "scope", "received_ns", "depth",
        "self_time_ns", "critical_path")
_NEW = ("trace_id", "batch_id", "start_ns", "span_count", "linked", "received_ns", "span_ids", "data")


def _parsed(text, default):
    if not isinstance(text, str):
        return default if text is None else text
    try:
        value = json.loads(text or "null")
    except ValueError:
        return default
    return default if value is None else value


def _span(row) -> dict:
    old = dict(zip(_OLD, row))
    span = {k: old[k] for k in ("trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
                                "status_code", "status_message", "service", "scope")}
    span["attributes"] = _parsed(old["attributes"], {})
    span["events"] = _parsed(old["events"], [])
    span["links"] = _parsed(old["links"], [])
    span["resource"] = _parsed(old["resource"], {})
    if old["depth"] is not None:  # assembled before (a v2 trace queued again by 0002)
        span["depth"], span["self_time_ns"] = int(old["depth"]), int(old["self_time_ns"] or 0)
        span["critical_path"] = bool(old["critical_path"])
    return span


def _row(spans: list[dict], received_ns: int) -> dict:
    try:
        ids = bytes.fromhex("".join(s["span_id"] for s in spans))
    except ValueError:  # a span id that is not 16 hex digits: kept under a digest of itself
        ids = b"".join(hashlib.blake2b(s["span_id"].encode(), digest_size=8).digest() for s in spans)
    data = msgpack.packb(spans, use_bin_type=True, default=str)
    return dict(zip(_NEW, (spans[0]["trace_id"], hashlib.blake2b(ids, digest_size=16).hexdigest(),
                           min(s["start_ns"] for s in spans), len(spans), any(s["links"] for s in spans),
                           received_ns, ids, data)))


def upgrade() -> None:
    op.drop_index("ix_spans_start", table_name="spans")
    op.rename_table("spans", "spans_v2")
    table = op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("batch_id", sa.String(32), primary_key=True),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.Column("linked", sa.Boolean, nullable=False),
        sa.Column("received_ns", sa.BigInteger, nullable=False),
        sa.Column("span_ids", sa.LargeBinary, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    bind = op.get_bind()
    result = bind.execute(sa.text(f"SELECT {', '.join(_OLD)} FROM spans_v2 ORDER BY trace_id, received_ns, span_id"))
    group: list[dict] = []
    key = None
    out: list[dict] = []
    while True:
        rows = result.fetchmany(5000)
        for row in rows:
            row_key = (row[0], int(row[15]))
            if row_key != key and group:
                out.append(_row(group, key[1]))
                group = []
            key = row_key
            group.append(_span(row))
        if len(out) >= 1000 or (not rows and out):
            bind.execute(table.insert(), out)
            out = []
        if not rows:
            break
    if group:
        bind.execute(table.insert(), [_row(group, key[1])])
    op.drop_table("spans_v2")
    op.create_index("ix_spans_start", "spans", ["start_ns"])


def downgrade() -> None:
    raise NotImplementedError("Contrail migrates forward only; restore a backup to go back")
