"""A signed Slack request replayed within its 5 minutes does not act twice (issue 12, hole 8).

Requests are signed as Slack signs them and posted byte for byte again, to a real
``attune serve`` (SQLite, in-process broker, Slack against the local stand-in): to the same
process (its memory of signatures answers), and to a second process on the same database (the
execution's idempotency key, the signature, answers there). Slack's retries of a button click
(``X-Slack-Retry-Num``, the same body) are acked 200 and act once: tests/trust/test_chat_trust.py.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.slack_app import REPLAY_TEXT
from tests.e2e.conftest import Server
from tests.scenario.harness import (
    SIGNING_SECRET,
    running_server,
    scenario_env,
    start_server,
    stop_server,
)
from tests.scenario.slack_signing import signed_request, slash_fields
from tests.scenario.slack_standin import SlackStandIn
from tests.trust.support import (
    SlackUser,
    executions_of,
    inline_action,
    new_id,
)

pytestmark = pytest.mark.e2e

OPERATOR = SlackUser(new_id("U"), "olivia")


def env_of(tmp: Any, standin: SlackStandIn) -> dict[str, str]:
    return scenario_env(tmp, standin, ATTUNE_SLACK_ROLES=json.dumps({OPERATOR.id: "operator"}))


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-slack-replays")
    async with running_server("serve", env_of(tmp, standin), tmp) as srv:
        yield srv


async def post(base_url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST exactly these bytes and headers to ``/slack/events``; (status, parsed body)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
        session.post(f"{base_url}/slack/events", data=body, headers=headers) as resp,
    ):
        raw = await resp.read()
        return resp.status, (json.loads(raw) if raw else None)


def command(standin: SlackStandIn, text: str) -> tuple[bytes, dict[str, str]]:
    fields = slash_fields(
        text,
        channel_id=new_id("C"),
        user_id=OPERATOR.id,
        user_name=OPERATOR.name,
        response_url=standin.response_url(uuid.uuid4().hex),
    )
    return signed_request(SIGNING_SECRET, fields)


async def test_a_replayed_slash_command_does_not_run_again(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, "replay", "once", "echo ran")
    body, headers = command(standin, f"run {action}")

    status, first = await post(server.base_url, body, headers)
    assert status == 200, first
    assert first["text"].startswith("Execution #"), first
    status, again = await post(server.base_url, body, headers)
    assert status == 200, again
    assert again == {"response_type": "ephemeral", "text": REPLAY_TEXT}
    assert len(await executions_of(api, action)) == 1

    # A new command (a new signed request) with the same text runs: only replays are refused.
    status, other = await post(server.base_url, *command(standin, f"run {action}"))
    assert status == 200, other
    assert other["text"].startswith("Execution #"), other
    assert len(await executions_of(api, action)) == 2


async def test_a_forged_copy_does_not_block_the_signed_request(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """Only requests whose signature checks out are remembered: a request carrying a real
    signature over another body is refused (401) and the real one still runs."""
    action = await inline_action(api, "replay", "forged", "echo ran")
    body, headers = command(standin, f"run {action}")
    forged = body + b"&channel_name=elsewhere"
    status, _ = await post(server.base_url, forged, headers)
    assert status == 401
    status, first = await post(server.base_url, body, headers)
    assert status == 200, first
    assert first["text"].startswith("Execution #"), first
    assert len(await executions_of(api, action)) == 1


async def test_a_replay_to_another_process_of_the_cluster_does_not_run_again(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, "replay", "cluster", "echo ran")
    body, headers = command(standin, f"run {action}")
    status, first = await post(server.base_url, body, headers)
    assert status == 200, first
    execution = re.search(r"#(\d+)", first["text"])
    assert execution is not None, first

    # A second process on the same database and secret key, as behind a load balancer.
    other = await start_server("serve-b", env_of(server.tmp, standin), server.tmp)
    try:
        status, again = await post(other.base_url, body, headers)
    finally:
        await stop_server(other)
    assert status == 200, again
    assert f"#{execution.group(1)} " in again["text"], again
    assert "not run again" in again["text"], again
    assert len(await executions_of(api, action)) == 1
