"""Socket Mode while Slack is down (issue 12): ``attune serve`` comes up anyway (HTTP answers,
``/health/ready`` reports Slack unavailable, the banner says so), keeps trying in the
background until Slack answers, and stops on a signal at any moment. Also: an open notifier
WebSocket (a browser tab) does not hold the server's stop."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import POLL_S, STOP_TIMEOUT_S, spawn, stop
from tests.scenario.harness import (
    login,
    new_channel,
    new_user,
    running_server,
    scenario_env,
    start_server,
)
from tests.scenario.slack_standin import Canned, SlackStandIn
from tests.scenario.test_slack_socket import envelope
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

#: A stop must come well inside the test harness's kill bound.
STOP_BOUND_S = 8.0


@pytest.fixture
async def slack() -> AsyncIterator[SlackStandIn]:
    """A stand-in of this test's own: its faults touch no other test."""
    standin = await SlackStandIn().start()
    try:
        yield standin
    finally:
        await standin.close()


def socket_env(tmp: Path, slack: SlackStandIn) -> dict[str, str]:
    return scenario_env(
        tmp, slack, ATTUNE_SLACK_APP_TOKEN="xapp-test", ATTUNE_SLACK_SIGNING_SECRET=""
    )


async def get_json(base_url: str, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(base_url + path) as resp:
        return resp.status, await resp.json()


async def test_serve_comes_up_and_stops_while_slack_never_answers(
    slack: SlackStandIn, tmp_path: Path
) -> None:
    slack.always("apps.connections.open", Canned.held(120))
    srv = await start_server("serve-slack-held", socket_env(tmp_path, slack), tmp_path)
    try:
        assert "Socket Mode, NOT connected" in srv.serve.stdout(), srv.serve.stdout()
        status, body = await get_json(srv.base_url, "/health")
        assert status == 200, body
        status, body = await get_json(srv.base_url, "/health/ready")
        assert status == 200, body  # the API serves: a Slack outage does not take it away
        assert body["slack"] == "unavailable", body
        assert body["status"] == "degraded", body
        assert body["database"] == "ok", body
        assert slack.find("apps.connections.open"), "the server never tried Slack"
    finally:
        srv.serve.popen.send_signal(signal.SIGTERM)
        termed = time.monotonic()
        problem = await stop(srv.serve, signalled=True)
    assert problem is None, f"{problem}\n{srv.serve.stderr()[-3000:]}"
    assert time.monotonic() - termed < STOP_BOUND_S
    assert "Traceback" not in srv.serve.stderr(), srv.serve.stderr()[-3000:]


async def test_a_signal_during_start_up_stops_serve(slack: SlackStandIn, tmp_path: Path) -> None:
    """SIGINT while the first connection attempt hangs: a clean exit, in bounded time."""
    slack.always("apps.connections.open", Canned.held(120))
    proc = spawn("serve-slack-sigint", ["serve"], socket_env(tmp_path, slack), tmp_path)
    await eventually(lambda: slack.find("apps.connections.open"), "the first attempt", 20)
    proc.popen.send_signal(signal.SIGINT)
    termed = time.monotonic()
    problem = await stop(proc, signalled=True)
    assert problem is None, f"{problem}\n{proc.stderr()[-3000:]}"
    assert time.monotonic() - termed < STOP_BOUND_S


async def test_serve_keeps_trying_until_slack_answers_then_takes_commands(
    slack: SlackStandIn, tmp_path: Path
) -> None:
    refusals = slack.queue(
        "apps.connections.open", Canned.error("internal_error"), Canned.error("internal_error")
    )
    async with running_server("serve-slack-late", socket_env(tmp_path, slack), tmp_path) as srv:
        assert "NOT connected (Slack refused: internal_error)" in srv.serve.stdout()

        async def ready() -> dict[str, Any]:
            _, body = await get_json(srv.base_url, "/health/ready")
            return dict(body)

        body = await eventually(
            ready,
            "Socket Mode to connect",
            20,
            interval_s=POLL_S,
            done=lambda body: body.get("slack") == "ok",
        )
        assert body["status"] == "ready", body
        assert not refusals.responses  # both refusals were used: it did try again
        assert len(slack.find("apps.connections.open")) == 3
        env = envelope("help", new_channel(), new_user(), slack)
        await slack.send_envelope(env)
        acks = await eventually(lambda: slack.acks(env["envelope_id"]), "the ack", 10)
        assert "run" in json.dumps(acks[0])  # help's text lists the commands
        stderr = srv.serve.stderr()
    assert "not connected (Slack refused: internal_error); trying again" in stderr
    assert "Traceback" not in stderr, stderr[-3000:]


async def test_an_open_notifier_socket_does_not_hold_the_stop(
    slack: SlackStandIn, tmp_path: Path
) -> None:
    env = scenario_env(tmp_path, slack, ATTUNE_SLACK_BOT_TOKEN="")
    srv = await start_server("serve-ws-open", env, tmp_path)
    token = await login(srv.base_url)
    protocols = ("attune.v1", f"attune.jwt.{token}")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"{srv.base_url}/ws", protocols=protocols) as ws,
        ):
            welcome = await ws.receive_json(timeout=10)
            assert welcome["type"] == "welcome"
            srv.serve.popen.send_signal(signal.SIGTERM)
            termed = time.monotonic()
            closing = await ws.receive(timeout=STOP_TIMEOUT_S)
            assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), closing
            assert ws.close_code == 1001  # going away
    finally:
        problem = await stop(srv.serve, signalled=True)
    assert problem is None, f"{problem}\n{srv.serve.stderr()[-3000:]}"
    stopped_s = time.monotonic() - termed
    assert stopped_s < STOP_BOUND_S, f"stopping took {stopped_s:.1f} s"
