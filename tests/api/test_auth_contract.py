"""``/auth`` as Attune's: login and register answer a ``TokenResponse`` (access token, refresh
token, ``Bearer``, ``expires_in``, ``user``); a refresh token works once and issues a new pair;
``/auth/me``; change-password ends every session; registration on, off, taken, weak.

Two ``attune serve`` (SQLite) for the module: ``open_server`` with registration on (registered
users get the default role, viewer), ``closed_server`` with the defaults and one-second tokens.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import ADMIN_LOGIN, ADMIN_PASSWORD, Server, client, engine_env
from tests.scenario.harness import running_server
from tests.trust.support import Answer, call, token_for

pytestmark = pytest.mark.e2e

PASSWORD = "SecurePassword123!"
#: Lifetime of both tokens on ``closed_server``.
SHORT_TTL_S = 1


@pytest.fixture(scope="module")
async def open_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("auth-open")
    env = engine_env(tmp, ATTUNE_ALLOW_REGISTRATION="true", ATTUNE_LOG_FORMAT="text")
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def closed_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("auth-closed")
    env = engine_env(
        tmp,
        ATTUNE_TOKEN_TTL_S=str(SHORT_TTL_S),
        ATTUNE_REFRESH_TOKEN_TTL_S=str(SHORT_TTL_S),
        ATTUNE_LOG_FORMAT="text",
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture
async def anon(open_server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(open_server.base_url) as session:
        yield session


def new_login(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


async def post(session: aiohttp.ClientSession, path: str, body: Any, **kw: Any) -> Answer:
    return await call(session, "POST", path, json=body, **kw)


async def as_bearer(base_url: str, token: str, method: str, path: str, **kw: Any) -> Answer:
    async with client(base_url, token) as session:
        return await call(session, method, path, **kw)


def assert_error(answer: Answer, status: int, code: str) -> str:
    assert answer.status == status, answer.body
    assert set(answer.body) == {"error", "code"}, answer.body
    assert answer.body["code"] == code, answer.body
    assert answer.error
    return answer.error


def assert_token_response(data: dict[str, Any], login: str) -> None:
    """Attune's ``TokenResponse``, field by field."""
    assert set(data) == {"access_token", "refresh_token", "token_type", "expires_in", "user"}
    assert isinstance(data["access_token"], str)
    assert data["access_token"]
    assert isinstance(data["refresh_token"], str)
    assert data["refresh_token"]
    assert data["access_token"] != data["refresh_token"]
    assert data["token_type"] == "Bearer"
    assert isinstance(data["expires_in"], int)
    assert data["expires_in"] > 0
    user = data["user"]
    assert set(user) == {"id", "login", "display_name"}
    assert isinstance(user["id"], int)
    assert user["login"] == login


async def registered(
    anon: aiohttp.ClientSession, prefix: str, display_name: str | None = None
) -> tuple[str, dict[str, Any]]:
    login = new_login(prefix)
    body: dict[str, Any] = {"login": login, "password": PASSWORD}
    if display_name is not None:
        body["display_name"] = display_name
    answer = await post(anon, "/auth/register", body)
    assert answer.status == 200, answer.body
    return login, dict(answer.data)


# -- login ------------------------------------------------------------------------------------


