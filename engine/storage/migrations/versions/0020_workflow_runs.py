"""Workflow runs: their durable state, their task runs, and the task an execution runs.

- ``executions.workflow_task`` (Attune's): for a task run of a workflow, ``{workflow_execution,
  task_name, task_index, ...}``; null otherwise. (``parent`` is the workflow's execution.)
- ``workflow_executions``: one per running workflow (its execution, unique): the definition it
  started with, its progress (the planner's state, JSON), ``revision`` (each advance is a
  conditional update on it), status and error.
- ``workflow_tasks``: one row per task run the workflow decided to start, unique by its
  ``dispatch_key`` within the workflow (task, item, run, attempt), so no task runs twice; the
  execution started for it (null until submitted), when it is due (a retry's delay), and whether
  its end has been counted into the progress.

Revision ID: 0020
Revises: 0019
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def _json() -> Any:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _id() -> Any:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("executions") as batch:
        batch.add_column(sa.Column("workflow_task", _json(), nullable=True))
    op.create_table(
        "workflow_executions",
        sa.Column("id", _id(), nullable=False),
        sa.Column("execution", sa.BigInteger(), nullable=False),
        sa.Column("workflow_ref", sa.String(length=256), nullable=False),
        sa.Column("definition", _json(), nullable=False),
        sa.Column("progress", _json(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution"],
            ["executions.id"],
            name=op.f("fk_workflow_executions_execution_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_executions")),
        sa.UniqueConstraint("execution", name=op.f("uq_workflow_executions_execution")),
    )
    op.create_index("ix_workflow_executions_status", "workflow_executions", ["status"])
    op.create_table(
        "workflow_tasks",
        sa.Column("id", _id(), nullable=False),
        sa.Column("workflow_execution", sa.BigInteger(), nullable=False),
        sa.Column("dispatch_key", sa.String(length=300), nullable=False),
        sa.Column("task_name", sa.String(length=128), nullable=False),
        sa.Column("task_index", sa.Integer(), nullable=True),
        sa.Column("execution_id", sa.BigInteger(), nullable=True),
        sa.Column("due_at", UTCDateTime(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["workflow_execution"],
            ["workflow_executions.id"],
            name=op.f("fk_workflow_tasks_workflow_execution_workflow_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_tasks")),
        sa.UniqueConstraint(
            "workflow_execution",
            "dispatch_key",
            name=op.f("uq_workflow_tasks_workflow_execution_dispatch_key"),
        ),
    )
    op.create_index("ix_workflow_tasks_execution_id", "workflow_tasks", ["execution_id"])
    op.create_index(
        "ix_workflow_tasks_uncounted",
        "workflow_tasks",
        ["due_at"],
        sqlite_where=sa.text("counted = 0"),
        postgresql_where=sa.text("counted = false"),
    )


def downgrade() -> None:
    op.drop_index("ix_workflow_tasks_uncounted", table_name="workflow_tasks")
    op.drop_index("ix_workflow_tasks_execution_id", table_name="workflow_tasks")
    op.drop_table("workflow_tasks")
    op.drop_index("ix_workflow_executions_status", table_name="workflow_executions")
    op.drop_table("workflow_executions")
    with op.batch_alter_table("executions") as batch:
        batch.drop_column("workflow_task")
