"""Posts execution news to Slack for the callback listener (the outbox drainer).

``created``: the status card, with ``chat.postMessage``; its ``ts`` is kept in the sink's own
row for the execution (:class:`engine.chat_messages.ChatMessage`), with the status the card shows
and whether the output went out.
``started``: the card updated in place (``chat.update``, idempotent).
``completed``: the card updated, then the output as a reply in the card's thread, or uploaded
as a file (``files_upload_v2``) when it is too long for a message.

When the bot is not in the channel (``not_in_channel``), the command's ``response_url`` (5 uses
in 30 minutes) carries the card and the result instead, with a hint to invite the bot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot import render
from engine.chat_messages import ChatMessage, ChatMessages
from engine.outbox import DeliveryFailed
from engine.records import Delivery, Execution, Route

log = logging.getLogger(f"attune.{__name__}")

#: Slack errors that retrying cannot fix.
PERMANENT_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "invalid_blocks",
        "msg_too_long",
        "no_text",
        "is_archived",
        "cant_update_message",
        "message_not_found",
    }
)
#: Errors that mean "we cannot post in this channel": fall back to the response_url.
NOT_IN_CHANNEL = frozenset({"not_in_channel", "channel_not_found"})
#: How long Slack honours a slash command's response_url.
RESPONSE_URL_TTL_S = 30 * 60
INVITE_HINT = (
    "I can't post in this channel. Invite me with `/invite @attune` to get live "
    "status cards; meanwhile results come here."
)


class SlackSink:
    #: The sink's name in ``chat_messages``.
    NAME = "slack"

    def __init__(self, client: AsyncWebClient, messages: ChatMessages) -> None:
        self.client = client
        self.messages = messages
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def deliver(self, delivery: Delivery, execution: Execution, route: Route) -> None:
        chat = route.chat or {}
        message = await self.messages.get(execution.id, self.NAME) or ChatMessage(
            execution_id=execution.id, sink=self.NAME, channel=str(chat.get("channel") or "")
        )
        if message.fallback:
            await self._via_response_url(delivery, execution, chat)
            return
        try:
            if delivery.event == "created":
                await self._post_card(execution, message)
            elif delivery.event == "started":
                await self._update_card(execution, message)
            else:
                message = await self._update_card(execution, message)
                await self._post_output(execution, message)
        except SlackApiError as exc:
            data = exc.response.data if exc.response is not None else None
            error = str(data.get("error", "")) if isinstance(data, dict) else ""
            if error in NOT_IN_CHANNEL:
                await self.messages.save(replace(message, fallback=True))
                await self._via_response_url(delivery, execution, chat, hint=True)
                return
            status = exc.response.status_code if exc.response is not None else 0
            retry_after = None
            if status == 429 and exc.response is not None:
                header = exc.response.headers.get("Retry-After") or exc.response.headers.get(
                    "retry-after"
                )
                retry_after = float(header) if header and str(header).isdigit() else None
            raise DeliveryFailed(
                f"slack: {error or exc}",
                permanent=error in PERMANENT_ERRORS,
                retry_after_s=retry_after,
            ) from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryFailed(f"slack: {type(exc).__name__}: {exc}") from exc

    async def _post_card(self, execution: Execution, message: ChatMessage) -> ChatMessage:
        if message.message_id:
            return message  # posted on an earlier attempt
        text, blocks = render.card(execution)
        resp = await self.client.chat_postMessage(channel=message.channel, text=text, blocks=blocks)
        # The card shows the execution as it is now, maybe already past the events still
        # queued behind this one: those need not edit it again.
        posted = replace(
            message,
            message_id=resp["ts"],
            channel=resp.get("channel") or message.channel,
            shows_status=execution.status,
        )
        await self.messages.save(posted)
        return posted

    async def _update_card(self, execution: Execution, message: ChatMessage) -> ChatMessage:
        if not message.message_id:
            return await self._post_card(execution, message)
        if message.shows_status == execution.status:
            return message  # the card already shows this status
        text, blocks = render.card(execution)
        await self.client.chat_update(
            channel=message.channel, ts=message.message_id, text=text, blocks=blocks
        )
        return message

    async def _post_output(self, execution: Execution, message: ChatMessage) -> None:
        if message.output_posted:
            return
        reply = render.output(execution)
        if reply is not None:
            text, blocks = reply
            await self.client.chat_postMessage(
                channel=message.channel, thread_ts=message.message_id, text=text, blocks=blocks
            )
        result = execution.result or {}
        for name in render.cut_streams(execution):
            await self.client.files_upload_v2(
                channel=message.channel,
                thread_ts=message.message_id,
                content=result[name],
                filename=f"execution-{execution.id}-{name}.txt",
                title=f"#{execution.id} {execution.action_ref} {name}",
            )
        await self.messages.save(replace(message, output_posted=True))

    async def _via_response_url(
        self,
        delivery: Delivery,
        execution: Execution,
        chat: dict[str, Any],
        *,
        hint: bool = False,
    ) -> None:
        """Fallback: the card when created and the result at the end; 2 of the 5 uses."""
        if delivery.event == "started":
            return
        url = chat.get("response_url")
        if not url or time.time() > float(chat.get("response_url_expires", 0)):
            raise DeliveryFailed(
                "not in channel and the response_url has expired; invite the bot to the channel",
                permanent=True,
            )
        text, blocks = render.card(execution, attached=False)
        if delivery.event == "completed":
            reply = render.output(execution, attached=False)
            if reply is not None:
                blocks = (blocks + reply[1])[: render.MAX_BLOCKS]
        if hint:
            blocks = [
                *blocks,
                {"type": "context", "elements": [{"type": "mrkdwn", "text": INVITE_HINT}]},
            ]
        body = {
            "response_type": "ephemeral",
            "replace_original": False,
            "text": text,
            "blocks": blocks,
        }
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            async with self._http.post(url, json=body) as resp:
                if resp.status >= 400:
                    raise DeliveryFailed(
                        f"response_url: HTTP {resp.status}", permanent=resp.status in (404, 410)
                    )
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise DeliveryFailed(f"response_url: {type(exc).__name__}: {exc}") from exc
