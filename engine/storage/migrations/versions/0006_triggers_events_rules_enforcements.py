"""Triggers, events, rules and enforcements: the event-driven half.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 23:44:44.836047
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "enforcements",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("rule_ref", sa.String(length=256), nullable=False),
        sa.Column("trigger_ref", sa.String(length=256), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column(
            "config", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column("execution_id", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_enforcements")),
        sa.UniqueConstraint("rule_ref", "event_id", name="uq_enforcements_rule_ref_event_id"),
    )
    with op.batch_alter_table("enforcements", schema=None) as batch_op:
        batch_op.create_index("ix_enforcements_created", ["created"], unique=False)
        batch_op.create_index("ix_enforcements_event_id", ["event_id"], unique=False)

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("trigger_ref", sa.String(length=256), nullable=False),
        sa.Column(
            "payload", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("received_at", UTCDateTime(), nullable=False),
        sa.Column("processed_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_processed_at", ["processed_at"], unique=False)
        batch_op.create_index("ix_events_received_at", ["received_at"], unique=False)
        batch_op.create_index("ix_events_trigger_ref_id", ["trigger_ref", "id"], unique=False)

    op.create_table(
        "rules",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ref", sa.String(length=256), nullable=False),
        sa.Column("pack_ref", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("trigger_ref", sa.String(length=256), nullable=False),
        sa.Column("action_ref", sa.String(length=256), nullable=False),
        sa.Column(
            "conditions", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
        ),
        sa.Column(
            "action_params",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("chat_channel", sa.String(length=64), nullable=True),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("from_pack", sa.Boolean(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rules")),
        sa.UniqueConstraint("ref", name=op.f("uq_rules_ref")),
    )
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.create_index("ix_rules_trigger_ref", ["trigger_ref"], unique=False)

    op.create_table(
        "triggers",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("ref", sa.String(length=256), nullable=False),
        sa.Column("pack_ref", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column(
            "parameters", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False
        ),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("webhook_enabled", sa.Boolean(), nullable=False),
        sa.Column("webhook_key", sa.String(length=64), nullable=True),
        sa.Column("webhook_secret", sa.Text(), nullable=True),
        sa.Column("next_fire_at", UTCDateTime(), nullable=True),
        sa.Column("from_pack", sa.Boolean(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_triggers")),
        sa.UniqueConstraint("ref", name=op.f("uq_triggers_ref")),
        sa.UniqueConstraint("webhook_key", name=op.f("uq_triggers_webhook_key")),
    )
    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.create_index("ix_triggers_next_fire_at", ["next_fire_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("triggers", schema=None) as batch_op:
        batch_op.drop_index("ix_triggers_next_fire_at")

    op.drop_table("triggers")
    with op.batch_alter_table("rules", schema=None) as batch_op:
        batch_op.drop_index("ix_rules_trigger_ref")

    op.drop_table("rules")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_trigger_ref_id")
        batch_op.drop_index("ix_events_received_at")
        batch_op.drop_index("ix_events_processed_at")

    op.drop_table("events")
    with op.batch_alter_table("enforcements", schema=None) as batch_op:
        batch_op.drop_index("ix_enforcements_event_id")
        batch_op.drop_index("ix_enforcements_created")

    op.drop_table("enforcements")
