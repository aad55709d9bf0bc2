"""Sampling profiles of spans: ``profiles`` (tracer.profiler, stored by collector_worker.profile_store).

A new table only; nothing existing moves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("trace_id", sa.String(32), primary_key=True),
        sa.Column("span_id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("mode", sa.String(16), primary_key=True),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(255), nullable=True),
        sa.Column("start_ns", sa.BigInteger, nullable=False),
        sa.Column("end_ns", sa.BigInteger, nullable=False),
        sa.Column("interval_ns", sa.BigInteger, nullable=False),
        sa.Column("samples", sa.BigInteger, nullable=False),
        sa.Column("dropped", sa.BigInteger, nullable=False),
        sa.Column("stacks", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_profiles_operation", "profiles", ["operation", "start_ns"])
    op.create_index("ix_profiles_service", "profiles", ["service", "start_ns"])
    op.create_index("ix_profiles_start", "profiles", ["start_ns"])


def downgrade() -> None:
    raise NotImplementedError("Contrail migrations run forward only")
