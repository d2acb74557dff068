"""Migration 0012: a webhook key stored in clear before it keeps working after, and is no
longer in the database (only its SHA-256, what a webhook call is looked up by)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from sqlalchemy import Connection, select, text

from engine.automation.webhooks import (
    new_webhook_key,
    open_webhook_key,
    webhook_key_hash,
    webhook_key_values,
)
from engine.crypto import SecretBox
from engine.storage import build_store
from engine.storage.store import alembic_config
from engine.storage.tables import triggers

WAIT_S = 30.0


async def test_existing_webhook_keys_are_hashed_and_keep_working(tmp_path: Path) -> None:
    store = build_store(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    key = new_webhook_key()
    try:

        def before(connection: Connection) -> None:
            command.upgrade(alembic_config(connection), "0011")
            connection.execute(
                text(
                    "INSERT INTO triggers (ref, pack_ref, label, description, type, parameters,"
                    " enabled, webhook_enabled, webhook_key, from_pack, created, updated)"
                    " VALUES ('old.hook', 'old', '', '', 'webhook', '{}', 1, 1, :key, 0,"
                    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                ),
                {"key": key},
            )

        await store.run_sync(before, commit=True)
        await asyncio.wait_for(store.upgrade(), WAIT_S)

        def after(connection: Connection) -> tuple[list[str], str]:
            found = connection.execute(
                select(triggers.c.ref).where(triggers.c.webhook_key_hash == webhook_key_hash(key))
            ).scalars()
            everything = repr(connection.execute(text("SELECT * FROM triggers")).all())
            return list(found), everything

        found, everything = await store.run_sync(after)
        assert found == ["old.hook"]
        assert key not in everything
    finally:
        await store.close()


def test_a_key_sealed_with_another_secret_key_reads_as_none() -> None:
    """Packs still load and operators still list triggers after the secret key changed."""
    sealed = webhook_key_values("wh_example", SecretBox("first"))["webhook_key_sealed"]
    assert open_webhook_key(sealed, SecretBox("first")) == "wh_example"
    assert open_webhook_key(sealed, SecretBox("second")) is None
