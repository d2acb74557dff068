"""Inquiries over ``attune serve``, on both deployments (SQLite embedded; PostgreSQL and
RabbitMQ with a separate ``attune worker``): ``core.ask`` waits without holding a worker, the
answer given to serve ends the run the worker parked, the deadline and a cancel are applied by
serve's sweep. The rules in detail are in tests/api/test_inquiries_api.py."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.e2e.test_api import execute, get, post
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
WAIT_S = 20.0


async def _ended(api: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    async def record() -> dict[str, Any]:
        status, body = await get(api, f"/api/v1/executions/{execution_id}")
        assert status == 200, body
        return dict(body["data"])

    return await eventually(
        record, f"execution {execution_id} to end", WAIT_S, done=lambda r: r["status"] in TERMINAL
    )


async def _inquiry_of(api: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    async def found() -> dict[str, Any] | None:
        status, body = await get(api, f"/api/v1/inquiries?execution={execution_id}")
        assert status == 200, body
        return body["items"][0] if body["items"] else None

    return dict(await eventually(found, f"the inquiry of {execution_id}", WAIT_S))


async def test_an_answer_given_to_serve_completes_the_run(api: aiohttp.ClientSession) -> None:
    record = await execute(api, "core.ask", {"prompt": "Go?"})
    asked = await _inquiry_of(api, record["id"])
    assert asked["status"] == "pending"
    status, body = await post(
        api, f"/api/v1/inquiries/{asked['id']}/respond", {"response": {"approved": True}}
    )
    assert status == 200, body
    ended = await _ended(api, record["id"])
    assert ended["status"] == "completed"
    assert ended["result"]["data"]["response"] == {"approved": True}


async def test_the_deadline_and_a_cancel_end_waiting_runs(api: aiohttp.ClientSession) -> None:
    late = await execute(api, "core.ask", {"prompt": "Soon?", "timeout_seconds": 0.5})
    kept = await execute(api, "core.ask", {"prompt": "Later?"})
    await _inquiry_of(api, kept["id"])
    status, body = await post(api, f"/api/v1/executions/{kept['id']}/cancel")
    assert status == 200, body
    assert (await _ended(api, late["id"]))["status"] == "timeout"
    assert (await _ended(api, kept["id"]))["status"] == "cancelled"
    for execution_id, expected in ((late["id"], "timeout"), (kept["id"], "cancelled")):
        assert (await _inquiry_of(api, execution_id))["status"] == expected
