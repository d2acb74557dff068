"""Posts execution news to Slack for the callback listener (the outbox drainer).

``created``: the status card, with ``chat.postMessage``; its ``ts`` is stored on the execution.
``started``: the card updated in place (``chat.update``, idempotent).
``completed``: the card updated, then the output as a reply in the card's thread, or uploaded
as a file (``files_upload_v2``) when it is too long for a message.

When the bot is not in the channel (``not_in_channel``), the command's ``response_url`` (5 uses
in 30 minutes) carries the card and the result instead, with a hint to invite the bot.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot import render
from engine.outbox import Delivery, DeliveryFailed
from engine.service import ExecutionService

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
    def __init__(self, client: AsyncWebClient, service: ExecutionService) -> None:
        self.client = client
        self.service = service
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def deliver(
        self, delivery: Delivery, execution: dict[str, Any], route: dict[str, Any]
    ) -> None:
        chat = dict(route.get("chat") or {})
        if chat.get("mode") == "response_url":
            await self._via_response_url(delivery, execution, chat)
            return
        try:
            if delivery.event == "created":
                await self._post_card(execution, chat)
            elif delivery.event == "started":
                await self._update_card(execution, chat)
            else:
                await self._update_card(execution, chat)
                await self._post_output(execution, chat)
        except SlackApiError as exc:
            data = exc.response.data if exc.response is not None else None
            error = str(data.get("error", "")) if isinstance(data, dict) else ""
            if error in NOT_IN_CHANNEL:
                chat["mode"] = "response_url"
                await self.service.update_chat(execution["id"], chat)
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

    async def _post_card(self, execution: dict[str, Any], chat: dict[str, Any]) -> None:
        if chat.get("ts"):
            return  # posted on an earlier attempt
        text, blocks = render.card(execution)
        resp = await self.client.chat_postMessage(channel=chat["channel"], text=text, blocks=blocks)
        chat["ts"] = resp["ts"]
        chat["channel"] = resp.get("channel") or chat["channel"]
        # The card shows the execution as it is now, maybe already past the events still
        # queued behind this one: those need not edit it again.
        chat["card_status"] = execution["status"]
        await self.service.update_chat(execution["id"], chat)

    async def _update_card(self, execution: dict[str, Any], chat: dict[str, Any]) -> None:
        if not chat.get("ts"):
            await self._post_card(execution, chat)
            return
        if chat.get("card_status") == execution["status"]:
            return  # the card already shows this status
        text, blocks = render.card(execution)
        await self.client.chat_update(
            channel=chat["channel"], ts=chat["ts"], text=text, blocks=blocks
        )

    async def _post_output(self, execution: dict[str, Any], chat: dict[str, Any]) -> None:
        if chat.get("output_posted"):
            return
        reply = render.output(execution)
        if reply is not None:
            text, blocks = reply
            await self.client.chat_postMessage(
                channel=chat["channel"], thread_ts=chat["ts"], text=text, blocks=blocks
            )
        result = execution.get("result") or {}
        for name in render.cut_streams(execution):
            await self.client.files_upload_v2(
                channel=chat["channel"],
                thread_ts=chat["ts"],
                content=result[name],
                filename=f"execution-{execution['id']}-{name}.txt",
                title=f"#{execution['id']} {execution['action_ref']} {name}",
            )
        chat["output_posted"] = True
        await self.service.update_chat(execution["id"], chat)

    async def _via_response_url(
        self,
        delivery: Delivery,
        execution: dict[str, Any],
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
