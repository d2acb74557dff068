"""Slack events (``app_mention``, DMs) as Slack sends them: the ``event_callback`` envelope,
and posted to ``/slack/events`` signed as Slack signs them."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp

from tests.scenario.harness import SIGNING_SECRET
from tests.scenario.slack_signing import signature
from tests.scenario.slack_standin import APP_ID, BOT_USER_ID, TEAM_ID
from tests.trust.support import new_id


def _ts() -> str:
    return f"{time.time():.6f}"


def callback(event: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    """The ``event_callback`` envelope Slack posts to the request URL."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "api_app_id": APP_ID,
        "event": event,
        "type": "event_callback",
        "event_id": event_id or new_id("Ev"),
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


def mention(user: str, channel: str, text: str, **more: Any) -> dict[str, Any]:
    ts = _ts()
    return {
        "type": "app_mention",
        "user": user,
        "text": f"<@{BOT_USER_ID}> {text}",
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "team": TEAM_ID,
        **more,
    }


def direct(user: str, channel: str, text: str, **more: Any) -> dict[str, Any]:
    ts = _ts()
    return {
        "type": "message",
        "user": user,
        "text": text,
        "ts": ts,
        "channel": channel,
        "event_ts": ts,
        "channel_type": "im",
        "team": TEAM_ID,
        **more,
    }


async def post_event(
    base_url: str, body: dict[str, Any] | bytes, *, retry: int | None = None, age_s: int = 0
) -> tuple[int, bytes]:
    """POST an event signed as Slack signs it (``age_s`` seconds ago: a new signature over
    the same body); ``retry`` marks it as Slack's retry."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = str(int(time.time()) - age_s)
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(SIGNING_SECRET, ts, raw.decode()),
    }
    if retry is not None:
        headers |= {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": "http_timeout"}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session,
        session.post(f"{base_url}/slack/events", data=raw, headers=headers) as resp,
    ):
        return resp.status, await resp.read()
