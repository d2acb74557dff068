"""Packs and actions carry Attune's fields: a pack's conf_schema, config, meta, tags,
runtime_deps, dependencies and is_standard; an action's out_schema, runtime_ref, and the reason it
is disabled (a runner this server does not run). Executions are listed by enforcement and by
parent, as Attune's clients filter them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.storage.tables import JsonType

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_PACK_JSON = ("conf_schema", "config", "meta", "tags", "runtime_deps", "dependencies")


def upgrade() -> None:
    with op.batch_alter_table("packs") as batch:
        for name in _PACK_JSON:
            batch.add_column(sa.Column(name, JsonType, nullable=True))
        batch.add_column(
            sa.Column("is_standard", sa.Boolean, nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("actions") as batch:
        batch.add_column(sa.Column("out_schema", JsonType, nullable=True))
        batch.add_column(sa.Column("runtime_ref", sa.String(128), nullable=True))
        batch.add_column(sa.Column("disabled_reason", sa.Text, nullable=True))
    op.create_index("ix_executions_enforcement", "executions", ["enforcement"])
    op.create_index("ix_executions_parent", "executions", ["parent"])


def downgrade() -> None:
    op.drop_index("ix_executions_parent", table_name="executions")
    op.drop_index("ix_executions_enforcement", table_name="executions")
    with op.batch_alter_table("actions") as batch:
        for name in ("disabled_reason", "runtime_ref", "out_schema"):
            batch.drop_column(name)
    with op.batch_alter_table("packs") as batch:
        for name in (*_PACK_JSON, "is_standard"):
            batch.drop_column(name)
