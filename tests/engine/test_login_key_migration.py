"""Migration 0013: existing users get the key logins are compared by; two existing logins that
already share one (``bob`` and ``BOB``) both keep working by their exact login, and no new
login can take that key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Connection, text

from engine.auth import AuthService, user_row
from engine.errors import Conflict
from engine.storage import build_store
from engine.storage.store import alembic_config
from engine.users import Users

WAIT_S = 30.0


async def test_existing_logins_get_keys_and_old_look_alikes_keep_working(tmp_path: Path) -> None:
    store = build_store(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    try:

        def before(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), "0012")
            for login in ("bob", "BOB", "Carol"):
                connection.execute(
                    text(
                        "INSERT INTO users (login, password_hash, role, created, disabled)"
                        " VALUES (:l, NULL, 'viewer', '2026-01-01 00:00:00', 0)"
                    ),
                    {"l": login},
                )

        await store.run_sync(before, commit=True)
        await asyncio.wait_for(store.upgrade(), WAIT_S)

        async with store.read() as conn:
            assert (await user_row(conn, "bob")).login == "bob"
            assert (await user_row(conn, "BOB")).login == "BOB"
            assert (await user_row(conn, " CAROL ")).login == "Carol"
        users = Users(AuthService(store, token_ttl_s=60))
        for taken in ("Bob", "carol"):
            with pytest.raises(Conflict):
                await users.create(taken, "a-long-enough-password")
    finally:
        await store.close()
