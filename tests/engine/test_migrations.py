"""Alembic migrations agree with ``engine.storage.tables.metadata`` on SQLite and PostgreSQL.

Each test gets a fresh database: a SQLite file in ``tmp_path`` or a PostgreSQL database
``attune_mig_<hex>`` created with asyncpg and dropped (``WITH (FORCE)``) afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import make_url

from engine.storage import Store, build_store
from engine.storage.store import HEAD_REVISION, alembic_config
from engine.storage.tables import metadata

WAIT_S = 30.0


async def _admin(url: str) -> asyncpg.Connection:
    u = make_url(url)
    return await asyncpg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        database="postgres",
    )


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """The URL of a database with nothing in it."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    name = f"attune_mig_{uuid.uuid4().hex[:12]}"
    admin = await _admin(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield (
            make_url(server)
            .set(drivername="postgresql+asyncpg", database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        admin = await _admin(server)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@pytest.fixture
async def stores(database_url: str) -> AsyncIterator[list[Store]]:
    """Two independent stores (two engines, as two processes would have) on the database."""
    made = [build_store(database_url), build_store(database_url)]
    try:
        yield made
    finally:
        for store in made:
            await store.close()


def _differences(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def _schema_state(store: Store) -> tuple[list[Any], str | None, set[str]]:
    def state(conn: Connection) -> tuple[list[Any], str | None, set[str]]:
        return _differences(conn), _revision(conn), set(inspect(conn).get_table_names())

    return await store.run_sync(state)


async def test_upgrade_matches_metadata(stores: list[Store]) -> None:
    store = stores[0]
    await asyncio.wait_for(store.upgrade(), WAIT_S)

    diffs, revision, tables = await _schema_state(store)
    assert diffs == [], f"migrations and tables.py disagree on {store.dialect}"
    assert revision == _head()
    assert set(metadata.tables) <= tables


async def test_upgrade_is_idempotent(stores: list[Store]) -> None:
    first, second = stores
    await asyncio.wait_for(first.upgrade(), WAIT_S)
    await asyncio.wait_for(first.upgrade(), WAIT_S)
    await asyncio.wait_for(second.upgrade(), WAIT_S)

    diffs, revision, _ = await _schema_state(second)
    assert diffs == []
    assert revision == _head()
    versions = await second.run_sync(
        lambda conn: conn.execute(text("SELECT version_num FROM alembic_version")).all()
    )
    assert [v[0] for v in versions] == [_head()]


async def test_downgrade_then_upgrade_again(stores: list[Store]) -> None:
    store = stores[0]
    await asyncio.wait_for(store.upgrade(), WAIT_S)

    def downgrade(connection: Connection) -> None:
        command.downgrade(alembic_config(connection), "base")

    await store.run_sync(downgrade, commit=True)
    _, revision, tables = await _schema_state(store)
    assert revision is None
    assert not set(metadata.tables) & tables, "downgrade removes every table"

    await asyncio.wait_for(store.upgrade(), WAIT_S)
    diffs, revision, _ = await _schema_state(store)
    assert (diffs, revision) == ([], _head())


@pytest.mark.postgres
async def test_concurrent_upgrades_on_postgres(postgres_url: str) -> None:
    """Several processes starting at once on an empty database: the advisory lock serialises
    them, so all succeed and the schema is built once."""
    name = f"attune_mig_{uuid.uuid4().hex[:12]}"
    admin = await _admin(postgres_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = make_url(postgres_url).set(drivername="postgresql+asyncpg", database=name)
    stores = [build_store(url.render_as_string(hide_password=False)) for _ in range(4)]
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(s.upgrade() for s in stores), return_exceptions=True), WAIT_S
        )
        assert [r for r in results if r is not None] == [], "every upgrade succeeded"
        diffs, revision, _ = await _schema_state(stores[-1])
        assert (diffs, revision) == ([], _head())
    finally:
        for store in stores:
            await store.close()
        admin = await _admin(postgres_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


def test_the_store_knows_the_head_revision() -> None:
    """A database at HEAD_REVISION starts without running Alembic, so it must be the head."""
    assert _head() == HEAD_REVISION
