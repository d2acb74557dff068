"""Executions remember their process group (so a restarted worker can kill what a dead one
left running) and an optional idempotency key.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pid_start", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=512), nullable=True))
        batch_op.create_index("ix_executions_idempotency_key", ["idempotency_key"], unique=True)
        batch_op.create_index("ix_executions_worker", ["worker"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("executions", schema=None) as batch_op:
        batch_op.drop_index("ix_executions_worker")
        batch_op.drop_index("ix_executions_idempotency_key")
        batch_op.drop_column("idempotency_key")
        batch_op.drop_column("pid_start")
        batch_op.drop_column("pid")
