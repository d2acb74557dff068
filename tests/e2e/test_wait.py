"""``?wait=SECONDS`` end to end, on both backends: ``POST /api/v1/executions/execute?wait=``
answers 200 with the finished execution or 202 with its state; ``GET
/api/v1/executions/{id}?wait=`` long-polls until the execution has ended."""

from __future__ import annotations

import time

import aiohttp
import pytest

from tests.e2e.test_api import EXECUTE, assert_error, execute, get, post

pytestmark = pytest.mark.e2e

TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}


async def test_a_fast_run_is_answered_200_finished(api: aiohttp.ClientSession) -> None:
    body = {"action_ref": "core.echo", "parameters": {"message": "waited for"}}
    status, resp = await post(api, f"{EXECUTE}?wait=30", body)
    assert status == 200, resp
    record = resp["data"]
    assert record["status"] == "completed", record
    assert "waited for" in str(record["result"]), record


async def test_without_wait_execute_still_answers_201(api: aiohttp.ClientSession) -> None:
    body = {"action_ref": "core.echo", "parameters": {"message": "no wait"}}
    status, resp = await post(api, EXECUTE, body)
    assert status == 201, resp
    assert resp["data"]["status"] not in TERMINAL or resp["data"]["status"] == "completed"


async def test_a_slow_run_is_answered_202_with_its_state(api: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    status, resp = await post(
        api, f"{EXECUTE}?wait=1", {"action_ref": "examples.wait", "parameters": {"seconds": 60}}
    )
    took = time.monotonic() - started
    assert status == 202, resp
    record = resp["data"]
    assert record["status"] in {"requested", "scheduled", "running"}, record
    assert 0.9 <= took < 10, took
    status, resp = await post(api, f"/api/v1/executions/{record['id']}/cancel")
    assert status == 200, resp


async def test_get_long_polls_until_the_run_ends(api: aiohttp.ClientSession) -> None:
    record = await execute(api, "examples.wait", {"seconds": 1})
    started = time.monotonic()
    status, resp = await get(api, f"/api/v1/executions/{record['id']}?wait=60")
    took = time.monotonic() - started
    assert status == 200, resp
    assert resp["data"]["status"] == "completed", resp
    assert took < 30, took  # returned when it ended, not at the end of the wait


async def test_get_answers_the_current_state_when_the_wait_runs_out(
    api: aiohttp.ClientSession,
) -> None:
    record = await execute(api, "examples.wait", {"seconds": 60})
    started = time.monotonic()
    status, resp = await get(api, f"/api/v1/executions/{record['id']}?wait=0.5")
    took = time.monotonic() - started
    assert status == 200, resp
    assert resp["data"]["status"] in {"requested", "scheduled", "running"}, resp
    assert 0.4 <= took < 10, took
    status, resp = await post(api, f"/api/v1/executions/{record['id']}/cancel")
    assert status == 200, resp
    status, resp = await get(api, f"/api/v1/executions/{record['id']}?wait=30")
    assert status == 200, resp
    assert resp["data"]["status"] == "cancelled", resp


async def test_a_finished_execution_is_answered_at_once(api: aiohttp.ClientSession) -> None:
    status, resp = await post(
        api, f"{EXECUTE}?wait=30", {"action_ref": "core.echo", "parameters": {"message": "x"}}
    )
    assert status == 200, resp
    started = time.monotonic()
    status, again = await get(api, f"/api/v1/executions/{resp['data']['id']}?wait=300")
    assert status == 200, again
    assert again["data"]["status"] == "completed"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("wait", ["0", "-1", "300.5", "301", "abc", "nan", "inf", ""])
async def test_a_bad_wait_is_refused_400(api: aiohttp.ClientSession, wait: str) -> None:
    body = {"action_ref": "core.echo", "parameters": {"message": "never"}}
    status, resp = await post(api, f"{EXECUTE}?wait={wait}", body)
    message = assert_error(status, resp, 400)
    assert "'wait'" in message, message
    assert "at most 300" in message, message
    status, resp = await get(api, f"/api/v1/executions/1?wait={wait}")
    message = assert_error(status, resp, 400)
    assert "'wait'" in message, message
    assert "at most 300" in message, message


async def test_a_refused_wait_runs_nothing(api: aiohttp.ClientSession) -> None:
    marker = f"refused-wait-{time.monotonic_ns()}"
    body = {"action_ref": "core.echo", "parameters": {"message": marker}}
    status, resp = await post(api, f"{EXECUTE}?wait=0", body)
    assert_error(status, resp, 400)
    status, page = await get(api, "/api/v1/executions?action_ref=core.echo&per_page=100")
    assert status == 200, page
    assert all(marker not in str(item["config"]) for item in page["items"]), page


async def test_openapi_documents_wait(api: aiohttp.ClientSession) -> None:
    status, doc = await get(api, "/api/v1/openapi.json")
    assert status == 200
    post_op = doc["paths"][EXECUTE]["post"]
    assert {"200", "201", "202"} <= set(post_op["responses"]), post_op["responses"]
    assert "wait" in [p["name"] for p in post_op["parameters"]]
    get_op = doc["paths"]["/api/v1/executions/{id}"]["get"]
    assert "wait" in [p["name"] for p in get_op["parameters"]]
