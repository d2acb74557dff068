"""Session tokens as Attune's web UI reads them, written from Attune's published ``Claims``
(``crates/common/src/auth/jwt.rs``) and ``CurrentUserResponse`` (``crates/api/src/dto/auth.rs``):
access and refresh tokens are HS256 JWTs with ``sub``, ``login``, ``iat``, ``exp`` and
``token_type``; a signature is not enough (a revoked token, or one never issued, is refused);
a tampered, wrongly signed or expired one is 401; ``/auth/me`` carries Attune's
``effective_permissions`` for each of our roles; ``/auth/settings`` and ``/auth/logout`` as the
UI's login page and logout use them.

One runtime (SQLite) serves the module in-process over real HTTP; every test makes its own
users.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import insert, select

from config import Settings
from engine.api.app import ALL_ROUTES, build_app
from engine.auth import ROLES, token_hash
from engine.clock import now_utc
from engine.policy import Policy
from engine.runtime import Runtime, build_runtime
from engine.session_tokens import signing_key
from engine.storage.tables import tokens, users
from engine.users import Users

PASSWORD = "Session-Password-1"
TOKEN_TTL_S = 600
REFRESH_TTL_S = 3600

#: What each role may do, in Attune's resource and action names, with the default policy.
VIEWER = {
    "actions": ["read"],
    "artifacts": ["read"],
    "enforcements": ["read"],
    "events": ["read"],
    "executions": ["read"],
    "keys": ["read"],
    "packs": ["read"],
    "queues": ["read"],
    "rules": ["read"],
    "runtimes": ["read"],
    "triggers": ["read"],
    "workers": ["read"],
}
OPERATOR = {
    **VIEWER,
    "actions": ["create", "delete", "execute", "read", "update"],
    "executions": ["cancel", "read"],
    "keys": ["create", "decrypt", "delete", "read", "update"],
    "rules": ["create", "delete", "read", "update"],
    "triggers": ["create", "delete", "read", "update"],
}
ADMIN = {
    **OPERATOR,
    "audit_log": ["read"],
    "packs": ["create", "delete", "install", "read"],
}


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, token: str | None = None, **kw: Any
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.url + path, headers=headers, allow_redirects=False, **kw
        ) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None

    async def login(self, login: str, password: str = PASSWORD) -> dict[str, Any]:
        status, body = await self.call(
            "POST", "/auth/login", json={"login": login, "password": password}
        )
        assert status == 200, body
        return dict(body["data"])

    async def user(self, role: str) -> str:
        login = f"{role}_{uuid.uuid4().hex[:8]}"
        await self.rt.auth.create_user(login, PASSWORD, role)  # type: ignore[arg-type]
        return login

    def claims(self, token: str) -> dict[str, Any]:
        """The claims, checked against this server's key (as any API process sharing it)."""
        key = signing_key(self.rt.secret_key)
        return dict(jwt.decode(token, key, algorithms=["HS256"]))


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("session-tokens")
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp / 's.db'}",
            data_dir=tmp / "data",
            packs_path=str(tmp / "packs"),
            admin_login="admin",
            admin_password="admin-password-1",
            token_ttl_s=TOKEN_TTL_S,
            refresh_token_ttl_s=REFRESH_TTL_S,
        )
    )
    server = TestServer(build_app(rt))
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        yield Env(rt, str(server.make_url("")).rstrip("/"), session)
    finally:
        await session.close()
        await server.close()
        await rt.close()


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def user_id(env: Env, login: str) -> int:
    async with env.rt.store.read() as conn:
        return int(
            (await conn.execute(select(users.c.id).where(users.c.login == login))).scalar_one()
        )


# -- the claims -------------------------------------------------------------------------------


