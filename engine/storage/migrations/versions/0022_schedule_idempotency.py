"""A schedule made twice by the same request is made once: ``schedules.idempotency_key``
(unique while set), as executions have: a Slack retry reaching another process, or an API
client sending its ``Idempotency-Key`` again, finds the first schedule.

Revision ID: 0022
Revises: 0021
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("schedules") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(length=512), nullable=True))
    op.create_index("ix_schedules_idempotency_key", "schedules", ["idempotency_key"], unique=True)


def downgrade() -> None:
    op.drop_index("ix_schedules_idempotency_key", table_name="schedules")
    with op.batch_alter_table("schedules") as batch:
        batch.drop_column("idempotency_key")
