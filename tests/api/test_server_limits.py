"""``/metrics`` follows ``ATTUNE_METRICS`` (authenticated by default, public, or off) and a
handler that hangs is answered 503 within ``ATTUNE_HTTP_HANDLER_TIMEOUT_S`` (issue 12, hole 10).

One runtime (SQLite) serves the module in-process over real HTTP, with one extra route whose
handler never returns.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.runtime import Runtime, build_runtime

HANDLER_TIMEOUT_S = 0.5


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession
    token: str

    async def get(self, path: str, token: str | None = None) -> tuple[int, str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.get(self.url + path, headers=headers) as resp:
            return resp.status, await resp.text(), resp.headers


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("server-limits")
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp / 's.db'}",
            data_dir=tmp / "data",
            packs_path=str(tmp / "packs"),
            admin_login="admin",
            admin_password="admin-password-1",
            http_handler_timeout_s=HANDLER_TIMEOUT_S,
        )
    )

    async def hang(_request: web.Request) -> web.Response:
        await asyncio.Event().wait()  # never set
        raise AssertionError("unreachable")

    server = TestServer(build_app(rt, extra_routes=[web.get("/test/hang", hang)]))
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        await rt.auth.create_user("viewer1", "viewer-password-1", "viewer")
        token = await rt.auth.issue_token("viewer1", name="metrics", role="viewer")
        yield Env(rt, str(server.make_url("")).rstrip("/"), session, token)
    finally:
        await session.close()
        await server.close()
        await rt.close()


async def test_metrics_need_a_token_by_default(env: Env) -> None:
    assert Settings().metrics == "authenticated"
    assert env.rt.settings.metrics == "authenticated"
    status, text, _ = await env.get("/metrics")
    assert status == 401, text
    assert "ATTUNE_METRICS" in json.loads(text)["error"]
    status, text, _ = await env.get("/metrics", "att_not-a-token")
    assert status == 401, text
    status, text, _ = await env.get("/metrics", env.token)  # a viewer's token will do
    assert status == 200, text
    assert "attune_queue_depth" in text


async def test_metrics_public_and_off(env: Env) -> None:
    try:
        env.rt.settings.metrics = "public"
        status, text, _ = await env.get("/metrics")
        assert status == 200, text
        assert "attune_queue_depth" in text
        env.rt.settings.metrics = "off"
        for token in (None, env.token):
            status, text, _ = await env.get("/metrics", token)
            assert status == 404, text
            assert "ATTUNE_METRICS=off" in json.loads(text)["error"]
    finally:
        env.rt.settings.metrics = "authenticated"


async def test_a_hanging_handler_is_answered_503(env: Env) -> None:
    started = time.monotonic()
    status, text, headers = await env.get("/test/hang")
    took = time.monotonic() - started
    assert status == 503, text
    body = json.loads(text)
    assert body["code"] == "TIMEOUT"
    assert "did not answer within 0.5 s" in body["error"], body
    assert took < HANDLER_TIMEOUT_S + 5, took
    assert headers.get("Retry-After")
    # The server goes on serving.
    status, text, _ = await env.get("/health")
    assert status == 200, text


async def test_a_waiting_request_outlives_the_handler_limit_up_to_its_wait(env: Env) -> None:
    """``?wait=`` lifts the handler's limit to the wait plus a margin, not further: a
    long-poll longer than ATTUNE_HTTP_HANDLER_TIMEOUT_S answers 200 with the current state."""
    from engine.gate import Requester, Submitted

    who = Requester(identity="admin", role="admin", source="api")
    outcome = await env.rt.gate.run(who, "core.echo", {"message": "nobody runs me"})
    assert isinstance(outcome, Submitted)  # no worker here: it stays requested
    started = time.monotonic()
    path = f"/api/v1/executions/{outcome.record.id}?wait={HANDLER_TIMEOUT_S * 3}"
    status, text, _ = await env.get(path, env.token)
    took = time.monotonic() - started
    assert status == 200, text
    assert json.loads(text)["data"]["status"] == "requested"
    assert HANDLER_TIMEOUT_S * 3 - 0.1 <= took < HANDLER_TIMEOUT_S * 3 + 5, took
