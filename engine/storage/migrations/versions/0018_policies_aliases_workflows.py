"""Retries and concurrency policies, action aliases, workflow definitions.

- ``actions``: ``max_retries`` (Attune's: automatic retries of a transient failure, 0 = none)
  and the concurrency policy (``concurrency_limit``, ``concurrency_method`` ``enqueue`` |
  ``cancel``, ``concurrency_parameters``: the parameters that group runs).
- ``executions``: the retry chain (``retry_count``, ``original_execution``, ``retry_reason``,
  and ``retry_due_at``: when the retry of this failed run is due, indexed while set), and
  ``concurrency_key``: the policy group of a run of an action with a limit (indexed while set).
- ``concurrency_groups``: how many runs of a group hold a slot (moved in the same transaction
  as the run's status).
- ``action_aliases``: StackStorm-format aliases (from a pack's ``aliases/`` or the API).
- ``workflow_definitions``: Attune workflow definitions (from a pack's ``workflows/`` or the API).

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def _json() -> Any:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id() -> Any:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # Literal string defaults: SQLite then adds the columns in place. A default given as an
    # expression makes Alembic's batch mode copy the table, and dropping the old
    # ``executions`` would delete every row that refers to it (ON DELETE CASCADE).
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("max_retries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("concurrency_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("concurrency_method", sa.String(length=8), nullable=True))
        batch.add_column(sa.Column("concurrency_parameters", _json(), nullable=True))
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("retry_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("original_execution", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("retry_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("retry_due_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("concurrency_key", sa.String(length=512), nullable=True))
    op.create_index(
        "ix_executions_retry_due_at",
        "executions",
        ["retry_due_at"],
        sqlite_where=sa.text("retry_due_at IS NOT NULL"),
        postgresql_where=sa.text("retry_due_at IS NOT NULL"),
    )
    op.create_index(
        "ix_executions_concurrency_key_id",
        "executions",
        ["concurrency_key", "id"],
        sqlite_where=sa.text("concurrency_key IS NOT NULL"),
        postgresql_where=sa.text("concurrency_key IS NOT NULL"),
    )
    op.create_table(
        "concurrency_groups",
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_concurrency_groups")),
    )
    op.create_table(
        "action_aliases",
        sa.Column("id", _id(), nullable=False),
        sa.Column("ref", sa.String(length=256), nullable=False),
        sa.Column("pack_ref", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("action_ref", sa.String(length=256), nullable=False),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("formats", _json(), nullable=False),
        sa.Column("ack", _json(), nullable=True),
        sa.Column("result", _json(), nullable=True),
        sa.Column("extra", _json(), nullable=True),
        sa.Column("immutable_parameters", _json(), nullable=True),
        sa.Column("adhoc", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_action_aliases")),
        sa.UniqueConstraint("ref", name=op.f("uq_action_aliases_ref")),
    )
    op.create_index("ix_action_aliases_pack_ref", "action_aliases", ["pack_ref"])
    op.create_table(
        "workflow_definitions",
        sa.Column("id", _id(), nullable=False),
        sa.Column("ref", sa.String(length=256), nullable=False),
        sa.Column("pack_ref", sa.String(length=128), nullable=False),
        sa.Column("label", sa.String(length=256), nullable=False, server_default=""),
        sa.Column("description", sa.Text(), nullable=False, server_default=""),
        sa.Column("version", sa.String(length=50), nullable=False, server_default="1.0.0"),
        sa.Column("param_schema", _json(), nullable=True),
        sa.Column("out_schema", _json(), nullable=True),
        sa.Column("definition", _json(), nullable=False),
        sa.Column("tags", _json(), nullable=True),
        sa.Column("adhoc", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_definitions")),
        sa.UniqueConstraint("ref", name=op.f("uq_workflow_definitions_ref")),
    )
    op.create_index("ix_workflow_definitions_pack_ref", "workflow_definitions", ["pack_ref"])


def downgrade() -> None:
    op.drop_index("ix_workflow_definitions_pack_ref", table_name="workflow_definitions")
    op.drop_table("workflow_definitions")
    op.drop_index("ix_action_aliases_pack_ref", table_name="action_aliases")
    op.drop_table("action_aliases")
    op.drop_table("concurrency_groups")
    op.drop_index("ix_executions_concurrency_key_id", table_name="executions")
    op.drop_index("ix_executions_retry_due_at", table_name="executions")
    with op.batch_alter_table("executions") as batch:
        for column in (
            "concurrency_key",
            "retry_due_at",
            "retry_reason",
            "original_execution",
            "retry_count",
        ):
            batch.drop_column(column)
    with op.batch_alter_table("actions") as batch:
        for column in (
            "concurrency_parameters",
            "concurrency_method",
            "concurrency_limit",
            "max_retries",
        ):
            batch.drop_column(column)
