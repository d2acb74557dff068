"""Inquiries in Slack: the question posted under the run's card (buttons for a yes/no or a
short choice, an Answer button opening a modal otherwise), who may answer from Slack, and the
message updated, once, when the question ends however it ends (answered in Slack or over the
API, timed out, cancelled with its run): it then says how, with no buttons left
(engine/inquiries.py holds the rules)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from bot import render
from engine.background import cancel_and_wait
from engine.chat_messages import ChatMessages
from engine.clock import now_utc
from engine.inquiries import InquiryService
from engine.inquiry_records import PENDING, Inquiry

log = logging.getLogger(f"attune.{__name__}")

#: How long the question waits for its card to be posted (to go in the card's thread) before
#: it is posted in the channel instead.
CARD_WAIT_S = 10.0
POSTING = "posting"
#: Set in an inquiry's ``chat`` once its question shows how it ended (updated once).
SHOWN = "shown"
#: How far back a new poster looks for questions that ended unshown (a restart's gap).
LOOK_BACK_S = 3600.0
SETTLED_BATCH = 100
#: How far before the last change seen the next look for ended questions starts.
COMMIT_MARGIN_S = 10.0


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
        card_of: Callable[[int], Awaitable[int]] | None = None,
    ) -> None:
        #: The execution whose card shows a run (a workflow's task: its workflow).
        self.card_of = card_of
        self.service = service
        self.client = client
        self.chat_messages = chat_messages
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        #: Questions that ended at or after this are shown ended (those before: done).
        self._settled_since = now_utc() - timedelta(seconds=LOOK_BACK_S)

    def start(self) -> InquiryPoster:
        self._task = asyncio.create_task(self._loop(), name="inquiry-poster")
        return self

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _loop(self) -> None:
        while True:
            try:
                await self.post_due()
                await self.show_ended()
            except Exception as exc:
                log.warning("posting inquiries failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def post_due(self) -> int:
        posted = 0
        for inquiry in await self.service.repo.with_chat(100):
            chat = dict(inquiry.chat or {})
            if chat.get("sink") != "slack" or chat.get("prompt_ts"):
                continue
            shown_on = inquiry.execution
            if self.card_of is not None:
                shown_on = await self.card_of(inquiry.execution)
            card = await self.chat_messages.get(shown_on, "slack")
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
            await self._posted(claimed, str(sent.get("ts") or ""))
            posted += 1
        return posted

    async def _posted(self, claimed: Inquiry, ts: str) -> None:
        """Remember where the question went; if it ended while it was being posted, show
        that at once (the question would otherwise keep its buttons)."""
        current = claimed
        for _ in range(3):
            chat = dict(current.chat or {}) | {"prompt_ts": ts}
            saved = await self.service.repo.set_chat(current.id, chat, current.updated, now_utc())
            if saved is not None:
                await show_settled(self.client, saved, self.service)  # nothing if pending
                return
            current = await self.service.get(current.id)
        log.warning("inquiry %s: where its question was posted was not saved", claimed.id)

    async def show_ended(self) -> int:
        """Show how each question that ended since the last look ended (the ones answered
        in Slack are shown at once by the answer's handler; this catches the rest)."""
        ended = await self.service.repo.settled_since(self._settled_since, SETTLED_BATCH)
        shown = 0
        for inquiry in ended:
            shown += await show_settled(self.client, inquiry, self.service)
        if len(ended) == SETTLED_BATCH:
            self._settled_since = ended[-1].updated  # a full batch: move on whatever it costs
        elif ended:
            # A change is stamped before its transaction commits: one stamped a little earlier
            # may become visible after this look, so the next look goes back a little (the
            # questions already shown are passed over).
            self._settled_since = max(
                self._settled_since, ended[-1].updated - timedelta(seconds=COMMIT_MARGIN_S)
            )
        return shown


def _question_of(inquiry: Inquiry) -> tuple[str, str] | None:
    """The posted question's (channel, ts), if it was posted."""
    chat = inquiry.chat or {}
    ts, channel = chat.get("prompt_ts"), chat.get("prompt_channel")
    if not ts or ts == POSTING or not channel:
        return None
    return str(channel), str(ts)


async def show_settled(client: Any, inquiry: Inquiry, service: InquiryService) -> bool:
    """Replace the posted question of an ended inquiry by how it ended (no buttons left),
    once however many processes try: the process that marks the row :data:`SHOWN` updates
    the message. False when there was nothing to do."""
    for _ in range(3):
        where = _question_of(inquiry)
        if inquiry.status == PENDING or where is None or (inquiry.chat or {}).get(SHOWN):
            return False
        marked = await service.repo.set_chat(
            inquiry.id, dict(inquiry.chat or {}) | {SHOWN: True}, inquiry.updated, now_utc()
        )
        if marked is not None:
            break
        inquiry = await service.get(inquiry.id)  # changed meanwhile: look again
    else:
        return False
    channel, ts = where
    text, blocks = render.inquiry_settled(inquiry)
    try:
        await client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
    except Exception as exc:
        log.warning("inquiry %s: the question was not updated: %s", inquiry.id, exc)
        # Unmarked, so a later look tries again.
        await service.repo.set_chat(marked.id, dict(inquiry.chat or {}), marked.updated, now_utc())
        return False
    return True
