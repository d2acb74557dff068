"""A process keeps at most ``ATTUNE_MAX_STREAMS`` server-sent event streams open (change and
log streams together): one more is a 429 with a Retry-After, the open ones are not disturbed,
and a slot is free again once a client has gone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.records import Executor
from engine.runtime import Runtime, build_runtime
from tests.waiting import eventually

PACKS = str(Path(__file__).resolve().parents[2] / "packs")
WHO = Executor(identity="tester", source="cli")
MAX_STREAMS = 2


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Runtime, str, dict[str, str]]]:
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 's.db'}",
            data_dir=tmp_path / "data",
            packs_path=PACKS,
            admin_password="admin-password-1",
            max_streams=MAX_STREAMS,
        )
    )
    server = TestServer(build_app(rt))
    await server.start_server()
    token = await rt.auth.issue_token("admin", name="t", ttl_s=3600)
    try:
        yield rt, str(server.make_url("")).rstrip("/"), {"Authorization": f"Bearer {token}"}
    finally:
        await server.close()
        await rt.close(grace_s=1)


async def test_one_stream_more_than_the_bound_is_refused(
    served: tuple[Runtime, str, dict[str, str]],
) -> None:
    rt, url, headers = served
    record = await rt.service.submit("core.echo", {"message": "hi"}, WHO)  # no worker: waits
    changes = f"{url}/api/v1/executions/stream"
    logs = f"{url}/api/v1/executions/{record.id}/logs/stdout/stream"
    async with aiohttp.ClientSession() as first, aiohttp.ClientSession() as second:
        held = await first.get(changes, headers=headers)
        assert held.status == 200
        async with second.get(logs, headers=headers) as log_stream:
            assert log_stream.status == 200
            for path in (changes, logs):
                async with second.get(path, headers=headers) as refused:
                    assert refused.status == 429, path
                    assert refused.headers["Retry-After"] == "5"
                    assert "ATTUNE_MAX_STREAMS=2" in (await refused.json())["error"]
            assert (await log_stream.content.readline()).startswith(b"event: waiting")
        held.close()  # its client goes: its slot is free again

        async def opens() -> int:
            async with second.get(changes, headers=headers) as resp:
                return resp.status

        await eventually(
            opens, "a change stream once a slot is free", 10.0, done=lambda s: s == 200
        )
