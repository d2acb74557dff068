"""The ``chat_messages`` rows (:mod:`engine.chat_messages`): one statement per read or save."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from engine.chat_messages import ChatMessage, ChatMessages
from engine.clock import now_utc
from engine.storage.store import Store
from engine.storage.tables import chat_messages, executions

_COLUMNS = (
    "channel",
    "message_id",
    "shows_status",
    "output_posted",
    "fallback",
    "live_message_id",
    "notified",
    "updated",
)

_FIELDS = (
    chat_messages.c.execution_id,
    chat_messages.c.sink,
    chat_messages.c.channel,
    chat_messages.c.message_id,
    chat_messages.c.shows_status,
    chat_messages.c.output_posted,
    chat_messages.c.fallback,
    chat_messages.c.live_message_id,
    chat_messages.c.notified,
)

_SELECT = select(*_FIELDS).where(
    chat_messages.c.execution_id == bindparam("execution_id"),
    chat_messages.c.sink == bindparam("sink"),
)

_SET_LIVE = (
    update(chat_messages)
    .where(
        chat_messages.c.execution_id == bindparam("row_execution_id"),
        chat_messages.c.sink == bindparam("row_sink"),
    )
    .values(live_message_id=bindparam("new_live_message_id"), updated=bindparam("new_updated"))
)


def _upsert(dialect: Any) -> Any:
    statement = dialect.insert(chat_messages)
    return statement.on_conflict_do_update(
        index_elements=[chat_messages.c.execution_id, chat_messages.c.sink],
        set_={name: statement.excluded[name] for name in _COLUMNS},
    )


def _record(row: Any) -> ChatMessage:
    return ChatMessage(
        execution_id=int(row.execution_id),
        sink=row.sink,
        channel=row.channel or "",
        message_id=row.message_id,
        shows_status=row.shows_status,
        output_posted=bool(row.output_posted),
        fallback=bool(row.fallback),
        live_message_id=row.live_message_id,
        notified=bool(row.notified),
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
        return None if row is None else _record(row)

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
                    "live_message_id": message.live_message_id,
                    "notified": message.notified,
                    "updated": now_utc(),
                },
            )

    async def set_live_message(self, execution_id: int, sink: str, message_id: str) -> None:
        async with self.store.write(single=True) as conn:
            await conn.execute(
                _SET_LIVE,
                {
                    "row_execution_id": execution_id,
                    "row_sink": sink,
                    "new_live_message_id": message_id,
                    "new_updated": now_utc(),
                },
            )

    async def of_statuses(
        self, sink: str, statuses: Sequence[str], limit: int
    ) -> list[ChatMessage]:
        query = (
            select(*_FIELDS)
            .join(executions, executions.c.id == chat_messages.c.execution_id)
            .where(
                chat_messages.c.sink == sink,
                chat_messages.c.message_id.is_not(None),
                chat_messages.c.output_posted.is_(False),
                chat_messages.c.fallback.is_(False),
                executions.c.status.in_(list(statuses)),
            )
            .order_by(chat_messages.c.execution_id.desc())
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]


def chat_messages_repository(store: Store) -> ChatMessages:
    return SqlChatMessages(store)
