"""Webhook keys are credentials: stored as a SHA-256 (``webhook_key_hash``, what a call is
looked up by) and sealed with the secret key (``webhook_key_sealed``, what those who may manage
the trigger are shown), never in clear. Existing keys keep working: their hashes are computed
here; a migration has no secret key to seal them with, so a managing role sees such a key as
``null`` until it is regenerated.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("triggers") as batch:
        batch.add_column(sa.Column("webhook_key_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("webhook_key_sealed", sa.Text(), nullable=True))
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, webhook_key FROM triggers WHERE webhook_key IS NOT NULL")
    ).all()
    for trigger_id, key in rows:
        digest = hashlib.sha256(str(key).encode()).hexdigest()
        conn.execute(
            sa.text("UPDATE triggers SET webhook_key_hash = :h WHERE id = :i"),
            {"h": digest, "i": trigger_id},
        )
    with op.batch_alter_table("triggers") as batch:
        batch.drop_constraint("uq_triggers_webhook_key", type_="unique")
        batch.drop_column("webhook_key")
        batch.create_unique_constraint("uq_triggers_webhook_key_hash", ["webhook_key_hash"])


def downgrade() -> None:
    # The keys themselves are gone (only hashes were kept): a downgraded trigger has no key
    # until its webhook is enabled or regenerated again.
    with op.batch_alter_table("triggers") as batch:
        batch.drop_constraint("uq_triggers_webhook_key_hash", type_="unique")
        batch.drop_column("webhook_key_sealed")
        batch.drop_column("webhook_key_hash")
        batch.add_column(sa.Column("webhook_key", sa.String(length=64), nullable=True))
        batch.create_unique_constraint("uq_triggers_webhook_key", ["webhook_key"])
