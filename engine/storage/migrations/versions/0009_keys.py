"""Attune's key-value store: the ``keys`` table behind ``/api/v1/keys``.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.storage.tables import IdType, JsonType, UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "keys",
        sa.Column("id", IdType, autoincrement=True, nullable=False),
        sa.Column("ref", sa.String(length=255), nullable=False),
        sa.Column("owner_type", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("owner_identity", sa.BigInteger(), nullable=True),
        sa.Column("owner_pack", sa.BigInteger(), nullable=True),
        sa.Column("owner_pack_ref", sa.String(length=255), nullable=True),
        sa.Column("owner_action", sa.BigInteger(), nullable=True),
        sa.Column("owner_action_ref", sa.String(length=255), nullable=True),
        sa.Column("owner_sensor", sa.BigInteger(), nullable=True),
        sa.Column("owner_sensor_ref", sa.String(length=255), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("value", JsonType, nullable=True),
        sa.Column("sealed", sa.Text(), nullable=True),
        sa.Column("expires_at", UTCDateTime(), nullable=True),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_keys")),
        sa.UniqueConstraint("ref", name=op.f("uq_keys_ref")),
    )
    op.create_index("ix_keys_owner_type_owner", "keys", ["owner_type", "owner"])
    op.create_index("ix_keys_expires_at", "keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_keys_expires_at", table_name="keys")
    op.drop_index("ix_keys_owner_type_owner", table_name="keys")
    op.drop_table("keys")