async def test_login_tokens_are_jwts_with_attunes_claims(env: Env) -> None:
    login = await env.user("operator")
    before = int(time.time())
    data = await env.login(login)
    after = int(time.time())

    access, refresh = data["access_token"], data["refresh_token"]
    assert jwt.get_unverified_header(access) == {"alg": "HS256", "typ": "JWT"}
    claims = env.claims(access)
    assert set(claims) == {"sub", "login", "iat", "exp", "token_type", "jti"}
    assert claims["sub"] == str(await user_id(env, login)) == str(data["user"]["id"])
    assert claims["login"] == login
    assert claims["token_type"] == "access"
    assert before <= claims["iat"] <= after
    assert claims["exp"] - claims["iat"] == TOKEN_TTL_S == data["expires_in"]

    refresh_claims = env.claims(refresh)
    assert refresh_claims["token_type"] == "refresh"
    assert refresh_claims["sub"] == claims["sub"]
    assert refresh_claims["exp"] - refresh_claims["iat"] == REFRESH_TTL_S

    # The pair a refresh issues is of the same kind; tokens of one second still differ.
    status, body = await env.call("POST", "/auth/refresh", json={"refresh_token": refresh})
    assert status == 200, body
    renewed = body["data"]
    assert env.claims(renewed["access_token"])["token_type"] == "access"
    assert env.claims(renewed["refresh_token"])["token_type"] == "refresh"
    second = await env.login(login)
    assert len({access, renewed["access_token"], second["access_token"]}) == 3


async def test_a_tampered_or_wrongly_signed_token_is_401(env: Env) -> None:
    login = await env.user("viewer")
    access = (await env.login(login))["access_token"]
    header, payload, signature = access.split(".")
    claims = env.claims(access)
    assert (await env.call("GET", "/auth/me", access))[0] == 200

    admin_id = await user_id(env, "admin")
    forged = [
        # The claims changed, the signature kept.
        f"{header}.{b64({**claims, 'sub': str(admin_id), 'login': 'admin'})}.{signature}",
        f"{header}.{b64({**claims, 'exp': claims['exp'] + 3600})}.{signature}",
        # Signed with another key, or not at all.
        jwt.encode(claims, b"k" * 32, algorithm="HS256"),
        f"{b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
        # A cut signature.
        f"{header}.{payload}.{signature[:-4]}",
    ]
    for token in forged:
        status, body = await env.call("GET", "/auth/me", token)
        assert status == 401, (token, body)
        assert body["code"] == "UNAUTHORIZED"


async def test_the_signature_is_not_enough_a_token_must_have_been_issued(env: Env) -> None:
    """A token signed with the server's own key but never issued (not stored) is refused:
    storage is what revocation rests on."""
    login = await env.user("admin")
    claims = env.claims((await env.login(login))["access_token"])
    never_issued = jwt.encode(
        {**claims, "jti": "made-up"}, signing_key(env.rt.secret_key), algorithm="HS256"
    )
    status, body = await env.call("GET", "/auth/me", never_issued)
    assert status == 401, body


async def test_an_expired_token_is_401_by_its_claim(env: Env) -> None:
    """``exp`` is checked on the token itself, whatever storage says."""
    login = await env.user("viewer")
    uid = await user_id(env, login)
    now = now_utc()
    token = env.rt.auth.session_tokens.issue(
        uid, login, "access", now - timedelta(seconds=120), now - timedelta(seconds=60)
    )
    async with env.rt.store.write() as conn:
        await conn.execute(
            insert(tokens).values(
                token_hash=token_hash(token),
                user_id=uid,
                name="login",
                role="viewer",
                expires_at=now + timedelta(hours=1),
                created=now,
            )
        )
    status, body = await env.call("GET", "/auth/me", token)
    assert status == 401, body
    assert "expired" in body["error"]


