"""Posts execution news to Slack for the callback listener (the outbox drainer).

``created``: the status card, with ``chat.postMessage``; its ``ts`` is kept in the sink's own
row for the execution (:class:`engine.chat_messages.ChatMessage`), with the status the card shows
and whether the output went out.
``started``: the card updated in place (``chat.update``, skipped when the card already shows
that status); the run's live message (:mod:`bot.slack_live`) is started.
``completed``: the card updated (unless it shows that status already); a run that failed, timed
out or was abandoned mentions its requester (or its rule's owners) in the card's thread, once;
then the output: the live message edited into it (or a reply in the card's thread when there was
no live message), with what is too long for a message uploaded as a file
(``files_upload_v2``).

When the bot is not in the channel (``not_in_channel``), the command's ``response_url`` (5 uses
in 30 minutes) carries the card and the result instead, with a hint to invite the bot.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot import render, render_workflow
from bot.alias_chat import AliasResult
from engine.chat_messages import ChatMessage, ChatMessages
from engine.errors import EngineError
from engine.outbox import DeliveryFailed
from engine.records import Delivery, Execution, Route
from engine.status import ExecutionStatus as S

if TYPE_CHECKING:
    from bot.slack_live import LiveUpdater
    from bot.slack_workflow_cards import WorkflowCards
    from engine.workflows.run_tree import TaskOf, WorkflowTrees

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
#: Errors of ``chat.update`` on a message that is gone or not ours to edit any more.
MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message"})
#: Statuses whose run mentions its requester (or its rule's owners) in the thread.
NOTIFY_STATUSES = frozenset({S.FAILED.value, S.TIMEOUT.value, S.ABANDONED.value})
#: How long Slack honours a slash command's response_url.
RESPONSE_URL_TTL_S = 30 * 60
INVITE_HINT = (
    "I can't post in this channel. Invite me with `/invite @attune` to get live "
    "status cards; meanwhile results come here."
)


class SlackSink:
    """``owners``: the owners of the rule behind an enforcement (mentioned on failure);
    ``page_url``: the link to an execution's page, or None; ``live``: the live messages;
    ``alias_result``: the result format of the alias that started a run."""

    #: The sink's name in ``chat_messages``.
    NAME = "slack"

    def __init__(
        self,
        client: AsyncWebClient,
        messages: ChatMessages,
        *,
        owners: Callable[[int], Awaitable[list[str]]] | None = None,
        page_url: Callable[[int], str | None] | None = None,
        live: LiveUpdater | None = None,
        alias_result: AliasResult | None = None,
        workflows: WorkflowTrees | None = None,
        cards: WorkflowCards | None = None,
    ) -> None:
        self.alias_result = alias_result
        #: Workflow runs: a task run's news edits its workflow's card (through ``cards``).
        self.workflows = workflows
        self.cards = cards
        self.client = client
        self.messages = messages
        self.owners = owners
        self.page_url = page_url or (lambda _execution_id: None)
        self.live = live
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def deliver(self, delivery: Delivery, execution: Execution, route: Route) -> None:
        workflow = False
        if self.workflows is not None:
            try:
                task = await self.workflows.task_of(execution)
                workflow = task is None and await self.workflows.is_workflow(execution.action_ref)
            except EngineError as exc:
                raise DeliveryFailed(f"the workflow of #{execution.id}: {exc.message}") from exc
            if task is not None:
                await self._task_news(delivery, execution, task)
                return
        if workflow and self.cards is not None:
            async with self.cards.lock(execution.id):
                await self._deliver(delivery, execution, route, workflow=True)
            if execution.status in render.TERMINAL_WORDS:
                self.cards.forget(execution.id)
            return
        await self._deliver(delivery, execution, route, workflow=workflow)

    async def _deliver(
        self, delivery: Delivery, execution: Execution, route: Route, *, workflow: bool
    ) -> None:
        chat = route.chat or {}
        live_ts = None
        if delivery.event == "completed" and self.live is not None:
            # No live edit may land after (or race) the final output.
            live_ts = await self.live.finish(execution.id)
        message = await self.messages.get(execution.id, self.NAME) or ChatMessage(
            execution_id=execution.id, sink=self.NAME, channel=str(chat.get("channel") or "")
        )
        if live_ts and not message.live_message_id:
            message = replace(message, live_message_id=live_ts)
        if message.fallback:
            await self._via_response_url(delivery, execution, chat)
            return
        try:
            if delivery.event == "created":
                await self._post_card(execution, message)
            elif delivery.event == "started":
                message = await self._update_card(execution, message)
                if self.live is not None and execution.status == S.RUNNING.value and not workflow:
                    self.live.watch(message)  # a workflow's output is its tasks' lines
            else:
                message = await self._update_card(execution, message)
                message = await self._notify(execution, message)
                said = await self._alias_said(execution, chat)
                await self._post_output(execution, message, said, workflow=workflow)
        except SlackApiError as exc:
            if slack_error(exc) in NOT_IN_CHANNEL:
                await self.messages.save(replace(message, fallback=True))
                await self._via_response_url(delivery, execution, chat, hint=True)
                return
            raise delivery_failed(exc) from exc
        except (SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise delivery_failed(exc) from exc

    async def _task_news(self, delivery: Delivery, execution: Execution, task: TaskOf) -> None:
        """A task run of a workflow moved: its workflow's card is re-rendered (paced, by
        ``cards``); a task that failed, timed out or was abandoned gets its output in the
        card's thread, once. A task run posts no card of its own."""
        if self.cards is None:
            return
        async with self.cards.lock(task.root_id):  # its card's first post is saved by now
            card = await self.messages.get(task.root_id, self.NAME)
        if card is None or card.fallback:
            return  # the card is not posted yet (when it is, it shows the tasks) or never
        if card.message_id:
            self.cards.touch(task.root_id, card.channel)
        if delivery.event != "completed" or execution.status not in NOTIFY_STATUSES:
            return
        if not card.message_id:
            raise DeliveryFailed("the workflow's card is not posted yet", retry_after_s=1.0)
        mine = await self.messages.get(execution.id, self.NAME)
        if mine is not None and mine.output_posted:
            return
        text, blocks = render_workflow.task_failed(task.root_id, task.task, execution)
        try:
            await self.client.chat_postMessage(
                channel=card.channel, thread_ts=card.message_id, text=text, blocks=blocks
            )
        except (SlackApiError, SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise delivery_failed(exc) from exc
        # The task's own row only remembers that its output went out (it has no message).
        await self.messages.save(
            ChatMessage(execution.id, self.NAME, card.channel, output_posted=True)
        )

    async def _card(
        self, execution: Execution, *, attached: bool = True
    ) -> tuple[str, list[dict[str, Any]]]:
        """The card: a workflow's with a line per task, any other run's as before."""
        page_url = self.page_url(execution.id)
        if self.workflows is not None:
            try:
                tree = await self.workflows.tree(execution)
            except EngineError as exc:
                raise DeliveryFailed(f"the tasks of #{execution.id}: {exc.message}") from exc
            if tree is not None:
                return render_workflow.card(tree, page_url=page_url)
        return render.card(execution, attached=attached, page_url=page_url)

    def _shown(self, execution_id: int, blocks: list[dict[str, Any]]) -> None:
        if self.cards is not None:
            self.cards.shown(execution_id, blocks)

    async def _post_card(self, execution: Execution, message: ChatMessage) -> ChatMessage:
        if message.message_id:
            return message  # posted on an earlier attempt
        text, blocks = await self._card(execution)
        resp = await self.client.chat_postMessage(channel=message.channel, text=text, blocks=blocks)
        self._shown(execution.id, blocks)
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
        """Edit the card to show the execution's status, unless it shows it already: the
        card's content follows from its status (the result and duration come with the final
        status), so a ``started`` handled after the run ended and the ``completed`` behind it
        make one edit, not two."""
        if not message.message_id:
            return await self._post_card(execution, message)
        if message.shows_status == execution.status:
            return message  # the card already shows this status
        text, blocks = await self._card(execution)
        if self.cards is None or self.cards.showing(execution.id) != blocks:
            await self.client.chat_update(
                channel=message.channel, ts=message.message_id, text=text, blocks=blocks
            )
            self._shown(execution.id, blocks)
        shown = replace(message, shows_status=execution.status)
        await self.messages.save(shown)
        return shown

    async def _notify(self, execution: Execution, message: ChatMessage) -> ChatMessage:
        """Mention the requester (a Slack user) or the owners of the rule that started the run
        in the card's thread when it failed, timed out or was abandoned; once."""
        if message.notified or execution.status not in NOTIFY_STATUSES:
            return message
        user_id = (execution.requester or {}).get("user_id")
        users = [str(user_id)] if user_id else []
        owners: list[str] = []
        if execution.enforcement is not None and self.owners is not None:
            try:
                owners = await self.owners(execution.enforcement)
            except EngineError as exc:
                raise DeliveryFailed(f"the rule's owners not read: {exc.message}") from exc
        said = render.mention(execution, users, owners)
        if said is None:
            return message
        text, blocks = said
        await self.client.chat_postMessage(
            channel=message.channel, thread_ts=message.message_id, text=text, blocks=blocks
        )
        told = replace(message, notified=True)
        await self.messages.save(told)
        return told

    async def _alias_said(
        self, execution: Execution, chat: dict[str, Any]
    ) -> tuple[bool, str | None] | None:
        if self.alias_result is None or not chat.get("alias"):
            return None
        try:
            return await self.alias_result(execution, chat)
        except EngineError as exc:
            raise DeliveryFailed(f"the alias's result format: {exc.message}") from exc

    async def _post_output(
        self,
        execution: Execution,
        message: ChatMessage,
        alias_said: tuple[bool, str | None] | None = None,
        *,
        workflow: bool = False,
    ) -> None:
        """The output in the card's thread: the live message edited into it when there is one
        (nothing is left saying the run is going on), else a reply as before; cut streams
        uploaded whole as files. An alias's result format replaces all that (its
        ``result.enabled: false``: no output message)."""
        if message.output_posted:
            return
        reply = (
            render_workflow.output(execution, page_url=self.page_url(execution.id))
            if workflow
            else render.output(execution, page_url=self.page_url(execution.id))
        )
        if alias_said is not None and (not alias_said[0] or alias_said[1] is not None):
            reply = render.alias_result(alias_said[1]) if alias_said[0] else None
            execution = replace(execution, result={})  # nothing more to upload
        if message.live_message_id:
            text, blocks = reply if reply is not None else render.no_output(execution)
            if not await self._edit(message.channel, message.live_message_id, text, blocks):
                await self.client.chat_postMessage(
                    channel=message.channel, thread_ts=message.message_id, text=text, blocks=blocks
                )
        elif reply is not None:
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

    async def _edit(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> bool:
        """``chat.update``; False when the message is gone (deleted by someone)."""
        try:
            await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
        except SlackApiError as exc:
            if slack_error(exc) in MESSAGE_GONE:
                return False
            raise
        return True

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
        text, blocks = await self._card(execution, attached=False)
        if delivery.event == "completed":
            said = await self._alias_said(execution, chat)
            if said is not None and (not said[0] or said[1] is not None):
                reply = render.alias_result(said[1]) if said[0] else None
            else:
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


def delivery_failed(exc: Exception) -> DeliveryFailed:
    """A Slack call's failure as the outbox's: permanent when retrying cannot fix it, after
    a 429's ``Retry-After``."""
    if isinstance(exc, SlackApiError):
        error = slack_error(exc)
        return DeliveryFailed(
            f"slack: {error or exc}",
            permanent=error in PERMANENT_ERRORS,
            retry_after_s=retry_after_s(exc),
        )
    return DeliveryFailed(f"slack: {type(exc).__name__}: {exc}")


def slack_error(exc: SlackApiError) -> str:
    """The ``error`` of Slack's answer ("" when it has none)."""
    data = exc.response.data if exc.response is not None else None
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def retry_after_s(exc: SlackApiError) -> float | None:
    """A 429's ``Retry-After``, in seconds (None when not a 429 or not given)."""
    if exc.response is None or exc.response.status_code != 429:
        return None
    header = exc.response.headers.get("Retry-After") or exc.response.headers.get("retry-after")
    try:
        return max(float(header), 0.0) if header else None
    except ValueError:
        return None
