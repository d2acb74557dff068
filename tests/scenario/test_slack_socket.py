"""Socket Mode: the server opens a WebSocket to the stand-in (``apps.connections.open``), gets
slash commands as envelopes over it, acks each with the reply as the envelope's payload, and
posts the card and results through the Web API as in HTTP mode."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Server
from tests.scenario.harness import (
    SLACK_ACK_BUDGET_S,
    get_json,
    new_channel,
    new_user,
    running_server,
    scenario_env,
    settle,
)
from tests.scenario.slack_events import callback, direct, mention
from tests.scenario.slack_signing import slash_fields
from tests.scenario.slack_standin import SlackStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-socket")
    env = scenario_env(
        tmp,
        standin,
        ATTUNE_SLACK_APP_TOKEN="xapp-test",
        ATTUNE_SLACK_SIGNING_SECRET="",  # Socket Mode needs no signing secret
    )
    async with running_server("serve-socket", env, tmp) as srv:
        yield srv


def envelope(text: str, channel: str, user: str, standin: SlackStandIn) -> dict[str, Any]:
    return {
        "envelope_id": str(uuid.uuid4()),
        "type": "slash_commands",
        "accepts_response_payload": True,
        "payload": slash_fields(
            text,
            channel_id=channel,
            user_id=user,
            response_url=standin.response_url(uuid.uuid4().hex),
        ),
    }


async def send_command(
    standin: SlackStandIn, text: str
) -> tuple[dict[str, Any], dict[str, Any], float]:
    """Send a slash command envelope; return (envelope, the ack, seconds until the ack)."""
    env = envelope(text, new_channel(), new_user(), standin)
    started = time.monotonic()
    await standin.send_envelope(env)
    acks = await eventually(
        lambda: standin.acks(env["envelope_id"]), f"the ack of {env['envelope_id']}", 10
    )
    ack_at = next(at for at, m in standin.ws_received if m.get("envelope_id") == env["envelope_id"])
    assert len(acks) == 1, acks
    return env, acks[0], ack_at - started


async def test_server_connects_with_the_app_token(server: Server, standin: SlackStandIn) -> None:
    assert "Socket Mode" in server.serve.stdout()
    opened = standin.find("apps.connections.open", ok=True)
    assert opened, "the server never asked for a WebSocket URL"
    assert opened[0].headers.get("Authorization") == "Bearer xapp-test"
    await eventually(lambda: [ws for ws in standin.sockets if not ws.closed], "a WebSocket", 10)
    # HTTP mode is off without a signing secret: /slack/events is not served.
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/slack/events", data=b"x=1") as resp,
    ):
        assert resp.status in {404, 405}, resp.status


async def test_slash_command_is_acked_over_the_socket_and_results_posted(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    env, ack, ack_s = await send_command(standin, 'run core.echo message="over the socket"')
    assert ack_s < SLACK_ACK_BUDGET_S, f"ack took {ack_s:.2f} s"
    text = ack["payload"]["text"]
    assert "core.echo" in text
    match = re.search(r"#(\d+)", text)
    assert match, text
    execution_id = int(match.group(1))

    record, rows = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert all(r["state"] == "delivered" for r in rows), rows
    channel = env["payload"]["channel_id"]
    user = env["payload"]["user_id"]
    assert record["requester"]["user_id"] == user

    posts = standin.find(
        "chat.postMessage", target=channel, ok=True, where=lambda c: "thread_ts" not in c.params
    )
    assert len(posts) == 1, posts
    card = posts[0]
    ts = card.response["ts"]  # type: ignore[index]
    assert f"#{execution_id}" in card.all_text()
    assert f"<@{user}>" in card.all_text()
    ups = standin.find("chat.update", target=channel, ok=True)
    assert all(u.params["ts"] == ts for u in ups)
    last = ups[-1] if ups else card  # a card posted in its final state is not edited
    assert "completed" in last.all_text()
    thread = standin.find(
        "chat.postMessage", target=channel, ok=True, where=lambda c: c.params.get("thread_ts") == ts
    )
    assert len(thread) == 1, thread
    assert "over the socket" in thread[0].all_text()
    assert card.at <= last.at < thread[0].at


async def test_bad_command_over_the_socket_gets_an_ephemeral_ack(
    server: Server, standin: SlackStandIn
) -> None:
    env, ack, _ = await send_command(standin, "run examples.greet bogus=1")
    assert ack["payload"]["response_type"] == "ephemeral"
    assert "bogus" in ack["payload"]["text"]
    assert not standin.find("chat.postMessage", target=env["payload"]["channel_id"])


async def test_missing_parameters_over_the_socket_open_the_form(
    server: Server, standin: SlackStandIn
) -> None:
    env, ack, _ = await send_command(standin, "run examples.greet")
    assert not ack.get("payload"), ack  # the form answers: no message
    trigger = env["payload"]["trigger_id"]
    assert standin.find("views.open", ok=True, where=lambda c: c.params["trigger_id"] == trigger)


async def test_reconnects_when_slack_asks_and_keeps_answering(
    server: Server, standin: SlackStandIn
) -> None:
    """Slack sends ``disconnect`` before it recycles a connection: the app opens a new one
    (a fresh ``apps.connections.open``) and commands keep working over it."""
    opened_before = len(standin.find("apps.connections.open", ok=True))
    old = [ws for ws in standin.sockets if not ws.closed]
    assert old
    await standin.send_envelope(
        {"type": "disconnect", "reason": "refresh_requested", "debug_info": {"host": "x"}}
    )
    await eventually(
        lambda: (
            len(standin.find("apps.connections.open", ok=True)) > opened_before
            and all(ws.closed for ws in old)
            and [ws for ws in standin.sockets if not ws.closed]
        ),
        "a new Socket Mode connection",
        15,
    )
    _env, ack, _ = await send_command(standin, "help core.echo")
    assert "`message`" in ack["payload"]["text"]


async def test_mentions_and_dms_come_over_the_socket_too(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """Events come as ``events_api`` envelopes: acked at once, answered through the Web API;
    Slack's retry of one (the same event id) runs nothing twice."""
    dm, channel = "D" + new_channel()[1:], new_channel()
    body = callback(direct(new_user(), dm, 'run core.echo message="a dm over the socket"'))
    envelope = {
        "envelope_id": str(uuid.uuid4()),
        "type": "events_api",
        "accepts_response_payload": False,
        "retry_attempt": 0,
        "retry_reason": "",
        "payload": body,
    }
    await standin.send_envelope(envelope)
    await eventually(lambda: standin.acks(envelope["envelope_id"]), "the event's ack", 10)
    retry = {**envelope, "envelope_id": str(uuid.uuid4()), "retry_attempt": 1}
    retry["retry_reason"] = "timeout"
    await standin.send_envelope(retry)
    await eventually(lambda: standin.acks(retry["envelope_id"]), "the retry's ack", 10)

    mentioned = mention(new_user(), channel, "help core.echo")
    await standin.send_envelope(
        {**envelope, "envelope_id": str(uuid.uuid4()), "payload": callback(mentioned)}
    )
    thread = await eventually(  # a read: answered for the asker alone, in the thread
        lambda: standin.find("chat.postEphemeral", target=channel, ok=True),
        "the mention's answer",
        10,
    )
    assert thread[0].params["thread_ts"] == mentioned["ts"]
    assert "`message`" in thread[0].all_text()

    replies = await eventually(
        lambda: standin.find(
            "chat.postMessage", target=dm, where=lambda c: "queued" in c.all_text()
        ),
        "the DM's answer",
        10,
    )
    number = re.search(r"#(\d+)", replies[0].all_text())
    assert number, replies[0].all_text()
    record, _ = await settle(api, int(number.group(1)))
    assert record["config"] == {"message": "a dm over the socket"}
    runs = [
        r
        for r in (await get_json(api, "/api/v1/executions?per_page=100"))["items"]
        if r["config"] == record["config"]
    ]
    assert len(runs) == 1, runs
    assert len(replies) == 1
