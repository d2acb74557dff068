"""Execution templates and schedules (the seed's future work).

``execution_templates``: a saved execution configuration (``ref``, the action, its parameters
as shown, secret values sealed in ``parameters_sealed``, a description, who made it).

``schedules``: a run of an action or a template later: once ``at`` a time, ``every`` N seconds,
or by ``cron``, in an IANA ``timezone``; ``next_fire_at`` is the next tick (the process that
moves it on fires the tick, once, as rule timers do), ``missed`` the policy for ticks missed
while nothing ran (``once`` | ``skip``); ``requester`` and ``chat`` say who asked and where the
results go.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def _json() -> Any:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id() -> Any:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "execution_templates",
        sa.Column("id", _id(), nullable=False),
        sa.Column("ref", sa.String(length=256), nullable=False),
        sa.Column("action_ref", sa.String(length=256), nullable=False),
        sa.Column("parameters", _json(), nullable=False),
        sa.Column("parameters_sealed", sa.Text(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_templates")),
        sa.UniqueConstraint("ref", name=op.f("uq_execution_templates_ref")),
    )
    op.create_table(
        "schedules",
        sa.Column("id", _id(), nullable=False),
        sa.Column("action_ref", sa.String(length=256), nullable=True),
        sa.Column("template_ref", sa.String(length=256), nullable=True),
        sa.Column("parameters", _json(), nullable=False),
        sa.Column("parameters_sealed", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=True),
        sa.Column("every_s", sa.Float(), nullable=True),
        sa.Column("cron", sa.String(length=128), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("next_fire_at", UTCDateTime(), nullable=True),
        sa.Column("missed", sa.String(length=8), nullable=False, server_default="once"),
        sa.Column("paused", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("requester", _json(), nullable=False),
        sa.Column("chat", _json(), nullable=True),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("fire_count", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_fired_at", UTCDateTime(), nullable=True),
        sa.Column("last_execution", sa.BigInteger(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedules")),
    )
    op.create_index("ix_schedules_next_fire_at", "schedules", ["next_fire_at"])


def downgrade() -> None:
    op.drop_index("ix_schedules_next_fire_at", table_name="schedules")
    op.drop_table("schedules")
    op.drop_table("execution_templates")
