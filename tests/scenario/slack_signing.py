"""Slash-command requests signed exactly as Slack signs them.

Slack posts ``application/x-www-form-urlencoded`` bodies and signs them with
``X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret, "v0:<ts>:<raw body>")>`` and
``X-Slack-Request-Timestamp: <ts>`` (unix seconds).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from urllib.parse import urlencode

from tests.scenario.slack_standin import TEAM_ID


def slash_fields(
    text: str,
    *,
    channel_id: str,
    user_id: str,
    response_url: str,
    user_name: str = "alice",
    channel_name: str = "ops",
) -> dict[str, str]:
    """The fields of a ``/attune`` slash command, in the order Slack sends them."""
    return {
        "token": "legacy-verification-token",
        "team_id": TEAM_ID,
        "team_domain": "scenario",
        "channel_id": channel_id,
        "channel_name": channel_name,
        "user_id": user_id,
        "user_name": user_name,
        "command": "/attune",
        "text": text,
        "api_app_id": "ASCENARIO",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": f"1337.42.{uuid.uuid4().hex}",
    }


def signature(secret: str, timestamp: str, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed_request(
    secret: str, fields: dict[str, str], *, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The raw body and headers of a slash command signed with ``secret`` at ``timestamp``."""
    body = urlencode(fields)
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": signature(secret, ts, body),
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
    }
    return body.encode(), headers
