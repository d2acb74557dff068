"""Live output and the change stream.

``execution_output``: the output of a running action, in the chunks its worker flushed
(``stream`` is ``stdout`` or ``stderr``; ``offset`` is the chunk's first byte in that stream,
counted in UTF-8), so the API, the chat sinks and the execution page can show it while the
run lasts, from any process. The chunks of a finished run are removed with the end of the run:
its ``result`` holds the whole output.

``chat_messages.live_message_id``: the thread message a chat sink keeps updated with the last
lines while the run lasts; ``chat_messages.notified``: the requester was mentioned on failure
(once).

``rules.owners``: who is mentioned when a run the rule started fails (Slack user ids or
logins).

``ix_executions_finished_at`` (partial: ended executions only): the change stream
(``GET /api/v1/executions/stream``) finds the executions that ended since a point, to replay
what a client missed (an index on ``updated`` would cost every status change a write).

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "execution_output",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("execution_id", sa.BigInteger(), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_execution_output_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_execution_output")),
    )
    op.create_index(
        "ix_execution_output_execution_stream_offset",
        "execution_output",
        ["execution_id", "stream", "offset"],
    )
    with op.batch_alter_table("chat_messages") as batch:
        batch.add_column(sa.Column("live_message_id", sa.String(length=64), nullable=True))
        batch.add_column(
            sa.Column("notified", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("rules") as batch:
        batch.add_column(
            sa.Column(
                "owners", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True
            )
        )
    op.create_index(
        "ix_executions_finished_at",
        "executions",
        ["finished_at"],
        sqlite_where=sa.text("finished_at IS NOT NULL"),
        postgresql_where=sa.text("finished_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_executions_finished_at", table_name="executions")
    with op.batch_alter_table("rules") as batch:
        batch.drop_column("owners")
    with op.batch_alter_table("chat_messages") as batch:
        batch.drop_column("notified")
        batch.drop_column("live_message_id")
    op.drop_index("ix_execution_output_execution_stream_offset", table_name="execution_output")
    op.drop_table("execution_output")
