"""Live output end to end over ``attune serve``, embedded (SQLite, in-process worker) and
cluster (PostgreSQL + RabbitMQ, a separate ``attune worker``): an action printing a line
every 200 ms for 3 s has its first line readable over ``GET .../logs/stdout`` and over the
server-sent events stream before it completes; tailing by offset and the stream both end
with exactly the result's stdout; the output cap holds; bad input is 400, an unknown
execution 404."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import (
    _LISTENING,
    REPO,
    START_TIMEOUT_S,
    Server,
    client,
    spawn,
    stop,
    wait_for_line,
)
from tests.sse_client import SseReader
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

LIVE_PACK = REPO / "tests" / "fixtures" / "packs" / "live_pack"
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
RUN_TIMEOUT_S = 30.0
#: The servers' output cap (the default, 1 MiB).
CAP_BYTES = 1024 * 1024


async def _json(session: aiohttp.ClientSession, path: str) -> tuple[int, Any]:
    async with session.get(path) as resp:
        return resp.status, await resp.json()


async def _execution(session: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    status, body = await _json(session, f"/api/v1/executions/{execution_id}")
    assert status == 200, body
    return dict(body["data"])


async def _ended(session: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    return await eventually(
        lambda: _execution(session, execution_id),
        f"execution {execution_id} to end",
        RUN_TIMEOUT_S,
        interval_s=0.05,
        done=lambda r: r["status"] in TERMINAL,
    )


async def _start(session: aiohttp.ClientSession, **params: Any) -> int:
    body = {"action_ref": "live_pack.ticker", "parameters": params}
    async with session.post("/api/v1/executions/execute", json=body) as resp:
        found = await resp.json()
        assert resp.status == 201, found
        return int(found["data"]["id"])


async def _tail(session: aiohttp.ClientSession, execution_id: int) -> str:
    """Read with ``offset=next_offset`` until the run ended and everything was read."""
    offset, parts = 0, []

    async def step() -> bool:
        nonlocal offset
        path = f"/api/v1/executions/{execution_id}/logs/stdout?offset={offset}"
        status, body = await _json(session, path)
        assert status == 200, body
        piece = body["data"]
        parts.append(piece["content"])
        offset = piece["next_offset"]
        return not piece["running"] and piece["next_offset"] == piece["offset"]

    await eventually(step, "the whole output by offset", RUN_TIMEOUT_S, interval_s=0.05)
    return "".join(parts)


async def _follow(
    session: aiohttp.ClientSession, execution_id: int, headers: dict[str, str] | None = None
) -> tuple[str, str | None]:
    """Follow the SSE log stream to ``done``: (the text, the execution's status when the
    first line arrived)."""
    received: list[str] = []
    status_at_first: str | None = None
    path = f"/api/v1/executions/{execution_id}/logs/stdout/stream"
    async with session.get(path, headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        reader = SseReader(resp)
        while (event := await reader.next(RUN_TIMEOUT_S)) is not None:
            if event.event in ("content", "append"):
                received.append(event.data)
                assert event.id == str(
                    len("".join(received).encode()) + int((headers or {}).get("Last-Event-ID", 0))
                )
                if status_at_first is None:
                    status_at_first = (await _execution(session, execution_id))["status"]
            elif event.event == "done":
                break
    return "".join(received), status_at_first


@pytest.fixture
async def live_pack(api: aiohttp.ClientSession) -> None:
    async with api.post("/api/v1/packs/register", json={"path": str(LIVE_PACK)}) as resp:
        assert resp.status in (201, 409), await resp.text()


async def _first_line_before_the_end(session: aiohttp.ClientSession) -> None:
    execution_id = await _start(session, lines=15, interval_ms=200)
    follower = asyncio.create_task(_follow(session, execution_id))

    async def first_line() -> dict[str, Any] | None:
        status, body = await _json(session, f"/api/v1/executions/{execution_id}/logs/stdout")
        assert status == 200, body
        return body["data"] if "tick 0" in body["data"]["content"] else None

    piece = await eventually(first_line, "the first line over GET .../logs/stdout", 10.0)
    assert piece["running"] is True
    assert (await _execution(session, execution_id))["status"] not in TERMINAL

    streamed, status_at_first = await asyncio.wait_for(follower, RUN_TIMEOUT_S)
    assert status_at_first is not None
    assert status_at_first not in TERMINAL
    record = await _ended(session, execution_id)
    assert record["status"] == "completed", record
    expected = "".join(f"tick {i} ✓\n" for i in range(15))
    assert record["result"]["stdout"] == expected
    assert streamed == expected
    assert await _tail(session, execution_id) == expected


async def test_the_first_line_is_visible_before_the_run_completes(
    live_pack: None, api: aiohttp.ClientSession
) -> None:
    await _first_line_before_the_end(api)


async def test_the_cap_holds_and_last_event_id_resumes(
    live_pack: None, api: aiohttp.ClientSession
) -> None:
    execution_id = await _start(api, lines=1, interval_ms=0, flood_bytes=CAP_BYTES + 300_000)
    record = await _ended(api, execution_id)
    stdout = record["result"]["stdout"]
    assert len(stdout.encode()) == CAP_BYTES
    assert record["result"]["stdout_truncated"] is True
    assert await _tail(api, execution_id) == stdout
    status, body = await _json(api, f"/api/v1/executions/{execution_id}/logs/stdout?limit=5")
    assert status == 200, body
    assert body["data"]["truncated"] is True
    assert body["data"]["content"] == stdout[:5]

    resumed, _ = await _follow(api, execution_id, {"Last-Event-ID": "1000"})
    assert resumed == stdout.encode()[1000:].decode()


async def test_bad_stream_and_unknown_execution(
    live_pack: None, api: aiohttp.ClientSession, anon: aiohttp.ClientSession
) -> None:
    execution_id = await _start(api, lines=1, interval_ms=0)
    await _ended(api, execution_id)
    for suffix in ("", "/stream"):
        status, body = await _json(api, f"/api/v1/executions/{execution_id}/logs/stdin{suffix}")
        assert status == 400, body
        assert "'stdin'" in body["error"]
        status, body = await _json(api, f"/api/v1/executions/999999999/logs/stdout{suffix}")
        assert status == 404, body
        status, body = await _json(anon, f"/api/v1/executions/{execution_id}/logs/stdout{suffix}")
        assert status == 401, body
    status, body = await _json(api, f"/api/v1/executions/{execution_id}/logs/stdout?offset=-5")
    assert status == 400, body
    assert "offset" in body["error"]


@pytest.mark.cluster_only
async def test_an_api_process_without_a_worker_shows_the_output_of_one_elsewhere(
    live_pack: None, server: Server, admin_token: str
) -> None:
    """``attune serve --no-worker`` beside the cluster: every run is another process's, so
    the output reaches this API only through the database (read every 0.25 s)."""
    tmp = server.tmp / "api-only"
    tmp.mkdir(exist_ok=True)
    api_only = spawn("serve-api-only", ["serve", "--no-worker"], server.env, tmp)
    try:
        match = await wait_for_line(api_only, _LISTENING, START_TIMEOUT_S)
        async with client(match.group(1).rstrip("/"), admin_token) as session:
            await _first_line_before_the_end(session)
    finally:
        problem = await stop(api_only)
    assert problem is None, problem
