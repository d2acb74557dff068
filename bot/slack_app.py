"""The Slack face: a Bolt ``AsyncApp`` answering ``/attune``, in HTTP mode (dispatched from our
own aiohttp route ``POST /slack/events``) or in Socket Mode (when an app token is set).

The ack carries the reply of the command handler, and waits only on the database write of the
submission: the card and the results are posted later by the callback listener. Signatures are
verified by Bolt (forged, or older than 5 minutes: 401).
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.handler import ChatContext, CommandHandler
from config import Settings

log = logging.getLogger("attune.slack")

SLASH_COMMAND = "/attune"
#: Time allowed for one Slack Web API call (retries come on top).
SLACK_TIMEOUT_S = 10


def unescape(text: str) -> str:
    """Undo Slack's escaping of ``&``, ``<`` and ``>`` in command text (``&amp;`` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def slack_enabled(settings: Settings) -> bool:
    return settings.slack_bot_token is not None and (
        settings.slack_signing_secret is not None or settings.slack_app_token is not None
    )


def build_web_client(settings: Settings) -> AsyncWebClient:
    """Web API client; 429s wait for Retry-After, 5xx and connection errors retry once.

    It keeps one aiohttp session (connections reused); call from the running loop and close
    ``client.session`` at shutdown."""
    assert settings.slack_bot_token is not None
    base_url = (
        settings.slack_api_url
        if settings.slack_api_url.endswith("/")
        else (settings.slack_api_url + "/")
    )
    return AsyncWebClient(
        session=aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_S)),
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url,
        timeout=SLACK_TIMEOUT_S,
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=1),
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
        ],
    )


def build_slack_app(
    settings: Settings, handler: CommandHandler, client: AsyncWebClient
) -> AsyncApp:
    secret = settings.slack_signing_secret
    app = AsyncApp(
        client=client,
        signing_secret=secret.get_secret_value() if secret else None,
        # The listener returns within the ack: no 10 ms ack polling, no lazy thread.
        process_before_response=True,
        request_verification_enabled=secret is not None,
    )

    @app.command(SLASH_COMMAND)
    async def on_command(ack: Any, command: dict[str, Any]) -> None:
        ctx = ChatContext(
            source="slack",
            sink="slack",
            user_id=str(command.get("user_id", "")),
            user_name=str(command.get("user_name") or command.get("user_id") or "unknown"),
            channel_id=command.get("channel_id"),
            team_id=command.get("team_id"),
            response_url=command.get("response_url"),
        )
        reply = await handler.handle(unescape(str(command.get("text", ""))), ctx)
        await ack(response_type="ephemeral", text=reply.text)

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack request failed: %s", error, exc_info=error)

    return app


def slack_routes(app: AsyncApp) -> list[web.RouteDef]:
    """``POST /slack/events`` for the API server (slash commands and interactivity)."""

    async def events(request: web.Request) -> web.Response:
        bolt_response = await app.async_dispatch(await to_bolt_request(request))
        return await to_aiohttp_response(bolt_response)

    return [web.post("/slack/events", events)]
