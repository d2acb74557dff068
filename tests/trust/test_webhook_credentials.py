"""Webhook keys are credentials (issue 12, holes 1, 7 and 8), against a real ``attune serve``.

A viewer never sees a webhook key (posting to it would run the trigger's rules); the operator
and the admin, who may manage triggers, do (Attune's web UI reads it from the trigger); the
database holds no usable key. A caller without a trigger's HMAC secret cannot spend the
signed sender's rate limit; a password guesser elsewhere cannot lock the admin out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import ADMIN_LOGIN, Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import call, register, token_for

pytestmark = pytest.mark.e2e

RATE_PER_S = 1  # burst 2 per key
VIEWER = "vera"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-webhooks")
    env = engine_env(
        tmp,
        ATTUNE_ALLOW_REGISTRATION="true",
        ATTUNE_REGISTRATION_ROLE="viewer",
        ATTUNE_WEBHOOK_RATE_PER_S=str(RATE_PER_S),
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def tokens(server: Server) -> dict[str, str]:
    await register(server.base_url, VIEWER, "vera-password-1")
    admin, operator, viewer = await asyncio.gather(
        login(server.base_url),
        token_for(server, ADMIN_LOGIN, "operator"),
        token_for(server, VIEWER, "viewer"),
    )
    return {"admin": admin, "operator": operator, "viewer": viewer}


@pytest.fixture
async def sessions(
    server: Server, tokens: dict[str, str]
) -> AsyncIterator[dict[str, aiohttp.ClientSession]]:
    async with (
        client(server.base_url, tokens["admin"]) as admin,
        client(server.base_url, tokens["operator"]) as operator,
        client(server.base_url, tokens["viewer"]) as viewer,
        client(server.base_url) as anon,
    ):
        yield {"admin": admin, "operator": operator, "viewer": viewer, "anon": anon}


async def _trigger(admin: aiohttp.ClientSession, **spec: Any) -> tuple[str, str]:
    ref = f"core.hook_{uuid.uuid4().hex[:8]}"
    made = await call(admin, "POST", "/api/v1/triggers", json={"ref": ref, **spec})
    assert made.status == 201, made.body
    enabled = await call(admin, "POST", f"/api/v1/triggers/{ref}/webhooks/enable")
    assert enabled.status == 200, enabled.body
    key = enabled.data["webhook_key"]
    assert isinstance(key, str), enabled.body
    assert key.startswith("wh_"), enabled.body
    return ref, key


def _sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_viewer_never_sees_a_webhook_key(
    server: Server, sessions: dict[str, aiohttp.ClientSession]
) -> None:
    admin, operator, viewer = sessions["admin"], sessions["operator"], sessions["viewer"]
    ref, key = await _trigger(admin)
    fired = await call(sessions["anon"], "POST", f"/api/v1/webhooks/{key}", json={"payload": {}})
    assert fired.status == 200, fired.body

    for path in (
        "/api/v1/triggers",
        "/api/v1/triggers/enabled",
        "/api/v1/packs/core/triggers",
        f"/api/v1/triggers/{ref}",
        f"/api/v1/events?trigger_ref={ref}",
    ):
        seen = await call(viewer, "GET", path, params={"per_page": 1000})
        assert seen.status == 200, (path, seen.body)
        assert key not in json.dumps(seen.body), path
    got = await call(viewer, "GET", f"/api/v1/triggers/{ref}")
    assert got.data["webhook_key"] is None, got.body
    assert got.data["webhook_enabled"] is True, got.body
    refused = await call(viewer, "POST", f"/api/v1/triggers/{ref}/webhooks/regenerate")
    assert refused.status == 403, refused.body

    # Those who may manage the trigger read it, as Attune's web UI does.
    for session in (operator, admin):
        got = await call(session, "GET", f"/api/v1/triggers/{ref}")
        assert got.data["webhook_key"] == key, got.body
        listed = await call(session, "GET", "/api/v1/triggers", params={"per_page": 1000})
        assert key in [t["webhook_key"] for t in listed.items], listed.body
    again = await call(operator, "POST", f"/api/v1/triggers/{ref}/webhooks/enable")
    assert again.data["webhook_key"] == key, again.body

    # A copy of the database yields no usable key.
    db = server.env["ATTUNE_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM triggers WHERE ref = ?", (ref,)).fetchall()
    assert rows
    assert key not in repr(rows)
    assert key.removeprefix("wh_") not in repr(rows)
