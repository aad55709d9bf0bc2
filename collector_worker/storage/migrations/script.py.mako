"""${message}

Revision ${up_revision}, on top of ${down_revision | comma,n}. Write the DDL explicitly (op.create_table,
op.add_column, op.execute ...), never from schema.py, so this file means the same thing forever.
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa
${imports if imports else ""}

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    ${downgrades if downgrades else "raise NotImplementedError(\"Contrail migrates forward only\")"}
