"""``POST /api/v1/executions/batch`` end to end, on both backends: every item checked first,
all recorded or none (the error names the item), answered in order, one Idempotency-Key for
the whole batch."""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import WaitForStatus, client
from tests.e2e.test_api import assert_error, get, post

pytestmark = pytest.mark.e2e

BATCH = "/api/v1/executions/batch"


def echo(message: str) -> dict[str, Any]:
    return {"action_ref": "core.echo", "parameters": {"message": message}}


async def recorded(api: aiohttp.ClientSession, marker: str) -> list[dict[str, Any]]:
    """The core.echo executions whose message holds ``marker``."""
    status, page = await get(api, "/api/v1/executions?action_ref=core.echo&per_page=100")
    assert status == 200, page
    return [item for item in page["items"] if marker in str(item["config"])]


async def test_a_batch_is_answered_201_in_order_and_runs(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    marker = uuid.uuid4().hex
    items = [echo(f"{marker}-{i}") for i in range(3)]
    items.insert(1, {"action_ref": "examples.greet", "parameters": {"name": marker}})
    status, resp = await post(api, BATCH, {"executions": items})
    assert status == 201, resp
    records = resp["data"]
    assert [r["action_ref"] for r in records] == [i["action_ref"] for i in items]
    assert records[0]["config"] == {"message": f"{marker}-0"}
    assert records[3]["config"] == {"message": f"{marker}-2"}
    ids = [r["id"] for r in records]
    assert ids == sorted(ids)
    assert len(set(ids)) == 4
    for record in records:
        await wait_for_status(api, record["id"], "completed", timeout_s=30)


async def test_a_bad_item_refuses_the_whole_batch_naming_it(api: aiohttp.ClientSession) -> None:
    marker = uuid.uuid4().hex
    items = [echo(f"{marker}-{i}") for i in range(4)]
    items[3] = {"action_ref": "examples.wait", "parameters": {"seconds": "soon"}}
    status, resp = await post(api, BATCH, {"executions": items})
    message = assert_error(status, resp, 400, "INVALID_PARAMETERS")
    assert message.startswith("executions[3].parameters: "), message
    assert "seconds" in message, message
    assert await recorded(api, marker) == []


async def test_an_unknown_action_is_named_by_its_index(api: aiohttp.ClientSession) -> None:
    marker = uuid.uuid4().hex
    items = [echo(marker), {"action_ref": "nopack.nothing"}, echo(marker)]
    status, resp = await post(api, BATCH, {"executions": items})
    message = assert_error(status, resp, 400)
    assert message.startswith("executions[1].action_ref: "), message
    assert "nopack.nothing" in message, message
    assert await recorded(api, marker) == []


@pytest.mark.parametrize("count", [0, 101])
async def test_a_batch_of_more_than_100_or_none_is_refused_whole(
    api: aiohttp.ClientSession, count: int
) -> None:
    marker = uuid.uuid4().hex
    status, resp = await post(api, BATCH, {"executions": [echo(marker)] * count})
    message = assert_error(status, resp, 400)
    assert "executions" in message, message
    assert await recorded(api, marker) == []


async def test_a_malformed_item_is_refused(api: aiohttp.ClientSession) -> None:
    status, resp = await post(api, BATCH, {"executions": [echo("x"), {"parameters": {}}]})
    message = assert_error(status, resp, 400)
    assert "executions.1.action_ref" in message, message


async def test_a_role_that_may_not_run_is_refused_naming_the_item(
    base_url: str, viewer_token: str
) -> None:
    async with client(base_url, viewer_token) as viewer:
        status, resp = await post(viewer, BATCH, {"executions": [echo("no")]})
    message = assert_error(status, resp, 403)
    assert message.startswith("executions[0]: "), message


async def test_one_idempotency_key_covers_the_batch(api: aiohttp.ClientSession) -> None:
    marker = uuid.uuid4().hex
    items = [echo(f"{marker}-{i}") for i in range(3)]
    headers = {"Idempotency-Key": f"batch-{marker}"}
    async with api.post(BATCH, json={"executions": items}, headers=headers) as resp:
        first = await resp.json()
        assert resp.status == 201, first
        assert "Idempotent-Replayed" not in resp.headers
    async with api.post(BATCH, json={"executions": items}, headers=headers) as resp:
        again = await resp.json()
        assert resp.status == 201, again
        assert resp.headers.get("Idempotent-Replayed") == "true"
    assert [r["id"] for r in again["data"]] == [r["id"] for r in first["data"]]
    assert len(await recorded(api, marker)) == 3
    # The same key for another batch (other values, or fewer items) is a conflict.
    for other in ([*items[:2], echo("other")], items[:2], [*items, echo(f"{marker}-3")]):
        status, resp = await post(api, BATCH, {"executions": other}, headers=headers)
        assert_error(status, resp, 409)
    assert len(await recorded(api, marker)) == 3


async def test_openapi_documents_the_batch(api: aiohttp.ClientSession) -> None:
    status, doc = await get(api, "/api/v1/openapi.json")
    assert status == 200
    op = doc["paths"][BATCH]["post"]
    assert "201" in op["responses"]
    assert "400" in op["responses"]
    body = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    executions = doc["components"]["schemas"][body]["properties"]["executions"]
    assert executions["maxItems"] == 100
    assert executions["minItems"] == 1
