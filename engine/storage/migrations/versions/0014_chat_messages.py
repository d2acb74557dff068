"""What a chat sink posted for an execution is the sink's own row, not the execution's.

``chat_messages``: one row per execution and sink, holding the posted message's id in its
channel, the status the message shows, whether the output went out, and whether the sink fell
back to the command's reply URL. Until now these lived in ``executions.chat`` beside the route
(``ts``, ``card_status``, ``output_posted``, ``mode``), written back through the execution
service; they are copied here so a card in flight keeps being edited, not posted again.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from engine.storage.tables import UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "chat_messages",
        sa.Column("execution_id", sa.BigInteger(), nullable=False),
        sa.Column("sink", sa.String(length=32), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=True),
        sa.Column("message_id", sa.String(length=64), nullable=True),
        sa.Column("shows_status", sa.String(length=16), nullable=True),
        sa.Column("output_posted", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("fallback", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("updated", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["execution_id"],
            ["executions.id"],
            name=op.f("fk_chat_messages_execution_id_executions"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("execution_id", "sink", name=op.f("pk_chat_messages")),
    )
    _copy_sink_state()


def _copy_sink_state() -> None:
    conn = op.get_bind()
    executions = sa.table(
        "executions",
        sa.column("id", sa.BigInteger()),
        sa.column("chat", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
    )
    chat_messages = sa.table(
        "chat_messages",
        sa.column("execution_id", sa.BigInteger()),
        sa.column("sink", sa.String()),
        sa.column("channel", sa.String()),
        sa.column("message_id", sa.String()),
        sa.column("shows_status", sa.String()),
        sa.column("output_posted", sa.Boolean()),
        sa.column("fallback", sa.Boolean()),
        sa.column("updated", UTCDateTime()),
    )
    now = datetime.now(UTC)
    last = 0
    while True:
        rows = conn.execute(
            sa.select(executions.c.id, executions.c.chat)
            .where(executions.c.id > last, executions.c.chat.is_not(None))
            .order_by(executions.c.id)
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        last = rows[-1][0]
        copied = [_sink_row(row_id, chat, now) for row_id, chat in rows]
        kept = [row for row in copied if row is not None]
        if kept:
            conn.execute(chat_messages.insert(), kept)


def _sink_row(execution_id: int, chat: Any, now: datetime) -> dict[str, Any] | None:
    if isinstance(chat, str):
        chat = json.loads(chat)
    if not isinstance(chat, dict) or chat.get("sink") == "terminal":
        return None
    if not (chat.get("ts") or chat.get("mode") or chat.get("output_posted")):
        return None
    return {
        "execution_id": execution_id,
        "sink": "slack",
        "channel": chat.get("channel"),
        "message_id": chat.get("ts"),
        "shows_status": chat.get("card_status"),
        "output_posted": bool(chat.get("output_posted")),
        "fallback": chat.get("mode") == "response_url",
        "updated": now,
    }


def downgrade() -> None:
    op.drop_table("chat_messages")
