"""Look-alike logins are one identity (issue 12, hole 10): ``admin ``, ``ADMIN`` and ``admin``
in full-width letters are the login ``admin``, on registration, ``attune user create`` and
login; logins with invisible characters or that mix look-alike scripts are refused.

One ``attune serve`` (SQLite) for the module with self-service registration on.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.conftest import ADMIN_LOGIN, ADMIN_PASSWORD, Server, engine_env, run_cli
from tests.scenario.harness import running_server
from tests.trust.support import Answer, call

pytestmark = pytest.mark.e2e

PASSWORD = "a-long-enough-password"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-logins")
    env = engine_env(tmp, ATTUNE_ALLOW_REGISTRATION="true", ATTUNE_REGISTRATION_ROLE="viewer")
    async with running_server("serve", env, tmp) as srv:
        yield srv


async def register(server: Server, login: str) -> Answer:
    async with aiohttp.ClientSession(base_url=server.base_url) as session:
        return await call(
            session, "POST", "/auth/register", json={"login": login, "password": PASSWORD}
        )


async def log_in(server: Server, login: str, password: str) -> Answer:
    async with aiohttp.ClientSession(base_url=server.base_url) as session:
        return await call(
            session, "POST", "/auth/login", json={"login": login, "password": password}
        )


def fullwidth(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def test_case_space_and_width_variants_of_a_login_are_refused(server: Server) -> None:
    name = f"Lena{uuid.uuid4().hex[:6]}"
    first = await register(server, name)
    assert first.status == 200, first.body
    for variant in (name.lower(), name.upper(), f" {name} ", fullwidth(name)):
        answer = await register(server, variant)
        assert answer.status == 409, (variant, answer.body)
        assert f"'{name}'" in answer.error, answer.body  # names the login it collides with

    # The administrator's own login, the way it was reported.
    for variant in (f"{ADMIN_LOGIN} ", ADMIN_LOGIN.upper()):
        answer = await register(server, variant)
        assert answer.status == 409, (variant, answer.body)

    code, out, err = await run_cli(["user", "list"], server.env, server.tmp)
    assert code == 0, err
    logins = [line.split("\t")[0] for line in out.splitlines() if line.strip()]
    assert [x for x in logins if x.casefold() == name.casefold()] == [name], out


async def test_attune_user_create_refuses_a_look_alike(server: Server) -> None:
    code, out, err = await run_cli(
        ["user", "create", ADMIN_LOGIN.upper(), "--role", "viewer"], server.env, server.tmp
    )
    assert code != 0, out
    assert f"same as the existing login '{ADMIN_LOGIN}'" in err + out
    assert "Traceback" not in err


async def test_login_is_case_insensitive_and_ignores_surrounding_spaces(server: Server) -> None:
    for variant in (ADMIN_LOGIN.upper(), f" {ADMIN_LOGIN} ", fullwidth(ADMIN_LOGIN)):
        answer = await log_in(server, variant, ADMIN_PASSWORD)
        assert answer.status == 200, (variant, answer.body)
        assert answer.data["user"]["login"] == ADMIN_LOGIN, answer.body


@pytest.mark.parametrize(
    ("login", "problem"),
    [
        ("p\u0430ypal", "mixes letters of the Cyrillic and Latin scripts"),
        ("ad\u200bmin", "invisible or control character U+200B"),
        ("ad\tmin", "invisible or control character U+0009"),
    ],
)
async def test_invisible_characters_and_mixed_scripts_are_refused(
    server: Server, login: str, problem: str
) -> None:
    answer = await register(server, login)
    assert answer.status == 400, answer.body
    assert problem in answer.error, answer.body