async def test_refresh_and_access_tokens_are_not_interchangeable(env: Env) -> None:
    login = await env.user("viewer")
    data = await env.login(login)
    status, body = await env.call("GET", "/auth/me", data["refresh_token"])
    assert status == 401, body
    status, body = await env.call(
        "POST", "/auth/refresh", json={"refresh_token": data["access_token"]}
    )
    assert status == 401, body
    # A refresh token with a changed claim is no refresh token.
    header, _, signature = data["refresh_token"].split(".")
    changed = {**env.claims(data["refresh_token"]), "login": "admin"}
    status, body = await env.call(
        "POST", "/auth/refresh", json={"refresh_token": f"{header}.{b64(changed)}.{signature}"}
    )
    assert status == 401, body
    # Neither attempt spent the real one.
    status, body = await env.call(
        "POST", "/auth/refresh", json={"refresh_token": data["refresh_token"]}
    )
    assert status == 200, body


# -- revocation -------------------------------------------------------------------------------


async def test_a_validly_signed_jwt_is_refused_once_revoked(env: Env) -> None:
    """Password reset and disabling end sessions; a role change lowers what a token may do:
    each at once, though the tokens are signed and not expired."""
    users_admin = Users(env.rt.auth)

    login = await env.user("operator")
    data = await env.login(login)
    assert (await env.call("GET", "/auth/me", data["access_token"]))[0] == 200
    await users_admin.set_password(login, "Another-Password-2")
    env.claims(data["access_token"])  # still signed and unexpired
    assert (await env.call("GET", "/auth/me", data["access_token"]))[0] == 401
    refreshed = await env.call(
        "POST", "/auth/refresh", json={"refresh_token": data["refresh_token"]}
    )
    assert refreshed[0] == 401

    login = await env.user("operator")
    data = await env.login(login)
    assert (await env.call("GET", "/auth/me", data["access_token"]))[0] == 200
    await users_admin.set_disabled(login, True)
    assert (await env.call("GET", "/auth/me", data["access_token"]))[0] == 401

    login = await env.user("admin")
    data = await env.login(login)
    status, me = await env.call("GET", "/auth/me", data["access_token"])
    assert me["data"]["role"] == "admin"
    await users_admin.set_role(login, "viewer")
    status, me = await env.call("GET", "/auth/me", data["access_token"])
    assert status == 200, me
    assert me["data"]["role"] == "viewer"
    assert permissions(me) == VIEWER
    status, body = await env.call("GET", "/api/v1/audit", data["access_token"])
    assert status == 403, body


# -- /auth/me ---------------------------------------------------------------------------------


def permissions(me: dict[str, Any]) -> dict[str, list[str]]:
    granted = me["data"]["effective_permissions"]
    resources = [p["resource"] for p in granted]
    assert resources == sorted(set(resources)), "one entry per resource, sorted"
    return {p["resource"]: p["actions"] for p in granted}


@pytest.mark.parametrize(
    ("role", "expected"), [("admin", ADMIN), ("operator", OPERATOR), ("viewer", VIEWER)]
)
async def test_me_has_attunes_effective_permissions_per_role(
    env: Env, role: str, expected: dict[str, list[str]]
) -> None:
    login = await env.user(role)
    status, me = await env.call("GET", "/auth/me", (await env.login(login))["access_token"])
    assert status == 200, me
    assert permissions(me) == expected
    assert me["data"]["assigned_permission_set_refs"] == []
    assert me["data"]["provider_profile"] is None
    # An integration token of a lesser role than its user's gets that role's permissions.
    token = await env.rt.auth.issue_token(login, name="ci", role="viewer")
    assert token.startswith("att_")
    status, me = await env.call("GET", "/auth/me", token)
    assert status == 200, me
    assert permissions(me) == VIEWER


