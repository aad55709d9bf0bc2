"""Storage engine v2: trace blocks, compact search postings, spans as a staging table.

Finalized traces keep their spans in one compressed block each (``trace_blocks``, with
``block_dictionaries``); ``traces`` gains the number blocks and postings refer to;
``trace_operations`` and ``trace_tags`` become postings of name ids (``names``) and value
hashes, with ``trace_tag_numbers`` for numeric ranges. ``ix_traces_root`` (no query used it)
goes.

The data: ``traces`` rows are copied (numbered in start order) and the old search rows
dropped; every trace with spans is queued in ``pending_traces``, so the collectors
re-finalize it: its spans, still in ``spans``, move into its block, its postings are
written, and its statistics stay exact (the copied summary is subtracted as the new one is
added, and the spans' stored assembly makes the dependency edges a no-op). Until then the
trace is found by the time, duration and status filters and shown whole.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_NUMBER = sa.BigInteger().with_variant(sa.Integer, "sqlite")  # SQLite: INTEGER PRIMARY KEY is the rowid
_TRACE_COLUMNS = ("trace_id, root_span_id, root_service, root_operation, start_ns, end_ns, duration_ns, span_count, "
                  "error_count, services, service_count, incomplete, clock_skew_ns, warnings, finalized_ns, version")


def upgrade() -> None:
    for index in ("ix_traces_start", "ix_traces_duration", "ix_traces_root", "ix_traces_errors"):
        op.drop_index(index, table_name="traces")
    op.rename_table("traces", "traces_v2")
    op.create_table(
        "traces",
        sa.Column("trace_no", _NUMBER, primary_key=True, autoincrement=True),
        sa.Column("trace_id", sa.String(32), nullable=False, unique=True),
        sa.Column("root_span_id", sa.String(16), nullable=True),
        sa.Column("root_service", sa.String(255), nullable=False),
        sa.Column("root_operation", sa.String(512), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ns", sa.BigInteger, nullable=False),
        sa.Column("span_count", sa.Integer, nullable=False),
        sa.Column("error_count", sa.Integer, nullable=False),
        sa.Column("services", sa.Text, nullable=False),
        sa.Column("service_count", sa.Integer, nullable=False),
        sa.Column("incomplete", sa.Boolean, nullable=False),
        sa.Column("clock_skew_ns", sa.BigInteger, nullable=False),
        sa.Column("warnings", sa.Text, nullable=False),
        sa.Column("finalized_ns", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sqlite_autoincrement=True,
    )
    op.execute(f"INSERT INTO traces ({_TRACE_COLUMNS}) SELECT {_TRACE_COLUMNS} FROM traces_v2 "
               f"ORDER BY start_ns, trace_id")
    op.drop_table("traces_v2")
    op.create_index("ix_traces_start", "traces", ["start_ns"])
    op.create_index("ix_traces_duration", "traces", ["duration_ns"])
    op.create_index("ix_traces_errors", "traces", ["error_count", "start_ns"])

    op.create_table(
        "trace_blocks",
        sa.Column("trace_no", _NUMBER, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "block_dictionaries",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_ns", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "names",
        sa.Column("id", _NUMBER, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(512), nullable=False, unique=True),
    )

    for index in ("ix_traceops_service", "ix_traceops_operation"):
        op.drop_index(index, table_name="trace_operations")
    op.drop_table("trace_operations")
    for index in ("ix_tracetags_value", "ix_tracetags_num"):
        op.drop_index(index, table_name="trace_tags")
    op.drop_table("trace_tags")
    op.create_table(
        "trace_operations",
        sa.Column("service_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("trace_no", _NUMBER, primary_key=True, autoincrement=False),
        sa.Column("operation_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("error", sa.Boolean, nullable=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "trace_tags",
        sa.Column("key_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value_hash", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("trace_no", _NUMBER, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "trace_tag_numbers",
        sa.Column("key_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("value_num", sa.Float, primary_key=True, autoincrement=False),
        sa.Column("trace_no", _NUMBER, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,
    )

    # Every stored trace is finalized again into the new layout (see the docstring).
    op.execute("INSERT INTO pending_traces (trace_id, first_seen_ns, last_seen_ns) "
               "SELECT trace_id, min(received_ns), max(received_ns) FROM spans GROUP BY trace_id "
               "ON CONFLICT (trace_id) DO NOTHING")


def downgrade() -> None:
    raise NotImplementedError("Contrail migrates forward only; restore a backup to go back")
