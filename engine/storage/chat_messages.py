"""The ``chat_messages`` rows (:mod:`engine.chat_messages`): one statement per read or save."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.chat_messages import ChatMessage, ChatMessages
from engine.clock import now_utc
from engine.storage.store import Store
from engine.storage.tables import chat_messages

_COLUMNS = ("channel", "message_id", "shows_status", "output_posted", "fallback", "updated")

_SELECT = select(
    chat_messages.c.channel,
    chat_messages.c.message_id,
    chat_messages.c.shows_status,
    chat_messages.c.output_posted,
    chat_messages.c.fallback,
).where(
    chat_messages.c.execution_id == bindparam("execution_id"),
    chat_messages.c.sink == bindparam("sink"),
)


def _upsert(dialect: Any) -> Any:
    statement = dialect.insert(chat_messages)
    return statement.on_conflict_do_update(
        index_elements=[chat_messages.c.execution_id, chat_messages.c.sink],
        set_={name: statement.excluded[name] for name in _COLUMNS},
    )


class SqlChatMessages:
    """:class:`engine.chat_messages.ChatMessages` on either dialect (an upsert each way)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._upsert = _upsert(sqlite if store.is_sqlite else postgresql)

    async def get(self, execution_id: int, sink: str) -> ChatMessage | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(_SELECT, {"execution_id": execution_id, "sink": sink})
            ).first()
        if row is None:
            return None
        return ChatMessage(
            execution_id=execution_id,
            sink=sink,
            channel=row.channel or "",
            message_id=row.message_id,
            shows_status=row.shows_status,
            output_posted=bool(row.output_posted),
            fallback=bool(row.fallback),
        )

    async def save(self, message: ChatMessage) -> None:
        async with self.store.write(single=True) as conn:
            await conn.execute(
                self._upsert,
                {
                    "execution_id": message.execution_id,
                    "sink": message.sink,
                    "channel": message.channel,
                    "message_id": message.message_id,
                    "shows_status": message.shows_status,
                    "output_posted": message.output_posted,
                    "fallback": message.fallback,
                    "updated": now_utc(),
                },
            )


def chat_messages_repository(store: Store) -> ChatMessages:
    return SqlChatMessages(store)
