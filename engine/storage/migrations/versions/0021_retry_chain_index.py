"""The retries of a chain are found by their first run (``GET
/api/v1/executions?original_execution=``, and the cancel that calls a chain's pending retry
off); only retries are indexed: one index write per retry, none for other executions.

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_executions_original_execution",
        "executions",
        ["original_execution"],
        sqlite_where=sa.text("original_execution IS NOT NULL"),
        postgresql_where=sa.text("original_execution IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_original_execution", table_name="executions")
