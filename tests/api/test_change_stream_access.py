"""The change stream sends only the executions the caller's role may view (the rule of
``GET /api/v1/executions``), in-process against a server whose viewer sees ``core.echo`` alone;
and it outlives the handler time limit of ordinary requests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.records import Executor
from engine.runtime import Runtime, build_runtime

PACKS = str(Path(__file__).resolve().parents[2] / "packs")
PASSWORD = "Stream-Password-1"
WAIT_S = 10.0
#: The server's limit on a request's handler, which a stream outlives.
HANDLER_TIMEOUT_S = 0.3
WHO = Executor(identity="tester", source="cli")


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str]]:
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
            data_dir=tmp_path / "data",
            packs_path=PACKS,
            admin_password="admin-password-1",
            permissions={"viewer": {"view": ["core.echo"]}},
            http_handler_timeout_s=HANDLER_TIMEOUT_S,
        )
    )
    await rt.start_worker(housekeeping=False)
    server = TestServer(build_app(rt))
    await server.start_server()
    try:
        yield rt, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()
        await rt.close(grace_s=1)


async def token(session: aiohttp.ClientSession, url: str, rt: Runtime, role: str) -> str:
    await rt.auth.create_user(f"{role}-user", PASSWORD, role)  # type: ignore[arg-type]
    async with session.post(
        f"{url}/auth/login", json={"login": f"{role}-user", "password": PASSWORD}
    ) as resp:
        return str((await resp.json())["data"]["access_token"])


async def ids_seen(resp: aiohttp.ClientResponse, until: int) -> list[int]:
    """Execution ids of the events read until ``until`` ends."""
    seen: list[int] = []
    async with asyncio.timeout(WAIT_S):
        async for raw in resp.content:
            line = raw.decode().strip()
            if line.startswith("data:"):
                note: dict[str, Any] = json.loads(line[5:])
                seen.append(note["entity_id"])
                if note["entity_id"] == until and note["payload"]["status"] == "completed":
                    return seen
    pytest.fail(f"the stream ended early: {seen}")


async def test_a_viewer_hears_only_what_it_may_view(served: tuple[Runtime, str]) -> None:
    rt, url = served
    async with aiohttp.ClientSession() as session:
        viewer = await token(session, url, rt, "viewer")
        headers = {"Authorization": f"Bearer {viewer}"}
        async with session.get(f"{url}/api/v1/executions/stream", headers=headers) as resp:
            assert resp.status == 200
            hidden = await rt.service.submit("core.noop", {}, WHO)
            shown = await rt.service.submit("core.echo", {"message": "hi"}, WHO)
            seen = await ids_seen(resp, shown.id)
        assert shown.id in seen
        assert hidden.id not in seen
        path = f"{url}/api/v1/executions/stream?execution_id={hidden.id}"
        async with session.get(path, headers=headers) as resp:
            assert resp.status == 403  # as GET /api/v1/executions/{id}


async def test_a_stream_outlives_the_handler_time_limit(served: tuple[Runtime, str]) -> None:
    rt, url = served
    async with aiohttp.ClientSession() as session:
        admin = await token(session, url, rt, "admin")
        headers = {"Authorization": f"Bearer {admin}"}
        async with session.get(f"{url}/api/v1/executions/stream", headers=headers) as resp:
            assert resp.status == 200
            await asyncio.sleep(3 * HANDLER_TIMEOUT_S)  # what would end an ordinary request
            record = await rt.service.submit("core.echo", {"message": "late"}, WHO)
            assert record.id in await ids_seen(resp, record.id)
