"""Application metrics: ``metric_points`` (per-minute and hourly series), ``metric_histogram`` (their
histogram bins) and ``metric_entries`` (stream entries already stored, for redelivery).

New tables only; nothing existing moves.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metric_points",
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("series", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("service", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("unit", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=True),
        sa.Column("attributes", sa.Text, nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.Column("sum", sa.Float, nullable=False),
        sa.Column("min", sa.Float, nullable=True),
        sa.Column("max", sa.Float, nullable=True),
        sa.Column("last", sa.Float, nullable=True),
        sa.Column("last_ns", sa.BigInteger, nullable=True),
        sa.Column("exemplars", sa.Text, nullable=False),
    )
    op.create_index("ix_metric_points_name", "metric_points", ["name", "resolution", "bucket"])
    op.create_index("ix_metric_points_bucket", "metric_points", ["resolution", "bucket"])
    op.create_table(
        "metric_histogram",
        sa.Column("resolution", sa.Integer, primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("series", sa.String(40), primary_key=True),
        sa.Column("bin", sa.Integer, primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "metric_entries",
        sa.Column("entry_id", sa.String(64), primary_key=True),
        sa.Column("stored_ns", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_metric_entries_stored", "metric_entries", ["stored_ns"])


def downgrade() -> None:
    raise NotImplementedError("Contrail migrations run forward only")
