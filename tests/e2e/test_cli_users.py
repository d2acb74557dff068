"""``attune user ...`` as a subprocess on a server's SQLite database, then the API as the people
it made see it: create (generated or given password), list, set-role, set-password (ends the
user's sessions), disable and enable; the last admin is kept; a lost admin password is reset.

One ``attune serve`` for the module, trusting a looked-up token for ``CACHE_S`` (a change made
by the command line, another process, is seen within that).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    CLI_TIMEOUT_S,
    Server,
    client,
    engine_env,
    run_cli,
)
from tests.scenario.harness import running_server
from tests.trust.support import POLL_S, Answer, call, token_for
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

CACHE_S = 1
#: Bound on seeing a change made by another process: the cache's time and some slack.
SEEN_WITHIN_S = CACHE_S + 5


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("cli-users")
    env = engine_env(tmp, ATTUNE_TOKEN_CACHE_S=str(CACHE_S), ATTUNE_LOG_FORMAT="text")
    async with running_server("serve", env, tmp) as srv:
        yield srv


async def attune_user_in(
    env: dict[str, str], cwd: Path, *args: str, stdin: str | None = None
) -> tuple[int, str, str]:
    """``attune user ARGS`` with ``env``, ``stdin`` on its standard input (bounded)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "user",
        *args,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    data = stdin.encode() if stdin is not None else b""
    try:
        out, err = await asyncio.wait_for(proc.communicate(data), CLI_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"attune user {' '.join(args)} did not finish within {CLI_TIMEOUT_S} s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def attune_user(server: Server, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    """``attune user ARGS`` on the server's database."""
    return await attune_user_in(server.env, server.tmp, *args, stdin=stdin)


async def made(server: Server, *args: str, stdin: str | None = None) -> str:
    """Run a command that must succeed; return its stdout."""
    code, out, err = await attune_user(server, *args, stdin=stdin)
    assert code == 0, (out, err)
    assert "Traceback" not in err
    return out


async def refused(server: Server, *args: str, stdin: str | None = None) -> str:
    """Run a command that must fail cleanly (exit 2, a message); return the message."""
    code, out, err = await attune_user(server, *args, stdin=stdin)
    assert code == 2, (out, err)
    assert "Traceback" not in err
    return err


def new_login(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:6]}"


async def login(server: Server, who: str, password: str) -> Answer:
    async with client(server.base_url) as anon:
        return await call(anon, "POST", "/auth/login", json={"login": who, "password": password})


async def session_of(server: Server, who: str, password: str) -> dict[str, Any]:
    answer = await login(server, who, password)
    assert answer.status == 200, answer.body
    return dict(answer.data)


async def me(server: Server, token: str) -> Answer:
    async with client(server.base_url, token) as session:
        return await call(session, "GET", "/auth/me")


async def refresh(server: Server, refresh_token: str) -> Answer:
    async with client(server.base_url) as anon:
        return await call(anon, "POST", "/auth/refresh", json={"refresh_token": refresh_token})


async def refused_soon(server: Server, token: str) -> Answer:
    """``/auth/me`` with ``token`` until it is 401 (within the cache's bound)."""
    refused: Answer = await eventually(
        lambda: me(server, token),
        "the token to be refused",
        SEEN_WITHIN_S,
        interval_s=POLL_S,
        done=lambda a: a.status == 401,
    )
    return refused


async def acts_as(server: Server, token: str, role: str) -> Answer:
    """``/auth/me`` with ``token`` until it shows ``role`` (within the cache's bound)."""

    async def fetch() -> Answer:
        return await me(server, token)

    seen: Answer = await eventually(
        fetch,
        f"a {role}",
        SEEN_WITHIN_S,
        interval_s=POLL_S,
        done=lambda a: a.status == 200 and a.data["role"] == role,
    )
    return seen


async def users_listed(server: Server) -> dict[str, dict[str, Any]]:
    rows = json.loads(await made(server, "list", "--json"))
    return {row["login"]: row for row in rows}


# -- create and list --------------------------------------------------------------------------


