"""``/ws`` as Attune's notifier answers its web UI: the token offered as a subprotocol, a
welcome, subscriptions by filter, and the executions' news as they happen."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Server
from tests.e2e.test_api import post

pytestmark = pytest.mark.e2e


async def _next_note(ws: aiohttp.ClientWebSocketResponse, timeout_s: float = 10.0) -> Any:
    msg = await asyncio.wait_for(ws.receive(), timeout_s)
    assert msg.type == aiohttp.WSMsgType.TEXT, msg
    return json.loads(msg.data)


async def test_a_bad_token_is_refused_with_policy_violation(base_url: str) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{base_url}/ws", protocols=("attune.v1", "attune.jwt.nope")) as ws,
    ):
        msg = await asyncio.wait_for(ws.receive(), 10)
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008


async def test_subscribers_hear_an_execution_from_created_to_completed(
    server: Server, base_url: str, admin_token: str, api: aiohttp.ClientSession
) -> None:
    """In a cluster an API process tells of the changes it makes itself: the submission
    (a separate worker's run reaches the page when it fetches again)."""
    last = "completed" if server.backend == "sqlite" else "requested"
    protocols = ("attune.v1", f"attune.jwt.{admin_token}")
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"{base_url}/ws", protocols=protocols) as ws,
    ):
        assert ws.protocol == "attune.v1"
        welcome = await _next_note(ws)
        assert welcome["type"] == "welcome"
        await ws.send_json({"type": "subscribe", "filter": "entity_type:execution"})
        await ws.send_json({"type": "ping"})
        assert (await _next_note(ws))["type"] == "pong"  # the subscription is in place

        status, ran = await post(
            api, "/api/v1/executions/execute", {"action_ref": "core.echo", "parameters": {}}
        )
        assert status == 201, ran
        seen: list[tuple[str, str]] = []
        while not seen or seen[-1][1] != last:
            note = await _next_note(ws)
            if note["entity_id"] != ran["data"]["id"]:
                continue  # another test's execution
            assert note["entity_type"] == "execution"
            assert note["payload"]["action_ref"] == "core.echo"
            seen.append((note["notification_type"], note["payload"]["status"]))
        assert seen[0] == ("execution_created", "requested")
        if last == "completed":
            assert ("execution_status_changed", "running") in seen
