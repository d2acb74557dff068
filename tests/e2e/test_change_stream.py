"""``GET /api/v1/executions/stream`` over HTTP against ``attune serve`` (and, on the cluster
backend, an API process that runs nothing itself), the stream metrics, and ``attune run
--wait --url --token``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import (
    _LISTENING,
    START_TIMEOUT_S,
    Server,
    WaitForStatus,
    client,
    run_cli,
    spawn,
    stop,
    wait_for_line,
)
from tests.e2e.test_api import EXECUTE, execute, post
from tests.waiting import eventually

STREAM = "/api/v1/executions/stream"
TERMINAL = {"completed", "failed", "timeout", "cancelled", "abandoned"}
UNDELIVERED_CALLBACKS = r'attune_deliveries\{sink="callback",state="(?:pending|failed)"\} (\d+)'
#: Bound on reading the events of one execution.
EVENTS_S = 15.0


async def sse(resp: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Each event of ``resp`` as ``{"id", "event", "data"}`` (comments skipped)."""
    event: dict[str, Any] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if "data" in event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            event[name] = event["data"] + "\n" + value if name == "data" in event else value


async def statuses_until_done(
    resp: aiohttp.ClientResponse, execution_id: int
) -> list[dict[str, Any]]:
    """The events of ``execution_id`` read from ``resp`` until its terminal one (bounded)."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(EVENTS_S):
        async for event in sse(resp):
            note = json.loads(event["data"])
            if note["entity_id"] != execution_id:
                continue
            seen.append({**event, "note": note})
            if note["payload"]["status"] in TERMINAL:
                return seen
    pytest.fail(f"the stream ended before execution {execution_id} did: {seen}")


def in_order(statuses: list[str], order: list[str]) -> bool:
    """``statuses`` follows ``order`` (some may be collapsed, none goes back)."""
    positions = [order.index(s) for s in statuses]
    return positions == sorted(positions)


@contextlib.asynccontextmanager
async def stream(
    base_url: str, token: str, query: str = "", last_event_id: str | None = None
) -> AsyncIterator[aiohttp.ClientResponse]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    async with (
        client(base_url, token) as session,
        session.get(STREAM + query, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/event-stream"
        yield resp


async def test_a_stream_needs_a_token_and_good_input(
    anon: aiohttp.ClientSession, api: aiohttp.ClientSession
) -> None:
    async with anon.get(STREAM) as resp:
        assert resp.status == 401
        assert "token" in (await resp.json())["error"]
    async with api.get(STREAM, headers={"Last-Event-ID": "yesterday"}) as resp:
        assert resp.status == 400
        assert "Last-Event-ID" in (await resp.json())["error"]
    async with api.get(STREAM + "?execution_id=abc") as resp:
        assert resp.status == 400
        assert "execution_id" in (await resp.json())["error"]
    async with api.get(STREAM + "?execution_id=987654321") as resp:
        assert resp.status == 404


async def test_status_events_come_in_order_with_the_terminal_last(
    base_url: str, admin_token: str, api: aiohttp.ClientSession
) -> None:
    async with stream(base_url, admin_token) as resp:
        record = await execute(api, "core.sleep", {"seconds": 1})
        events = await statuses_until_done(resp, record["id"])
    statuses = [e["note"]["payload"]["status"] for e in events]
    assert statuses[-1] == "completed"
    assert "running" in statuses  # a 1 s run is seen running, even from another process
    assert in_order(statuses, ["requested", "running", "completed"]), statuses
    first = events[0]
    assert "event" not in first  # the default event type (message), as Attune sends
    assert first["id"]
    note = first["note"]
    assert note["entity_type"] == "execution"
    assert note["notification_type"] in ("execution_created", "execution_status_changed")
    payload = events[-1]["note"]["payload"]
    assert payload["id"] == record["id"]
    assert payload["action_ref"] == "core.sleep"
    for key in ("created", "updated", "started_at", "finished_at", "executor", "requester"):
        assert key in payload, key
    assert payload["result"]["succeeded"] is True
    ids = [e["id"] for e in events]
    assert len(set(ids)) == len(ids)


async def test_execution_id_filters_the_stream(
    base_url: str, admin_token: str, api: aiohttp.ClientSession
) -> None:
    wanted = await execute(api, "core.sleep", {"seconds": 0.5})
    async with stream(base_url, admin_token, f"?execution_id={wanted['id']}") as resp:
        other = await execute(api, "core.noop")
        events = await statuses_until_done(resp, wanted["id"])
    assert {e["note"]["entity_id"] for e in events} == {wanted["id"]}
    assert other["id"] != wanted["id"]


async def test_last_event_id_replays_what_happened_while_away(
    base_url: str, admin_token: str, api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    last_id = None
    async with stream(base_url, admin_token) as resp, asyncio.timeout(EVENTS_S):
        record = await execute(api, "core.sleep", {"seconds": 1})
        async for event in sse(resp):
            note = json.loads(event["data"])
            if note["entity_id"] == record["id"]:
                last_id = event["id"]
                if note["payload"]["status"] == "running":
                    break
    assert last_id is not None
    await wait_for_status(api, record["id"], "completed")  # it ends while nobody listens
    async with stream(base_url, admin_token, last_event_id=last_id) as resp:
        events = await statuses_until_done(resp, record["id"])
    assert events[-1]["note"]["payload"]["status"] == "completed"
    assert events[-1]["note"]["payload"]["result"]["succeeded"] is True


async def test_stream_metrics(base_url: str, admin_token: str, api: aiohttp.ClientSession) -> None:
    async with stream(base_url, admin_token) as resp:
        record = await execute(api, "core.noop")
        await statuses_until_done(resp, record["id"])
        async with api.get("/metrics") as metrics:
            text = await metrics.text()
    open_now = re.search(r'attune_streams_open\{kind="changes"\} (\d+)', text)
    assert open_now is not None, text
    assert int(open_now.group(1)) >= 1, text
    assert re.search(r"attune_stream_lag_seconds_count [1-9]", text), text
    assert "# TYPE attune_deliveries gauge" in text

    async def streams_open() -> int:
        async with api.get("/metrics") as resp:
            found = re.search(r'attune_streams_open\{kind="changes"\} (\d+)', await resp.text())
        assert found is not None
        return int(found.group(1))

    # The client went away: its stream is closed and uncounted within a few seconds.
    await eventually(streams_open, "the closed stream uncounted", 5, done=lambda n: n == 0)


async def test_undelivered_callbacks_are_counted_by_sink(
    api: aiohttp.ClientSession, wait_for_status: WaitForStatus
) -> None:
    """A callback to a port nobody listens on stays pending (retried), then failed."""
    status, body = await post(
        api,
        EXECUTE,
        {"action_ref": "core.noop", "callback_url": f"http://127.0.0.1:{_free_port()}/cb"},
    )
    assert status == 201, body
    await wait_for_status(api, body["data"]["id"], "completed")

    async def callbacks_open() -> int:
        async with api.get("/metrics") as resp:
            text = await resp.text()
        found = re.findall(UNDELIVERED_CALLBACKS, text)
        return sum(int(float(n)) for n in found)

    assert await eventually(callbacks_open, "an undelivered callback counted", 10) >= 1


@pytest.mark.cluster_only
async def test_an_api_process_streams_the_workers_changes(server: Server, admin_token: str) -> None:
    """An ``attune serve --no-worker`` runs nothing: every status after ``requested`` is
    written by another process, and its stream still tells them."""
    api_only = spawn("serve-api-only", ["serve", "--no-worker"], server.env, server.tmp)
    try:
        match = await wait_for_line(api_only, _LISTENING, START_TIMEOUT_S)
        url = match.group(1).rstrip("/")
        async with client(url, admin_token) as session, stream(url, admin_token) as resp:
            record = await execute(session, "core.sleep", {"seconds": 1})
            events = await statuses_until_done(resp, record["id"])
        statuses = [e["note"]["payload"]["status"] for e in events]
        assert statuses[-1] == "completed", statuses
        assert "running" in statuses, statuses
    finally:
        problem = await stop(api_only)
    assert problem is None, problem


# -- the command line -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_cli_runs_on_a_server_and_follows_the_stream(
    server: Server, admin_token: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in server.env.items() if not k.startswith("ATTUNE_DATABASE")}
    env["ATTUNE_DATABASE_URL"] = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    remote = ["--url", server.base_url, "--token", admin_token]
    code, out, err = await run_cli(
        ["run", "core.echo", "message=hello remote", "--wait", *remote], env, tmp_path
    )
    assert code == 0, err
    assert "core.echo: completed" in out
    assert "hello remote\n" in out
    assert not (tmp_path / "unused.db").exists()  # a REST client: no database of its own

    code, out, err = await run_cli(["run", "examples.fail", "--wait", *remote], env, tmp_path)
    assert code == 1, err
    assert "examples.fail: failed" in out

    env_only = {**env, "ATTUNE_URL": server.base_url, "ATTUNE_TOKEN": admin_token}
    code, out, err = await run_cli(["run", "core.noop", "--json"], env_only, tmp_path)
    assert code == 0, err
    assert json.loads(out)["status"] == "requested"  # without --wait: submitted, not followed

    code, out, err = await run_cli(
        ["run", "core.sleep", "seconds=5", "--wait", "--timeout", "0.5", *remote], env, tmp_path
    )
    assert code == 3, out + err
    assert "still" in err
    assert "after 0.5 s" in err


async def test_cli_errors_against_a_server_are_clear(
    server: Server, tmp_path: Path, admin_token: str
) -> None:
    env = dict(server.env)
    cases = [
        (["--url", server.base_url, "--token", "not-a-token"], "refused the token (401"),
        (["--url", f"http://127.0.0.1:{_free_port()}", "--token", "x"], "cannot connect to"),
        (["--url", "ftp://somewhere", "--token", "x"], "--url must look like"),
        (["--url", server.base_url], "needs --token"),
    ]
    for extra, message in cases:
        code, out, err = await run_cli(["run", "core.echo", "--wait", *extra], env, tmp_path)
        assert code == 2, (extra, out, err)
        assert message in err, (extra, err)
        assert "Traceback" not in err
    remote = ["--url", server.base_url, "--token", admin_token]
    code, _out, err = await run_cli(["run", "no.such_action", "--wait", *remote], env, tmp_path)
    assert code == 2
    assert "no.such_action" in err
    assert "not found" in err
    assert "Traceback" not in err
