"""Inquiries in Slack: the question posted under the run's card (buttons for a yes/no or a
short choice, an Answer button opening a modal otherwise), who may answer from Slack, and the
message updated to say who answered (engine/inquiries.py holds the rules)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta
from typing import Any

from bot import render
from engine.chat_messages import ChatMessages
from engine.clock import now_utc
from engine.inquiries import InquiryService
from engine.inquiry_records import PENDING, Inquiry

log = logging.getLogger(f"attune.{__name__}")

#: How long the question waits for its card to be posted (to go in the card's thread) before
#: it is posted in the channel instead.
CARD_WAIT_S = 10.0
POSTING = "posting"


def may_answer_in_slack(inquiry: Inquiry, user_id: str, role: str) -> bool:
    """A Slack user id or role among the assignees, a Slack admin, or (no one assigned) the
    Slack user who started the run. An identity id (``assigned_to``) answers over the API."""
    if role == "admin" or user_id in inquiry.assignees or role in inquiry.assignees:
        return True
    if inquiry.assigned_to is None and not inquiry.assignees:
        return bool(user_id) and (inquiry.chat or {}).get("user") == user_id
    return False


def parse_modal(inquiry: Inquiry, values: dict[str, Any]) -> dict[str, Any]:
    """The answer typed in the modal: text for string fields, JSON for the others (a value
    that is not JSON stays text, so the schema names the field)."""
    props = (inquiry.response_schema or {}).get("properties") or {}
    answer: dict[str, Any] = {}
    for block_id, block in values.items():
        if not block_id.startswith("field:"):
            continue
        name = block_id.removeprefix("field:")
        raw = (block.get("value") or {}).get("value")
        if raw is None or raw == "":
            continue
        found = props.get(name)
        prop: dict[str, Any] = found if isinstance(found, dict) else {}
        if prop.get("type", "string") == "string":
            answer[name] = raw
            continue
        try:
            answer[name] = json.loads(raw)
        except ValueError:
            answer[name] = raw
    return answer


class InquiryPoster:
    """The loop of a serve process (with Slack) that posts each pending inquiry of a chat run
    once: the row is claimed by a conditional update of its ``chat`` before posting."""

    def __init__(
        self,
        service: InquiryService,
        client: Any,
        chat_messages: ChatMessages,
        interval_s: float = 1.0,
    ) -> None:
        self.service = service
        self.client = client
        self.chat_messages = chat_messages
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> InquiryPoster:
        self._task = asyncio.create_task(self._loop(), name="inquiry-poster")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.post_due()
            except Exception as exc:
                log.warning("posting inquiries failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def post_due(self) -> int:
        posted = 0
        for inquiry in await self.service.repo.with_chat(100):
            chat = dict(inquiry.chat or {})
            if chat.get("sink") != "slack" or chat.get("prompt_ts"):
                continue
            card = await self.chat_messages.get(inquiry.execution, "slack")
            thread = card.message_id if card is not None else None
            channel = card.channel if card is not None and thread else chat.get("channel")
            if thread is None and now_utc() - inquiry.created < timedelta(seconds=CARD_WAIT_S):
                continue  # the card is on its way: the question goes in its thread
            if not channel:
                continue
            claimed = await self.service.repo.set_chat(
                inquiry.id,
                chat | {"prompt_ts": POSTING, "prompt_channel": channel},
                inquiry.updated,
                now_utc(),
            )
            if claimed is None:
                continue  # another process posts it (or it was answered meanwhile)
            text, blocks = render.inquiry_prompt(claimed)
            try:
                sent = await self.client.chat_postMessage(
                    channel=channel, thread_ts=thread, text=text, blocks=blocks
                )
            except Exception as exc:
                log.warning("inquiry %s: the question was not posted: %s", inquiry.id, exc)
                continue
            ts = str(sent.get("ts") or "")
            await self.service.repo.set_chat(
                inquiry.id,
                dict(claimed.chat or {}) | {"prompt_ts": ts},
                claimed.updated,
                now_utc(),
            )
            posted += 1
        return posted


async def show_settled(client: Any, inquiry: Inquiry) -> None:
    """Replace the posted question by who answered (no buttons left)."""
    chat = inquiry.chat or {}
    ts, channel = chat.get("prompt_ts"), chat.get("prompt_channel")
    if not ts or ts == POSTING or not channel or inquiry.status == PENDING:
        return
    text, blocks = render.inquiry_settled(inquiry)
    try:
        await client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
    except Exception as exc:
        log.warning("inquiry %s: the question was not updated: %s", inquiry.id, exc)
