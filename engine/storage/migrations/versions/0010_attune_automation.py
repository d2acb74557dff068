"""Triggers, rules, events and enforcements carry Attune's fields: a trigger's param_schema and
out_schema; a rule's trigger_params and its timer (next_fire_at, fire_count); an event's
trigger and rule ids, rule_ref and config; an enforcement's rule id, conditions and resolved_at.
Existing events and enforcements get their trigger's and rule's ids.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.storage.tables import JsonType, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triggers") as batch:
        batch.add_column(sa.Column("param_schema", JsonType, nullable=True))
        batch.add_column(sa.Column("out_schema", JsonType, nullable=True))
    with op.batch_alter_table("rules") as batch:
        batch.add_column(sa.Column("trigger_params", JsonType, nullable=True))
        batch.add_column(sa.Column("next_fire_at", UTCDateTime, nullable=True))
        batch.add_column(
            sa.Column("fire_count", sa.Integer, nullable=False, server_default=sa.text("0"))
        )
    op.create_index("ix_rules_next_fire_at", "rules", ["next_fire_at"])
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("trigger_id", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("rule_id", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("rule_ref", sa.String(256), nullable=True))
        batch.add_column(sa.Column("config", JsonType, nullable=True))
    op.create_index("ix_events_trigger_id_id", "events", ["trigger_id", "id"])
    op.create_index("ix_events_rule_id_id", "events", ["rule_id", "id"])
    with op.batch_alter_table("enforcements") as batch:
        batch.add_column(sa.Column("rule_id", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("conditions", JsonType, nullable=True))
        batch.add_column(sa.Column("resolved_at", UTCDateTime, nullable=True))
    op.create_index("ix_enforcements_rule_id", "enforcements", ["rule_id"])
    op.execute(
        "UPDATE events SET trigger_id = "
        "(SELECT triggers.id FROM triggers WHERE triggers.ref = events.trigger_ref)"
    )
    op.execute(
        "UPDATE enforcements SET rule_id = "
        "(SELECT rules.id FROM rules WHERE rules.ref = enforcements.rule_ref)"
    )
    op.execute("UPDATE enforcements SET resolved_at = created WHERE status <> 'creating'")


def downgrade() -> None:
    op.drop_index("ix_enforcements_rule_id", table_name="enforcements")
    with op.batch_alter_table("enforcements") as batch:
        for name in ("resolved_at", "conditions", "rule_id"):
            batch.drop_column(name)
    op.drop_index("ix_events_rule_id_id", table_name="events")
    op.drop_index("ix_events_trigger_id_id", table_name="events")
    with op.batch_alter_table("events") as batch:
        for name in ("config", "rule_ref", "rule_id", "trigger_id"):
            batch.drop_column(name)
    op.drop_index("ix_rules_next_fire_at", table_name="rules")
    with op.batch_alter_table("rules") as batch:
        for name in ("fire_count", "next_fire_at", "trigger_params"):
            batch.drop_column(name)
    with op.batch_alter_table("triggers") as batch:
        for name in ("out_schema", "param_schema"):
            batch.drop_column(name)
