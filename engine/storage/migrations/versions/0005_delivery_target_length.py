"""Delivery targets hold ``terminal:<session id>``: 128 characters, not 32.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "target", existing_type=sa.String(length=32), type_=sa.String(length=128)
        )


def downgrade() -> None:
    with op.batch_alter_table("deliveries", schema=None) as batch_op:
        batch_op.alter_column(
            "target", existing_type=sa.String(length=128), type_=sa.String(length=32)
        )
