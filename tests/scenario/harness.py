"""Shared pieces of the scenario tests: a real ``attune serve`` wired to the Slack stand-in,
signed slash commands, and bounded waits on the API."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import (
    _LISTENING,
    ADMIN_LOGIN,
    ADMIN_PASSWORD,
    START_TIMEOUT_S,
    Server,
    client,
    engine_env,
    spawn,
    stop,
    wait_for_line,
)
from tests.scenario.slack_signing import signed_request, slash_fields
from tests.scenario.slack_standin import SlackStandIn
from tests.waiting import eventually

SIGNING_SECRET = "scenario-signing-secret-3c9e71"
#: Slack's budget for acknowledging a slash command.
SLACK_ACK_BUDGET_S = 3.0
POLL_S = 0.05
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
#: Bound on waiting for the API to show something.
API_WAIT_S = 15.0


def scenario_env(tmp: Path, standin: SlackStandIn, **overrides: str) -> dict[str, str]:
    """The server's environment: SQLite in ``tmp``, Slack pointed at the stand-in."""
    env = engine_env(
        tmp,
        ATTUNE_SLACK_BOT_TOKEN="xoxb-test",
        ATTUNE_SLACK_SIGNING_SECRET=SIGNING_SECRET,
        ATTUNE_SLACK_API_URL=standin.api_url,
        ATTUNE_LOG_FORMAT="text",
        # The scenarios type commands as operators (new user ids each time, so not listed one
        # by one); unlisted users are viewers by default, tested in tests/trust.
        ATTUNE_SLACK_DEFAULT_ROLE="operator",
    )
    env.update(overrides)
    return {k: v for k, v in env.items() if v != ""}  # "" removes a setting


async def start_server(name: str, env: dict[str, str], tmp: Path) -> Server:
    proc = spawn(name, ["serve"], env, tmp)
    srv = Server(backend="sqlite", base_url="", env=env, tmp=tmp, serve=proc)
    try:
        match = await wait_for_line(proc, _LISTENING, START_TIMEOUT_S)
    except BaseException:
        await stop(proc)
        raise
    srv.base_url = match.group(1).rstrip("/")
    return srv


async def stop_server(srv: Server) -> None:
    """SIGTERM; the server must exit 0 in bounded time."""
    problem = await stop(srv.serve)
    if problem:
        pytest.fail(f"{problem}\n--- stderr (tail):\n{srv.serve.stderr()[-4000:]}", pytrace=False)


@contextlib.asynccontextmanager
async def running_server(name: str, env: dict[str, str], tmp: Path) -> AsyncIterator[Server]:
    srv = await start_server(name, env, tmp)
    try:
        yield srv
    finally:
        await stop_server(srv)


async def login(base_url: str) -> str:
    async with (
        aiohttp.ClientSession(base_url=base_url) as session,
        session.post(
            "/auth/login", json={"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["data"]["access_token"])


@contextlib.asynccontextmanager
async def admin_api(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(base_url, await login(base_url)) as session:
        yield session


def new_channel() -> str:
    return "C" + uuid.uuid4().hex[:10].upper()


def new_user() -> str:
    return "U" + uuid.uuid4().hex[:10].upper()


@dataclass
class SlashResult:
    status: int
    body: Any  # the parsed JSON, or the raw text when it is not JSON
    elapsed_s: float
    channel: str
    user: str

    @property
    def text(self) -> str:
        return str(self.body.get("text", "")) if isinstance(self.body, dict) else str(self.body)

    @property
    def execution_id(self) -> int:
        match = re.search(r"#(\d+)", self.text)
        assert match, f"no execution number in the reply: {self.body!r}"
        return int(match.group(1))


async def slash(
    base_url: str,
    standin: SlackStandIn,
    text: str,
    *,
    channel: str | None = None,
    user: str | None = None,
    response_key: str | None = None,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> SlashResult:
    """POST a signed ``/attune <text>`` to ``/slack/events``, as Slack would."""
    channel = channel or new_channel()
    user = user or new_user()
    fields = slash_fields(
        text,
        channel_id=channel,
        user_id=user,
        response_url=standin.response_url(response_key or uuid.uuid4().hex),
    )
    status, parsed, elapsed = await post_signed(
        base_url, fields, secret=secret, timestamp=timestamp, headers=headers
    )
    return SlashResult(status, parsed, elapsed, channel, user)


async def post_signed(
    base_url: str,
    fields: dict[str, str],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, float]:
    """POST ``fields`` signed as Slack signs them to ``/slack/events``: the status, the body
    (parsed JSON, else text) and the seconds it took."""
    body, signed = signed_request(secret, fields, timestamp=timestamp)
    signed.update(headers or {})
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        started = time.monotonic()
        async with session.post(f"{base_url}/slack/events", data=body, headers=signed) as resp:
            raw = await resp.read()
            elapsed = time.monotonic() - started
            status = resp.status
    try:
        parsed: Any = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed, elapsed


# -- waiting ----------------------------------------------------------------------------------


async def get_json(api: aiohttp.ClientSession, path: str) -> Any:
    async with api.get(path) as resp:
        body = await resp.json()
        assert resp.status == 200, (path, body)
        return body


async def execution(api: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    return dict((await get_json(api, f"/api/v1/executions/{execution_id}"))["data"])


async def deliveries(api: aiohttp.ClientSession, execution_id: int) -> list[dict[str, Any]]:
    return list((await get_json(api, f"/api/v1/executions/{execution_id}/deliveries"))["items"])


async def execution_count(api: aiohttp.ClientSession) -> int:
    body = await get_json(api, "/api/v1/executions?per_page=1")
    return int(body["pagination"]["total_items"])


async def poll_api(
    fetch: Callable[[], Any], done: Callable[[Any], bool], what: str, timeout_s: float = API_WAIT_S
) -> Any:
    """:func:`tests.waiting.eventually` on the API: ``fetch()`` every 50 ms until
    ``done(value)``. (Kept for the callers in tests/automation.)"""
    return await eventually(fetch, what, timeout_s, interval_s=POLL_S, done=done)


async def settle(
    api: aiohttp.ClientSession, execution_id: int, timeout_s: float = 15.0
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Wait until the execution is terminal and none of its deliveries is pending or sending.

    The terminal status and the ``completed`` delivery rows are written in one transaction, so
    once the status is terminal every delivery of the run exists.
    """
    record = await eventually(
        lambda: execution(api, execution_id),
        f"execution #{execution_id} to finish",
        timeout_s,
        interval_s=POLL_S,
        done=lambda r: r["status"] in TERMINAL,
    )
    rows = await eventually(
        lambda: deliveries(api, execution_id),
        f"the deliveries of #{execution_id} to settle",
        timeout_s,
        interval_s=POLL_S,
        done=lambda rows: bool(rows) and all(r["state"] in {"delivered", "failed"} for r in rows),
    )
    return record, rows
