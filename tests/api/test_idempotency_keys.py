"""Issue 12: an Idempotency-Key is scoped to the user who sent it, in a way no two users'
(login, key) pairs can collide: ``a:b`` + ``c`` and ``a`` + ``b:c`` once gave one execution."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.runtime import Runtime, build_runtime
from tests.e2e.conftest import PACKS_PATH


@pytest.fixture
async def rt_base(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'i.db'}",
            data_dir=tmp_path / "data",
            packs_path=str(PACKS_PATH),
            admin_login="admin",
            admin_password="admin-password-1",
        )
    )
    server = TestServer(build_app(rt))
    await server.start_server()
    try:
        yield rt, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await rt.close()


async def test_logins_with_colons_do_not_share_idempotency_keys(
    rt_base: tuple[Runtime, str],
) -> None:
    rt, base = rt_base
    ids = []
    async with aiohttp.ClientSession() as session:
        for login, key in (("a:b", "c"), ("a", "b:c")):
            await rt.auth.create_user(login, "password-123", "operator")
            token = await rt.auth.issue_token(login, name="t", ttl_s=3600)
            async with session.post(
                f"{base}/api/v1/executions/execute",
                json={"action_ref": "core.echo", "parameters": {"message": "hi"}},
                headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
            ) as resp:
                body = await resp.json()
                assert resp.status == 201, body
                assert resp.headers.get("Idempotent-Replayed") != "true", body
                assert body["data"]["requester"]["identity"] == login, body
                ids.append(body["data"]["id"])
    assert ids[0] != ids[1]
