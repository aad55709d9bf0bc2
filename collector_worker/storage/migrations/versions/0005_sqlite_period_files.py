"""SQLite period files: the bookkeeping of finalized days sealed into files of their own (``storage/periods.py``).

``sealed_layout`` (one row) holds the watermark ``(sealed_through, sealed_seq)`` that says which
finalized rows are read from period files, the sealing lease and a version readers compare on checkout;
``sealed_periods`` lists the published period files; ``superseded_traces`` hides the period-file copy of
a trace re-finalized since. Nothing is sealed yet, so every existing trace stays where it is (the main
file) and is read as before; the first retention pass seals the days that have ended.

PostgreSQL partitions its tables by day (0003) and needs none of this: no change there.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.create_table(
        "sealed_layout",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("sealed_through", sa.BigInteger, nullable=False),  # last sealed day, -1: none yet
        sa.Column("sealed_seq", sa.BigInteger, nullable=False),
        sa.Column("sealed_ns", sa.BigInteger, nullable=False),
        sa.Column("purged", sa.Boolean, nullable=False),  # the main file's copies of the last seal are deleted
        sa.Column("sealing_through", sa.BigInteger, nullable=False),  # the watermark a seal in progress copies to
        sa.Column("sealing_seq", sa.BigInteger, nullable=False),
        sa.Column("lease_by", sa.String(255), nullable=True),
        sa.Column("lease_until_ns", sa.BigInteger, nullable=True),
    )
    op.execute("INSERT INTO sealed_layout (id, version, sealed_through, sealed_seq, sealed_ns, purged, "
               "sealing_through, sealing_seq) VALUES (1, 0, -1, 0, 0, 1, -1, 0)")
    op.create_table(
        "sealed_periods",
        sa.Column("first_day", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("last_day", sa.BigInteger, nullable=False),
        sa.Column("file", sa.String(64), nullable=False),
    )
    op.create_table(
        "superseded_traces",
        sa.Column("trace_no", sa.Integer, primary_key=True, autoincrement=False),
    )


def downgrade() -> None:
    raise NotImplementedError("Contrail migrations run forward only")