async def test_what_me_grants_is_what_the_server_allows(env: Env) -> None:
    """The UI hides what ``effective_permissions`` lacks; what it shows must work: a viewer is
    refused a write, an operator may write a key and not register a pack, an admin may read
    the audit log."""
    viewer = (await env.login(await env.user("viewer")))["access_token"]
    operator = (await env.login(await env.user("operator")))["access_token"]
    admin = (await env.login(await env.user("admin")))["access_token"]
    key = {"ref": f"k.{uuid.uuid4().hex[:8]}", "name": "k", "value": "v", "owner_type": "system"}
    assert (await env.call("POST", "/api/v1/keys", viewer, json=key))[0] == 403
    assert (await env.call("POST", "/api/v1/keys", operator, json=key))[0] == 201
    pack = {"path": "/nonexistent", "force": False, "skip_tests": True}
    assert (await env.call("POST", "/api/v1/packs/register", operator, json=pack))[0] == 403
    assert (await env.call("GET", "/api/v1/audit", operator))[0] == 403
    assert (await env.call("GET", "/api/v1/audit", admin))[0] == 200


#: Where Attune's UI goes for each resource it reads and writes.
_PATHS = {"audit_log": "/api/v1/audit-events"}
_WRITES = {"create": ("POST", ""), "update": ("PUT", "/{ref}"), "delete": ("DELETE", "/{ref}")}


def test_every_grant_is_a_route_the_role_may_call_and_no_more() -> None:
    """Reads, creates, updates and deletes in ``effective_permissions`` against the route
    table: the role may call the route of each one it holds, and not the write routes of
    those it lacks."""
    routes = {(r.method, r.path): r.access for r in ALL_ROUTES}
    policy = Policy()
    for role in ROLES:
        held = {p["resource"]: p["actions"] for p in policy.grants(role)}
        for resource in held:
            base = _PATHS.get(resource, f"/api/v1/{resource}")
            assert ("GET", base) in routes, base
            assert ROLES.index(role) <= ROLES.index(routes["GET", base]), (role, base)
        for resource in ("packs", "actions", "rules", "triggers", "keys", "runtimes"):
            base = f"/api/v1/{resource}"
            for action, (method, tail) in _WRITES.items():
                if resource == "packs" and action == "update":
                    continue  # Attune's packs are configured, not updated
                access = routes.get((method, base + tail))
                may = access is not None and ROLES.index(role) <= ROLES.index(access)
                assert may == (action in held.get(resource, [])), (role, method, base + tail)
        may_install = ROLES.index(role) <= ROLES.index(routes["POST", "/api/v1/packs/register"])
        assert may_install == ("install" in held.get("packs", [])), role


def test_the_policy_decides_execute_cancel_and_reading_runs() -> None:
    def held(policy: Policy, role: str) -> dict[str, list[str]]:
        return {p["resource"]: p["actions"] for p in policy.grants(role)}

    assert held(Policy(), "viewer") == VIEWER
    assert held(Policy(), "operator") == OPERATOR
    assert held(Policy(), "admin") == ADMIN
    narrowed = Policy({"operator": {"run": [], "cancel": []}, "viewer": {"run": ["core.*"]}})
    assert "execute" not in held(narrowed, "operator")["actions"]
    assert held(narrowed, "operator")["executions"] == ["read"]
    assert held(narrowed, "viewer")["actions"] == ["execute", "read"]
    blind = Policy({"viewer": {"view": []}})
    assert "executions" not in held(blind, "viewer")


# -- the login page and logout ----------------------------------------------------------------


async def test_settings_offer_local_passwords_only(env: Env) -> None:
    status, body = await env.call("GET", "/auth/settings")
    assert status == 200, body
    settings = body["data"]
    assert settings["authentication_enabled"] is True
    assert settings["local_password_enabled"] is True
    assert settings["local_password_visible_by_default"] is True
    for provider in ("oidc", "ldap"):
        assert settings[f"{provider}_enabled"] is False
        assert settings[f"{provider}_visible_by_default"] is False
    assert settings["self_registration_enabled"] is False


async def test_logout_sends_the_browser_to_the_login_page(env: Env) -> None:
    async with env.session.get(env.url + "/auth/logout", allow_redirects=False) as resp:
        assert resp.status == 307
        assert resp.headers["Location"] == "/login"
