"""A chat sink's own rows (``chat_messages``): saved and read back on both dialects, removed
with their execution, and, by migration 0014, carried over from where they used to live
(``executions.chat``) so a card in flight is edited, not posted again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, text

from engine.chat_messages import ChatMessage
from engine.storage import Store, build_store
from engine.storage.chat_messages import chat_messages_repository
from engine.storage.store import alembic_config
from tests.engine.test_integration import PostgresDatabases

WAIT_S = 30.0

_INSERT_EXECUTION = text(
    "INSERT INTO executions (id, action_ref, status, config, executor, timeout_s, chat,"
    " created, updated) VALUES (:id, 'core.echo', :status, '{}', '{}', 60, :chat,"
    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    databases = PostgresDatabases()
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    else:
        url = await databases.get(request.getfixturevalue("postgres_url"))
    store = build_store(url)
    try:
        await asyncio.wait_for(store.upgrade(), WAIT_S)
        yield store
    finally:
        await store.close()
        await databases.drop()


async def test_a_sinks_row_is_saved_replaced_and_goes_with_its_execution(
    any_store: Store,
) -> None:
    async with any_store.write() as conn:
        await conn.execute(_INSERT_EXECUTION, {"id": 7, "status": "running", "chat": None})
    messages = chat_messages_repository(any_store)
    assert await messages.get(7, "slack") is None

    fresh = ChatMessage(execution_id=7, sink="slack", channel="C1")
    posted = replace(fresh, message_id="1700000000.000100", shows_status="running")
    await messages.save(posted)
    assert await messages.get(7, "slack") == posted
    assert await messages.get(7, "other") is None

    done = replace(posted, output_posted=True)
    await messages.save(done)
    assert await messages.get(7, "slack") == done

    async with any_store.write() as conn:
        await conn.execute(text("DELETE FROM executions WHERE id = 7"))
    assert await messages.get(7, "slack") is None


async def test_migration_0014_carries_slack_state_out_of_the_route(tmp_path: Path) -> None:
    store = build_store(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    routes = {
        1: {
            "sink": "slack",
            "channel": "C1",
            "ts": "1.0001",
            "card_status": "running",
            "user": "U1",
        },
        2: {"sink": "slack", "channel": "C2", "ts": "2.0002", "output_posted": True},
        3: {"sink": "slack", "channel": "C3", "mode": "response_url", "response_url": "x"},
        4: {"sink": "slack", "channel": "C4"},  # nothing posted yet
        5: {"sink": "terminal", "session": "s1"},
        6: None,
    }
    try:

        def before(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), "0013")
            for execution_id, chat in routes.items():
                connection.execute(
                    _INSERT_EXECUTION,
                    {
                        "id": execution_id,
                        "status": "running",
                        "chat": None if chat is None else json.dumps(chat),
                    },
                )

        await store.run_sync(before, commit=True)
        await asyncio.wait_for(store.upgrade(), WAIT_S)

        messages = chat_messages_repository(store)
        assert await messages.get(1, "slack") == ChatMessage(
            execution_id=1, sink="slack", channel="C1", message_id="1.0001", shows_status="running"
        )
        assert await messages.get(2, "slack") == ChatMessage(
            execution_id=2, sink="slack", channel="C2", message_id="2.0002", output_posted=True
        )
        assert await messages.get(3, "slack") == ChatMessage(
            execution_id=3, sink="slack", channel="C3", fallback=True
        )
        for untouched in (4, 5, 6):
            assert await messages.get(untouched, "slack") is None
    finally:
        await store.close()


async def test_live_message_and_mention_are_kept_and_running_rows_found(any_store: Store) -> None:
    async with any_store.write() as conn:
        for execution_id, status in ((11, "running"), (12, "running"), (13, "completed")):
            await conn.execute(
                _INSERT_EXECUTION, {"id": execution_id, "status": status, "chat": None}
            )
        await conn.execute(_INSERT_EXECUTION, {"id": 14, "status": "canceling", "chat": None})
    messages = chat_messages_repository(any_store)
    card = ChatMessage(execution_id=11, sink="slack", channel="C1", message_id="1.1")
    await messages.save(card)
    await messages.set_live_message(11, "slack", "1.5")
    # Only the live message's column changes.
    assert await messages.get(11, "slack") == replace(card, live_message_id="1.5")
    told = replace(card, live_message_id="1.5", notified=True, shows_status="failed")
    await messages.save(told)
    assert await messages.get(11, "slack") == told

    await messages.save(ChatMessage(execution_id=12, sink="slack", channel="C1"))  # no card
    await messages.save(ChatMessage(execution_id=13, sink="slack", channel="C1", message_id="3"))
    await messages.save(ChatMessage(execution_id=14, sink="slack", channel="C2", message_id="4"))
    await messages.save(ChatMessage(execution_id=14, sink="other", channel="C2", message_id="5"))
    found = await messages.of_statuses("slack", ("running", "canceling"), 10)
    assert [m.execution_id for m in found] == [14, 11]
    assert await messages.of_statuses("slack", ("running", "canceling"), 1) == found[:1]
    await messages.save(replace(told, output_posted=True))
    assert [m.execution_id for m in await messages.of_statuses("slack", ("running",), 10)] == []
