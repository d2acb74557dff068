"""The workers Attune's web UI lists, from a real ``attune serve`` (and, on PostgreSQL, a separate
``attune worker`` process): whichever worker runs an execution is listed with that run in its
load, under the name the execution's history gives it."""

from __future__ import annotations

import aiohttp
import pytest

from tests.e2e.conftest import WaitForStatus
from tests.e2e.test_api import get, post

pytestmark = pytest.mark.e2e


async def test_the_worker_running_an_execution_is_listed_with_it(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    request = {"action_ref": "core.sleep", "parameters": {"seconds": 30}}
    status, body = await post(api, "/api/v1/executions/execute", request)
    assert status == 201, body
    execution_id = body["data"]["id"]
    try:
        await wait_for_status(api, execution_id, "running")
        status, body = await get(api, f"/api/v1/executions/{execution_id}/history")
        assert status == 200, body
        [started] = [r for r in body["items"] if r["new_values"].get("status") == "running"]
        name = started["new_values"]["worker"]
        assert isinstance(name, str), started

        status, body = await get(api, "/api/v1/workers?page=1&page_size=100")
        assert status == 200, body
        [worker] = [w for w in body["items"] if w["name"] == name]
        assert worker["load"]["running"] >= 1
        assert worker["status"] == "busy"
        assert worker["health_state"] == "busy"
        assert worker["heartbeat_stale"] is False
        status, alone = await get(api, f"/api/v1/workers/{worker['id']}")
        assert status == 200, alone
        assert alone["name"] == name
    finally:
        await post(api, f"/api/v1/executions/{execution_id}/cancel")
    await wait_for_status(api, execution_id, "cancelled")
    status, body = await get(api, f"/api/v1/executions/{execution_id}/history")
    statuses = [r["new_values"]["status"] for r in reversed(body["items"])]
    assert statuses == ["requested", "running", "canceling", "cancelled"]


async def test_the_dashboard_of_a_real_server(api: aiohttp.ClientSession) -> None:
    status, body = await get(api, "/api/v1/analytics/dashboard?hours=24")
    assert status == 200, body
    rate = body["data"]["failure_rate"]
    assert rate["total_terminal"] == (
        rate["completed_count"] + rate["failed_count"] + rate["timeout_count"]
    )