async def test_create_prints_a_generated_password_that_logs_in(server: Server) -> None:
    who = new_login("alice")
    out = await made(server, "create", who, "--role", "operator", "--display-name", "Alice A")
    password = out.strip().splitlines()[-1]
    assert len(password) >= 16, out
    session = await session_of(server, who, password)
    assert session["user"] == {"id": session["user"]["id"], "login": who, "display_name": "Alice A"}
    answer = await me(server, session["access_token"])
    assert answer.data["role"] == "operator"


async def test_create_with_a_password_on_stdin(server: Server) -> None:
    who = new_login("bob")
    out = await made(server, "create", who, "--password-stdin", stdin="bobs-Password-1\n")
    assert "bobs-Password-1" not in out  # a given password is not echoed
    assert out.strip() == ""
    session = await session_of(server, who, "bobs-Password-1")
    assert (await me(server, session["access_token"])).data["role"] == "viewer"  # the default

    assert "already exists" in await refused(server, "create", who)
    weak = await refused(server, "create", new_login("weak"), "--password-stdin", stdin="short\n")
    assert "8 to 128" in weak


async def test_list_shows_logins_roles_and_state(server: Server) -> None:
    who = new_login("lister")
    await made(server, "create", who, "--role", "operator")
    listed = await users_listed(server)
    assert listed[ADMIN_LOGIN]["role"] == "admin"
    assert listed[who]["role"] == "operator"
    assert listed[who]["disabled"] is False
    text = await made(server, "list")
    assert any(line.split("\t")[:3] == [who, "operator", "enabled"] for line in text.splitlines())


# -- roles ------------------------------------------------------------------------------------


async def test_set_role_applies_to_existing_tokens_when_lowered(server: Server) -> None:
    who = new_login("carla")
    password = (await made(server, "create", who, "--role", "admin")).strip().splitlines()[-1]
    session = await session_of(server, who, password)
    integration = await token_for(server, who, "admin")
    assert (await me(server, session["access_token"])).data["role"] == "admin"

    out = await made(server, "set-role", who, "viewer")
    assert out.strip() == ""
    assert (await users_listed(server))[who]["role"] == "viewer"
    for token in (session["access_token"], integration):
        assert (await acts_as(server, token, "viewer")).data["login"] == who

    # Raised again: new sessions get the role.
    await made(server, "set-role", who, "operator")
    fresh = await session_of(server, who, password)
    assert (await me(server, fresh["access_token"])).data["role"] == "operator"


# -- passwords --------------------------------------------------------------------------------


async def test_set_password_ends_the_users_sessions(server: Server) -> None:
    who = new_login("dora")
    first = (await made(server, "create", who)).strip().splitlines()[-1]
    session = await session_of(server, who, first)

    second = (await made(server, "set-password", who)).strip().splitlines()[-1]
    assert second != first
    assert (await login(server, who, first)).status == 401
    assert (await refresh(server, session["refresh_token"])).status == 401
    await refused_soon(server, session["access_token"])
    session = await session_of(server, who, second)

    await made(server, "set-password", who, "--password-stdin", stdin="Doras-Own-Pass-3\n")
    assert (await login(server, who, second)).status == 401
    await session_of(server, who, "Doras-Own-Pass-3")
    assert "8 to 128" in await refused(
        server, "set-password", who, "--password-stdin", stdin="tiny\n"
    )


async def test_a_lost_admin_password_is_reset_from_the_command_line(server: Server) -> None:
    """The README's recipe: ``attune user set-password admin`` prints a new one."""
    before = await session_of(server, ADMIN_LOGIN, ADMIN_PASSWORD)
    out = await made(server, "set-password", ADMIN_LOGIN)
    new_password = out.strip().splitlines()[-1]
    try:
        assert (await login(server, ADMIN_LOGIN, ADMIN_PASSWORD)).status == 401
        await refused_soon(server, before["access_token"])
        after = await session_of(server, ADMIN_LOGIN, new_password)
        assert (await me(server, after["access_token"])).data["role"] == "admin"
    finally:  # the module's other tests log in as the admin
        await made(
            server, "set-password", ADMIN_LOGIN, "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
        )
    await session_of(server, ADMIN_LOGIN, ADMIN_PASSWORD)


