"""Schedule ids are never reused on SQLite; inquiries are found by when they changed.

- ``schedules`` on SQLite becomes an AUTOINCREMENT table: without it SQLite hands the id of a
  deleted newest schedule to the next one, so an old card's "schedule #N" could name another
  schedule. (PostgreSQL's sequences never reuse an id: nothing to do there.)
- ``ix_inquiries_updated``: the Slack poster looks for questions that ended since its last
  look.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "schedules", recreate="always", table_kwargs={"sqlite_autoincrement": True}
        ):
            pass
    op.create_index("ix_inquiries_updated", "inquiries", ["updated"])


def downgrade() -> None:
    op.drop_index("ix_inquiries_updated", table_name="inquiries")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table(
            "schedules", recreate="always", table_kwargs={"sqlite_autoincrement": False}
        ):
            pass
