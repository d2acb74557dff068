"""Retried API requests act once (Idempotency-Key), and password guessing is throttled.

One ``attune serve`` (SQLite, in-process broker) for the module, allowing 3 failed logins per
login and per client address in a 30 s window. The login tests come last in the file: once
they lock the address out, no further login from this machine succeeds for the window, so
every token the module needs is made first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import (
    audit,
    call,
    execute,
    executions_of,
    inline_action,
    register,
    token_for,
)

pytestmark = pytest.mark.e2e

MAX_FAILURES = 3
WINDOW_S = 30
LOCKED_LOGIN, LOCKED_PASSWORD = "lena", "lena-right-password"
OTHER_LOGIN = "oscar"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-idempotency")
    env = engine_env(
        tmp,
        ATTUNE_LOGIN_MAX_FAILURES=str(MAX_FAILURES),
        ATTUNE_LOGIN_WINDOW_S=str(WINDOW_S),
        ATTUNE_ALLOW_REGISTRATION="true",
        ATTUNE_REGISTRATION_ROLE="operator",  # tokens of both roles are made for them
        ATTUNE_LOG_FORMAT="text",
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def tokens(server: Server) -> dict[str, str]:
    await register(server.base_url, OTHER_LOGIN, "oscar-password-1")
    await register(server.base_url, LOCKED_LOGIN, LOCKED_PASSWORD)
    admin, other = await asyncio.gather(
        login(server.base_url), token_for(server, OTHER_LOGIN, "operator")
    )
    return {"admin": admin, "other": other}


@pytest.fixture
async def admin(server: Server, tokens: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, tokens["admin"]) as session:
        yield session


@pytest.fixture
async def other(server: Server, tokens: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, tokens["other"]) as session:
        yield session


@pytest.fixture
async def action(admin: aiohttp.ClientSession) -> str:
    """A fresh action per test, so listing its executions counts only this test's."""
    return await inline_action(admin, "idem", "noop", "cat > /dev/null")


def replayed(answer: Any) -> bool:
    return answer.headers.get("Idempotent-Replayed") == "true"


# -- Idempotency-Key --------------------------------------------------------------------------


async def test_a_retried_request_returns_the_first_execution(
    admin: aiohttp.ClientSession, action: str
) -> None:
    first = await execute(admin, action, key="deploy-2026-11-26-a")
    assert first.status == 201, first.body
    assert not replayed(first)
    again = await execute(admin, action, key="deploy-2026-11-26-a")
    assert again.status == 201, again.body
    assert replayed(again), again.headers
    assert again.data["id"] == first.data["id"]
    assert again.data["action_ref"] == action
    assert [e["id"] for e in await executions_of(admin, action)] == [first.data["id"]]

    # No key, or another key: a new execution each time.
    assert not replayed(await execute(admin, action))
    other_key = await execute(admin, action, key="deploy-2026-11-26-b")
    assert not replayed(other_key)
    assert other_key.data["id"] != first.data["id"]
    assert len(await executions_of(admin, action)) == 3


async def test_concurrent_requests_with_one_key_create_one_execution(
    admin: aiohttp.ClientSession, action: str
) -> None:
    answers = await asyncio.gather(*(execute(admin, action, key="burst-1") for _ in range(20)))
    assert [a.status for a in answers] == [201] * 20, [a.body for a in answers]
    ids = {a.data["id"] for a in answers}
    assert len(ids) == 1, ids
    assert sum(not replayed(a) for a in answers) == 1, [a.headers for a in answers]
    assert [e["id"] for e in await executions_of(admin, action)] == list(ids)
    # The audit holds one accepted run for it.
    entries = await audit(admin, verb="run", outcome="accepted")
    assert [e["execution_id"] for e in entries if e["target"] == action] == list(ids)


async def test_another_login_with_the_same_key_gets_its_own_execution(
    admin: aiohttp.ClientSession, other: aiohttp.ClientSession, action: str
) -> None:
    mine = await execute(admin, action, key="shared-key")
    theirs = await execute(other, action, key="shared-key")
    assert mine.status == theirs.status == 201, (mine.body, theirs.body)
    assert not replayed(theirs)
    assert theirs.data["id"] != mine.data["id"]
    assert theirs.data["requester"]["identity"] == OTHER_LOGIN
    # Each one's retry finds its own.
    again = await execute(other, action, key="shared-key")
    assert replayed(again)
    assert again.data["id"] == theirs.data["id"]
    assert len(await executions_of(admin, action)) == 2


@pytest.mark.parametrize(("length", "status"), [(0, 400), (200, 201), (201, 400), (5000, 400)])
async def test_key_length_is_bounded(
    admin: aiohttp.ClientSession, action: str, length: int, status: int
) -> None:
    answer = await execute(admin, action, key="k" * length)
    assert answer.status == status, answer.body
    if status == 400:
        assert "Idempotency-Key" in answer.error
        assert await executions_of(admin, action) == []


# -- login throttling (last: it locks this machine's address out for the window) --------------


async def test_failed_logins_lock_the_login_out_with_retry_after(
    server: Server, admin: aiohttp.ClientSession
) -> None:
    async def attempt(password: str) -> Any:
        async with client(server.base_url) as anon:
            return await call(
                anon, "POST", "/auth/login", json={"login": LOCKED_LOGIN, "password": password}
            )

    for _ in range(MAX_FAILURES):
        wrong = await attempt("not-the-password")
        assert wrong.status == 401, wrong.body
        assert "Retry-After" not in wrong.headers
    locked = await attempt("not-the-password")
    assert locked.status == 429, locked.body
    assert 1 <= int(locked.headers["Retry-After"]) <= WINDOW_S, locked.headers
    assert "try again" in locked.error
    right = await attempt(LOCKED_PASSWORD)
    assert right.status == 429, right.body
    assert "access_token" not in str(right.body)
    assert 1 <= int(right.headers["Retry-After"]) <= WINDOW_S

    entries = await audit(admin, actor=LOCKED_LOGIN, verb="login")
    assert [e["outcome"] for e in entries] == ["denied"] * (MAX_FAILURES + 2), entries
    assert all(e["source"] == "api" for e in entries)
    assert all(e["channel"] == "127.0.0.1" for e in entries), entries
    assert sum("too many failed logins" in (e["detail"] or "") for e in entries) == 2