async def test_login_answers_attunes_token_response(open_server: Server, anon: Any) -> None:
    answer = await post(anon, "/auth/login", {"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD})
    assert answer.status == 200, answer.body
    assert set(answer.body) == {"data"}
    data = answer.data
    assert_token_response(data, ADMIN_LOGIN)
    assert data["user"]["display_name"] == "Administrator"
    # The access token is a bearer token; the refresh token is not.
    me = await as_bearer(open_server.base_url, data["access_token"], "GET", "/auth/me")
    assert me.status == 200, me.body
    as_refresh = await as_bearer(open_server.base_url, data["refresh_token"], "GET", "/auth/me")
    assert_error(as_refresh, 401, "UNAUTHORIZED")


async def test_wrong_password_and_unknown_login_are_401(anon: Any) -> None:
    wrong = await post(anon, "/auth/login", {"login": ADMIN_LOGIN, "password": "not-it-123"})
    assert "invalid login or password" in assert_error(wrong, 401, "UNAUTHORIZED")
    unknown = await post(anon, "/auth/login", {"login": new_login("nobody"), "password": "x"})
    assert assert_error(unknown, 401, "UNAUTHORIZED") == wrong.error


# -- refresh ----------------------------------------------------------------------------------


async def test_refresh_issues_a_new_pair_and_works_once(open_server: Server, anon: Any) -> None:
    login, first = await registered(anon, "refresh")
    answer = await post(anon, "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert answer.status == 200, answer.body
    second = answer.data
    assert_token_response(second, login)
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    me = await as_bearer(open_server.base_url, second["access_token"], "GET", "/auth/me")
    assert me.status == 200, me.body
    assert me.data["login"] == login

    # Used once: the first refresh token is spent, the new one works (once too).
    again = await post(anon, "/auth/refresh", {"refresh_token": first["refresh_token"]})
    assert "refresh token" in assert_error(again, 401, "UNAUTHORIZED")
    third = await post(anon, "/auth/refresh", {"refresh_token": second["refresh_token"]})
    assert third.status == 200, third.body


async def test_concurrent_uses_of_one_refresh_token_succeed_once(anon: Any) -> None:
    _, session = await registered(anon, "race")
    body = {"refresh_token": session["refresh_token"]}
    answers = await asyncio.gather(*(post(anon, "/auth/refresh", body) for _ in range(5)))
    assert sorted(a.status for a in answers) == [200, 401, 401, 401, 401], answers


@pytest.mark.parametrize(
    "body",
    [{"refresh_token": "invalid-refresh-token"}, {"refresh_token": "atr_" + "x" * 43}],
    ids=["garbage", "well-formed-unknown"],
)
async def test_an_unknown_refresh_token_is_401(anon: Any, body: dict[str, str]) -> None:
    assert_error(await post(anon, "/auth/refresh", body), 401, "UNAUTHORIZED")


async def test_an_access_token_is_no_refresh_token(anon: Any) -> None:
    _, session = await registered(anon, "mixup")
    answer = await post(anon, "/auth/refresh", {"refresh_token": session["access_token"]})
    assert_error(answer, 401, "UNAUTHORIZED")


async def test_refresh_without_a_token_is_400(anon: Any) -> None:
    assert_error(await post(anon, "/auth/refresh", {}), 400, "BAD_REQUEST")


async def test_expired_tokens_are_refused(closed_server: Server) -> None:
    async with client(closed_server.base_url) as anon:
        answer = await post(anon, "/auth/login", {"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD})
        assert answer.status == 200, answer.body
        assert answer.data["expires_in"] == SHORT_TTL_S
        await asyncio.sleep(SHORT_TTL_S + 0.2)
        late = await as_bearer(
            closed_server.base_url, answer.data["access_token"], "GET", "/auth/me"
        )
        assert "expired" in assert_error(late, 401, "UNAUTHORIZED")
        spent = await post(anon, "/auth/refresh", {"refresh_token": answer.data["refresh_token"]})
        assert_error(spent, 401, "UNAUTHORIZED")


# -- the current user -------------------------------------------------------------------------


async def test_me_is_attunes_current_user_with_the_role(open_server: Server, anon: Any) -> None:
    login, session = await registered(anon, "me", display_name="Mia Example")
    me = await as_bearer(open_server.base_url, session["access_token"], "GET", "/auth/me")
    assert me.status == 200, me.body
    # What each role's effective_permissions hold: tests/api/test_session_tokens.py.
    assert {"resource": "actions", "actions": ["read"]} in me.data.pop("effective_permissions")
    assert me.data == {
        "id": session["user"]["id"],
        "login": login,
        "display_name": "Mia Example",
        "role": "viewer",  # the default role of registered users
        "auth_provider": "local",
        "is_local": True,
        "can_change_password": True,
        "provider_profile": None,
        "assigned_permission_set_refs": [],
    }
    renamed = await as_bearer(
        open_server.base_url,
        session["access_token"],
        "PUT",
        "/auth/me",
        json={"display_name": "  Mia E.  "},
    )
    assert renamed.status == 200, renamed.body
    assert renamed.data["display_name"] == "Mia E."


@pytest.mark.parametrize("authorization", [None, "Bearer invalid-token"], ids=["none", "bad"])
async def test_me_needs_a_valid_token(open_server: Server, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    async with client(open_server.base_url) as session:
        answer = await call(session, "GET", "/auth/me", headers=headers)
    assert_error(answer, 401, "UNAUTHORIZED")


# -- change-password --------------------------------------------------------------------------


async def test_change_password_ends_every_session(open_server: Server, anon: Any) -> None:
    login, first = await registered(anon, "chpw")
    second = (await post(anon, "/auth/login", {"login": login, "password": PASSWORD})).data
    base = open_server.base_url
    new_password = "AnotherPassword456!"

    wrong = await as_bearer(
        base,
        first["access_token"],
        "POST",
        "/auth/change-password",
        json={"current_password": "not-my-password", "new_password": new_password},
    )
    assert "current password" in assert_error(wrong, 401, "UNAUTHORIZED")
    weak = await as_bearer(
        base,
        first["access_token"],
        "POST",
        "/auth/change-password",
        json={"current_password": PASSWORD, "new_password": "short"},
    )
    assert "8 to 128" in assert_error(weak, 422, "VALIDATION_ERROR")
    # Neither changed anything: the sessions still work.
    assert (await as_bearer(base, first["access_token"], "GET", "/auth/me")).status == 200

    done = await as_bearer(
        base,
        first["access_token"],
        "POST",
        "/auth/change-password",
        json={"current_password": PASSWORD, "new_password": new_password},
    )
    assert done.status == 200, done.body
    assert done.data == {"success": True, "message": "Password changed successfully"}

    # Every session ended at once, the one that asked included: access and refresh tokens.
    for session in (first, second):
        me = await as_bearer(base, session["access_token"], "GET", "/auth/me")
        assert_error(me, 401, "UNAUTHORIZED")
        refreshed = await post(anon, "/auth/refresh", {"refresh_token": session["refresh_token"]})
        assert_error(refreshed, 401, "UNAUTHORIZED")
    old = await post(anon, "/auth/login", {"login": login, "password": PASSWORD})
    assert_error(old, 401, "UNAUTHORIZED")
    new = await post(anon, "/auth/login", {"login": login, "password": new_password})
    assert new.status == 200, new.body
    assert_token_response(new.data, login)


async def test_change_password_needs_a_login_session(open_server: Server) -> None:
    """As Attune: an integration token (``attune token create``) cannot change the password."""
    token = await token_for(open_server, ADMIN_LOGIN, "admin")
    answer = await as_bearer(
        open_server.base_url,
        token,
        "POST",
        "/auth/change-password",
        json={"current_password": ADMIN_PASSWORD, "new_password": "whatever-new-1"},
    )
    assert_error(answer, 403, "FORBIDDEN")
    login = await post_login(open_server, ADMIN_LOGIN, ADMIN_PASSWORD)
    assert login.status == 200, login.body


async def post_login(server: Server, login: str, password: str) -> Answer:
    async with client(server.base_url) as anon:
        return await post(anon, "/auth/login", {"login": login, "password": password})


# -- register ---------------------------------------------------------------------------------


async def test_register_answers_as_login_does(open_server: Server, anon: Any) -> None:
    login, data = await registered(anon, "newuser", display_name="New User")
    assert_token_response(data, login)
    assert data["user"]["display_name"] == "New User"
    me = await as_bearer(open_server.base_url, data["access_token"], "GET", "/auth/me")
    assert me.data["role"] == "viewer"
    # A viewer reads but does not run.
    run = await as_bearer(
        open_server.base_url,
        data["access_token"],
        "POST",
        "/api/v1/executions/execute",
        json={"action_ref": "core.echo", "parameters": {"message": "hi"}},
    )
    assert run.status == 403, run.body
    again = await post_login(open_server, login, PASSWORD)
    assert again.status == 200, again.body


async def test_register_a_taken_login_is_409(anon: Any) -> None:
    login, _ = await registered(anon, "dup")
    answer = await post(anon, "/auth/register", {"login": login, "password": PASSWORD})
    assert login in assert_error(answer, 409, "CONFLICT")
    admin = await post(anon, "/auth/register", {"login": ADMIN_LOGIN, "password": PASSWORD})
    assert_error(admin, 409, "CONFLICT")


@pytest.mark.parametrize(
    ("login", "password", "words"),
    [(None, "weak", "password"), (None, "x" * 129, "password"), ("ab", PASSWORD, "login")],
    ids=["short-password", "long-password", "short-login"],
)
async def test_register_refuses_weak_values_with_422(
    anon: Any, login: str | None, password: str, words: str
) -> None:
    body = {"login": login or new_login("weak"), "password": password}
    answer = await post(anon, "/auth/register", body)
    assert words in assert_error(answer, 422, "VALIDATION_ERROR")
    assert (await post(anon, "/auth/login", body)).status == 401  # nobody was made


async def test_register_is_off_by_default(closed_server: Server) -> None:
    async with client(closed_server.base_url) as anon:
        answer = await post(anon, "/auth/register", {"login": "someone", "password": PASSWORD})
        assert "registration is disabled" in assert_error(answer, 403, "FORBIDDEN")
        settings = await call(anon, "GET", "/auth/settings")
    assert settings.status == 200, settings.body
    assert settings.data["self_registration_enabled"] is False
    assert settings.data["local_password_enabled"] is True


async def test_settings_say_registration_is_open(anon: Any) -> None:
    settings = await call(anon, "GET", "/auth/settings")
    assert settings.data["self_registration_enabled"] is True
    assert settings.data["ldap_enabled"] is False


async def test_the_openapi_document_describes_the_auth_endpoints(anon: Any) -> None:
    doc = (await call(anon, "GET", "/api/v1/openapi.json")).body
    for path in ("/auth/login", "/auth/refresh", "/auth/register", "/auth/change-password"):
        assert "post" in doc["paths"][path], path
    assert "get" in doc["paths"]["/auth/me"]
    token = doc["components"]["schemas"]["TokenResponse"]
    assert set(token["required"]) >= {"access_token", "refresh_token", "expires_in"}
    assert "422" in doc["paths"]["/auth/register"]["post"]["responses"]
