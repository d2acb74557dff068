"""Look-alike logins are one identity, and a rule's secret parameters are sealed at rest.

``users.login_key``: the login compared without case, surrounding spaces or Unicode
compatibility forms (:func:`engine.logins.login_key`), unique. Existing users get theirs here;
when two existing logins already share a key, the first (lowest id) gets it and the others
keep none: they log in only with their exact login, and no new login can take that key.

``rules.action_params_sealed``: the values of a rule's ``action_params`` that are secret,
sealed with the secret key (``action_params`` holds a marker in their place). A migration has
no secret key to seal with: rules saved before keep their values where they are until
``attune serve`` starts, which seals them (:meth:`engine.events.Automation.seal_rule_secrets`).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from engine.logins import login_key

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("login_key", sa.String(length=128), nullable=True))
    conn = op.get_bind()
    taken: set[str] = set()
    for user_id, login in conn.execute(sa.text("SELECT id, login FROM users ORDER BY id")).all():
        key = login_key(str(login))[:128]
        if key in taken:
            continue
        taken.add(key)
        conn.execute(
            sa.text("UPDATE users SET login_key = :k WHERE id = :i"), {"k": key, "i": user_id}
        )
    with op.batch_alter_table("users") as batch:
        batch.create_unique_constraint("uq_users_login_key", ["login_key"])
    with op.batch_alter_table("rules") as batch:
        batch.add_column(sa.Column("action_params_sealed", sa.Text(), nullable=True))


def downgrade() -> None:
    # Sealed values cannot be opened here (no secret key): such rules lose them.
    with op.batch_alter_table("rules") as batch:
        batch.drop_column("action_params_sealed")
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_login_key", type_="unique")
        batch.drop_column("login_key")
