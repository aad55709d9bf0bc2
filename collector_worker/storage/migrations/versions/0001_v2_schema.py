"""The schema of the releases before Alembic (the hand-written runner's version 2).

Written out table by table rather than from schema.py, so this revision creates the same
tables however schema.py changes later. A database that runner left at version 2 is stamped
here without running it; one at version 1 first gains ``dropped_traces`` through
``create_dropped_traces``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spans",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("parent_span_id", sa.String(16), nullable=True),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("name", sa.String(512), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("duration_ns", sa.BigInteger, nullable=False),
        sa.Column("status_code", sa.String(8), nullable=False),
        sa.Column("status_message", sa.Text, nullable=True),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("events", sa.Text, nullable=False),
        sa.Column("links", sa.Text, nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("scope", sa.String(255), nullable=True),
        sa.Column("received_ns", sa.BigInteger, nullable=False),
        sa.Column("depth", sa.Integer, nullable=True),
        sa.Column("self_time_ns", sa.BigInteger, nullable=True),
        sa.Column("critical_path", sa.Boolean, nullable=False),
    )
    op.create_index("ix_spans_start", "spans", ["start_ns"])

    op.create_table(
        "pending_traces",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("first_seen_ns", sa.BigInteger, nullable=False),
        sa.Column("last_seen_ns", sa.BigInteger, nullable=False),
        sa.Column("claimed_by", sa.String(255), nullable=True),
        sa.Column("claimed_until_ns", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_pending_last_seen", "pending_traces", ["last_seen_ns"])

    op.create_table(
        "traces",
        sa.Column("trace_id", sa.String(32), primary_key=True),
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
    )
    op.create_index("ix_traces_start", "traces", ["start_ns"])
    op.create_index("ix_traces_duration", "traces", ["duration_ns"])
    op.create_index("ix_traces_root", "traces", ["root_service", "root_operation", "start_ns"])
    op.create_index("ix_traces_errors", "traces", ["error_count", "start_ns"])

    op.create_table(
        "trace_operations",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("service", sa.String(255), primary_key=True),
        sa.Column("operation", sa.String(512), primary_key=True),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Boolean, nullable=False),
    )
    op.create_index("ix_traceops_service", "trace_operations", ["service", "start_ns"])
    op.create_index("ix_traceops_operation", "trace_operations", ["service", "operation", "start_ns"])

    op.create_table(
        "trace_tags",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("value", sa.String(255), primary_key=True),
        sa.Column("value_num", sa.Float, nullable=True),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_tracetags_value", "trace_tags", ["key", "value", "start_ns"])
    op.create_index("ix_tracetags_num", "trace_tags", ["key", "value_num"])

    op.create_table(
        "stats",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("service", sa.String(255), primary_key=True),
        sa.Column("operation", sa.String(512), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("error_count", sa.BigInteger, nullable=False),
        sa.Column("total_ns", sa.BigInteger, nullable=False),
        sa.Column("max_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_stats_bucket", "stats", ["resolution", "bucket"])

    op.create_table(
        "stats_histogram",
        sa.Column("scope", sa.String(8), primary_key=True),
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("service", sa.String(255), primary_key=True),
        sa.Column("operation", sa.String(512), primary_key=True),
        sa.Column("bin", sa.Integer, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )

    op.create_table(
        "dependencies",
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("caller", sa.String(255), primary_key=True),
        sa.Column("callee", sa.String(255), primary_key=True),
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("total_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_deps_bucket", "dependencies", ["resolution", "bucket"])

    op.create_table(
        "llm_usage",
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("service", sa.String(255), primary_key=True),
        sa.Column("model", sa.String(255), primary_key=True),
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("agent", sa.String(255), primary_key=True),
        sa.Column("calls", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cache_read_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        sa.Column("total_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_llm_bucket", "llm_usage", ["resolution", "bucket"])

    create_dropped_traces(op)

    # The hand-written runner's version table, kept: migrations.py writes a version into it that
    # releases from before Alembic refuse to run against.
    op.create_table(
        "contrail_schema",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("migrated_ns", sa.BigInteger, nullable=False),
    )


def create_dropped_traces(operations) -> None:
    """Version 2 of the hand-written runner: tombstones of traces dropped by tail sampling."""
    operations.create_table(
        "dropped_traces",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("dropped_ns", sa.BigInteger, nullable=False),
    )
    operations.create_index("ix_dropped_start", "dropped_traces", ["start_ns"])


def downgrade() -> None:
    raise NotImplementedError("Contrail migrates forward only; restore a backup to go back")
