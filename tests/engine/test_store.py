"""The SQLite Store: write blocks grouped under one COMMIT, each in its own savepoint."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Awaitable
from pathlib import Path

import pytest
from sqlalchemy import event, insert, select, text

from engine.clock import now_utc
from engine.errors import Conflict, Unavailable
from engine.storage import Store, build_store
from engine.storage.store import LoopConn
from engine.storage.tables import users
from tests.waiting import eventually


def _user(login: str) -> dict[str, object]:
    return {"login": login, "password_hash": "x", "role": "viewer", "created": now_utc()}


async def _add(store: Store, login: str) -> None:
    async with store.write() as conn:
        await conn.execute(insert(users), _user(login))


async def _logins(store: Store) -> list[str]:
    async with store.read() as conn:
        return list((await conn.execute(select(users.c.login).order_by(users.c.id))).scalars())


def _count_commits(store: Store) -> list[str]:
    seen: list[str] = []
    assert store._sync is not None

    @event.listens_for(store._sync, "before_cursor_execute")
    def note(_c: object, _cur: object, statement: str, *_a: object) -> None:
        if statement in ("COMMIT", "BEGIN IMMEDIATE"):
            seen.append(statement)

    return seen


async def test_blocks_ready_together_share_one_commit_and_return_committed(store: Store) -> None:
    seen = _count_commits(store)
    await asyncio.gather(*(_add(store, f"u{i}") for i in range(20)))
    assert seen == ["BEGIN IMMEDIATE", "COMMIT"]
    # Returned only once committed: another connection sees every row.
    assert sorted(await _logins(store)) == sorted(f"u{i}" for i in range(20))


async def test_a_failing_block_is_undone_alone_and_sees_the_row_it_met(store: Store) -> None:
    async def twice() -> str:
        try:
            await _add(store, "same")
        except Conflict:
            return (await _logins(store))[0]  # the winner is committed by now
        return "won"

    async def fails_midway() -> None:
        async with store.write() as conn:
            await conn.execute(insert(users), _user("half"))
            raise RuntimeError("boom")

    results = await asyncio.gather(
        twice(), twice(), fails_midway(), _add(store, "other"), return_exceptions=True
    )
    assert results[0] == "won"
    assert results[1] == "same"
    assert isinstance(results[2], RuntimeError)
    assert await _logins(store) == ["same", "other"]


async def test_a_write_waits_while_another_process_holds_the_lock(
    store: Store, tmp_path: Path
) -> None:
    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    pending = asyncio.create_task(_add(store, "later"))
    # The loop is free meanwhile: reads answer while the write waits for the lock.
    for _ in range(20):
        assert await _logins(store) == []
        await asyncio.sleep(0.005)
    assert not pending.done()
    other.execute("COMMIT")
    other.close()
    await asyncio.wait_for(pending, 5)
    assert await _logins(store) == ["later"]


async def test_a_commit_that_fails_fails_every_block_of_its_group(store: Store) -> None:
    assert store._sync is not None

    @event.listens_for(store._sync, "before_cursor_execute")
    def refuse(_c: object, _cur: object, statement: str, *_a: object) -> None:
        if statement == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")

    results = await asyncio.gather(
        *(_add(store, f"u{i}") for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Unavailable) for r in results), results
    event.remove(store._sync, "before_cursor_execute", refuse)
    assert await _logins(store) == []
    await _add(store, "after")  # the writer recovers
    assert await _logins(store) == ["after"]


async def test_offloaded_reads_return_buffered_rows(store: Store) -> None:
    await _add(store, "a")
    async with store.read(offload=True) as conn:
        rows = (await conn.execute(text("SELECT login FROM users"))).all()
    assert [r.login for r in rows] == ["a"]


@pytest.mark.postgres
async def test_postgres_connection_closed_by_the_server_is_replaced_at_checkout(
    postgres_url: str,
) -> None:
    """No ping per checkout: a pooled connection whose backend was terminated is seen as
    closed and swapped for a fresh one, so the next write succeeds."""
    import asyncpg
    from sqlalchemy.engine import make_url

    name = f"attune_store_{uuid.uuid4().hex[:10]}"
    base = make_url(postgres_url)
    admin = await asyncpg.connect(
        base.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    )
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = base.set(drivername="postgresql+asyncpg", database=name)
    store = build_store(url.render_as_string(hide_password=False), pool_size=1)
    try:
        await store.upgrade()
        await _add(store, "before")
        async with store.read() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            assert not isinstance(conn, LoopConn)
            driver = (await conn.get_raw_connection()).driver_connection
        await admin.execute("SELECT pg_terminate_backend($1)", pid)

        async def closed_seen() -> bool:
            async with store.read() as conn:
                other = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            return bool(other != pid)

        # asyncpg learns of the close from the socket, as soon as the loop reads it.
        await eventually(driver.is_closed, "asyncpg to see the close", 5)
        assert await closed_seen()  # not a 503: the pool handed out a fresh connection
        await _add(store, "after")
        assert await _logins(store) == ["before", "after"]
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


#: A read that keeps SQLite busy for a while (a few hundred ms here).
_SCAN = text(
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) "
    "SELECT count(*) FROM c"
)


async def _scan(store: Store) -> None:
    async with store.read(offload=True) as conn:
        await conn.execute(_SCAN)


async def _loop_gap_while(work: Awaitable[object]) -> float:
    """The longest the event loop went without running a 1 ms ticker, while ``work`` ran."""
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = loop.time()
            gaps.append(now - last)
            last = now

    tick = asyncio.create_task(ticker())
    try:
        await work
    finally:
        done.set()
        await tick
    return max(gaps, default=0.0)


async def test_scans_beyond_the_pool_never_block_the_loop(tmp_path: Path) -> None:
    store = build_store(f"sqlite+aiosqlite:///{tmp_path / 'p.db'}", pool_size=1)
    await store.upgrade()
    try:
        await _add(store, "x")

        async def scans_and_reads() -> None:
            await asyncio.gather(*(_scan(store) for _ in range(6)), _logins(store))

        gap = await asyncio.wait_for(_loop_gap_while(scans_and_reads()), 30)
        # A scan runs in a thread; the loop only waits for the GIL between its steps.
        assert gap < 0.25, f"the loop stalled {gap:.2f} s"
    finally:
        await store.close()


async def test_a_cancelled_scan_does_not_hand_its_busy_connection_to_the_loop(
    store: Store,
) -> None:
    started = time.monotonic()
    await _scan(store)
    alone = time.monotonic() - started
    scan = asyncio.create_task(_scan(store))
    await asyncio.sleep(alone / 10)
    scan.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await scan
    started = time.monotonic()
    assert await _logins(store) == []
    took = time.monotonic() - started
    assert took < alone / 2, f"a read waited {took:.2f} s for the cancelled scan"
