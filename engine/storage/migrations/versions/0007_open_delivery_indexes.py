"""Partial indexes over the deliveries still to make, for the outbox's claim.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

OPEN = sa.text("state IN ('pending', 'sending')")


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_open_id",
        "deliveries",
        ["id"],
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )
    op.create_index(
        "ix_deliveries_open_stream",
        "deliveries",
        ["execution_id", "target", "id"],
        sqlite_where=OPEN,
        postgresql_where=OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_open_stream", table_name="deliveries")
    op.drop_index("ix_deliveries_open_id", table_name="deliveries")
