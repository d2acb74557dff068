"""Acks first: every request the Bolt app dispatches counts as one a person waits on, for as
long as its listener runs (so background work steps aside until the ack is built)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.handler import ChatContext, Reply
from bot.slack_app import build_slack_app
from config import Settings
from engine.acks_first import AcksFirst
from tests.scenario.slack_signing import signed_request, slash_fields

SECRET = "fg-test-signing-secret"


async def test_a_command_is_in_flight_while_its_listener_runs() -> None:
    acks_first = AcksFirst()
    seen: list[int] = []

    class Handler:
        runtime = SimpleNamespace(acks_first=acks_first)

        async def handle(self, text: str, ctx: ChatContext, idempotency_key: Any = None) -> Reply:
            seen.append(acks_first.in_flight)
            return Reply(f"ran {text}")

    settings = Settings(slack_bot_token="xoxb-test", slack_signing_secret=SECRET)
    client = AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/")
    app = build_slack_app(settings, Handler(), client)  # type: ignore[arg-type]
    fields = slash_fields("status 1", channel_id="C1", user_id="U1", response_url="http://x/")
    body, headers = signed_request(SECRET, fields)
    response = await app.async_dispatch(
        AsyncBoltRequest(body=body.decode(), headers={k.lower(): v for k, v in headers.items()})
    )
    assert response.status == 200
    assert "ran status 1" in response.body
    assert seen == [1]
    assert acks_first.in_flight == 0
