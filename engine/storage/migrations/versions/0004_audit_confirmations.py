"""Audit log, chat confirmations, and actions that ask for confirmation.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("confirm", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.create_table(
        "audit",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("actor", sa.String(length=256), nullable=False),
        sa.Column("role", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=128), nullable=True),
        sa.Column("verb", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=256), nullable=True),
        sa.Column("parameters", JSON, nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("execution_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_index("ix_audit_at", "audit", ["at"])
    op.create_index("ix_audit_actor_at", "audit", ["actor", "at"])
    op.create_table(
        "confirmations",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("action_ref", sa.String(length=256), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("requester", sa.String(length=256), nullable=False),
        sa.Column("executor", JSON, nullable=False),
        sa.Column("chat", JSON, nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("execution_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_confirmations")),
        sa.UniqueConstraint("code", name=op.f("uq_confirmations_code")),
    )


def downgrade() -> None:
    op.drop_table("confirmations")
    op.drop_index("ix_audit_actor_at", table_name="audit")
    op.drop_index("ix_audit_at", table_name="audit")
    op.drop_table("audit")
    with op.batch_alter_table("actions", schema=None) as batch_op:
        batch_op.drop_column("confirm")