# -- disable and enable -----------------------------------------------------------------------


async def test_a_disabled_user_cannot_log_in_and_their_tokens_stop(server: Server) -> None:
    who = new_login("eve")
    password = (await made(server, "create", who, "--role", "operator")).strip().splitlines()[-1]
    session = await session_of(server, who, password)
    integration = await token_for(server, who, "operator")

    await made(server, "disable", who)
    assert (await users_listed(server))[who]["disabled"] is True
    denied = await login(server, who, password)
    assert denied.status == 403, denied.body
    assert "disabled" in denied.error
    wrong = await login(server, who, "not-the-password")
    assert wrong.status == 401, wrong.body  # a wrong password tells nothing more
    assert (await refresh(server, session["refresh_token"])).status == 401
    await refused_soon(server, session["access_token"])
    refusal = await refused_soon(server, integration)
    assert "disabled" in refusal.error

    await made(server, "enable", who)
    assert (await users_listed(server))[who]["disabled"] is False
    await session_of(server, who, password)
    # Integration tokens were refused while disabled, not deleted: they work again.
    assert (await acts_as(server, integration, "operator")).data["login"] == who


async def test_the_last_enabled_admin_is_kept(server: Server) -> None:
    assert "last enabled admin" in await refused(server, "disable", ADMIN_LOGIN)
    assert "last enabled admin" in await refused(server, "set-role", ADMIN_LOGIN, "viewer")
    # With a second admin, the first may go (and come back).
    other = new_login("root")
    await made(server, "create", other, "--role", "admin")
    await made(server, "disable", ADMIN_LOGIN)
    assert (await login(server, ADMIN_LOGIN, ADMIN_PASSWORD)).status == 403
    await made(server, "enable", ADMIN_LOGIN)
    await session_of(server, ADMIN_LOGIN, ADMIN_PASSWORD)
    await made(server, "disable", other)


async def test_unknown_users_and_the_audit_log(server: Server) -> None:
    nobody = new_login("nobody")
    for args in (("set-role", nobody, "viewer"), ("disable", nobody)):
        assert f"user '{nobody}' not found" in await refused(server, *args)
    assert "not found" in await refused(
        server, "set-password", nobody, "--password-stdin", stdin="Some-Password-9\n"
    )

    who = new_login("audited")
    await made(server, "create", who, "--role", "operator")
    await made(server, "disable", who)
    code, out, err = await run_cli(["audit", "--json", "--limit", "200"], server.env, server.tmp)
    assert code == 0, err
    entries = [e for e in json.loads(out) if e["target"] == who]
    assert [(e["verb"], e["source"], e["outcome"]) for e in entries] == [
        ("user-create", "cli", "accepted"),
        ("user-disable", "cli", "accepted"),
    ]
    assert entries[0]["detail"] == "role operator"


# -- a fresh database, no server --------------------------------------------------------------


async def test_on_a_fresh_database_the_first_admin_is_made_too(tmp_path: Path) -> None:
    """``attune user create`` before the first ``attune serve`` still leaves an administrator
    (whose generated password it prints), and the users it made log in through the service."""
    env = engine_env(tmp_path)
    env.pop("ATTUNE_ADMIN_PASSWORD")
    code, out, err = await attune_user_in(env, tmp_path, "create", "frank", "--role", "operator")
    assert code == 0, err
    assert f"first administrator '{ADMIN_LOGIN}' created with password" in err
    admin_password = err.split("with password ")[1].split()[0]
    frank_password = out.strip().splitlines()[-1]

    from engine.auth import AuthService
    from engine.storage import build_store

    store = build_store(env["ATTUNE_DATABASE_URL"])
    try:
        auth = AuthService(store, token_ttl_s=60)
        frank = await auth.login("frank", frank_password)
        admin = await auth.login(ADMIN_LOGIN, admin_password)
        assert (await auth.authenticate(frank.access_token)).role == "operator"
        assert (await auth.authenticate(admin.access_token)).role == "admin"
    finally:
        await store.close()
