"""Inquiries: a run that pauses for a human answer (Attune's ``inquiry``).

``inquiries``: the execution it belongs to, the prompt, the JSON schema an answer must fit,
who may answer (Attune's ``assigned_to`` identity id, and ``assignees``: logins, Slack user ids
or roles), the status (``pending`` | ``responded`` | ``timeout`` | ``cancelled``), the answer,
who gave it and when, the deadline (``timeout_at``, indexed with the status for the sweep), and
the chat message that asks (``chat``: channel and message id).

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def _json() -> Any:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "inquiries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("execution", sa.BigInteger(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("response_schema", _json(), nullable=True),
        sa.Column("assigned_to", sa.BigInteger(), nullable=True),
        sa.Column("assignees", _json(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("response", _json(), nullable=True),
        sa.Column("responded_by", sa.String(length=255), nullable=True),
        sa.Column("responded_at", UTCDateTime(), nullable=True),
        sa.Column("timeout_at", UTCDateTime(), nullable=True),
        sa.Column("chat", _json(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution"],
            ["executions.id"],
            name=op.f("fk_inquiries_execution_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_inquiries")),
    )
    op.create_index("ix_inquiries_execution", "inquiries", ["execution"])
    op.create_index("ix_inquiries_status_timeout_at", "inquiries", ["status", "timeout_at"])


def downgrade() -> None:
    op.drop_index("ix_inquiries_status_timeout_at", table_name="inquiries")
    op.drop_index("ix_inquiries_execution", table_name="inquiries")
    op.drop_table("inquiries")
