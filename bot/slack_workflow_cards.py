"""Workflow cards kept current as their tasks move: one card per workflow run, edited in place.

A task run's news (created, started, completed) does not post anything of its own: the Slack
sink calls :meth:`WorkflowCards.touch` with the workflow's id, and the card is re-rendered from
the database (the workflow and every task) by the channel's scheduler: at most one
``chat.update`` per ``interval_s`` per channel and one per ``global_interval_s`` in all, so the
news of many tasks between two edits makes one edit (a workflow of 100 quick tasks edits its
card about once a second, not 300 times). An edit that would show what the card shows already
is not made. A 429's ``Retry-After`` pauses the channel (and every channel).

The sink's own edits of the card (the workflow's created, started and completed) and these
are serialised per workflow by :meth:`lock`, and each renders what the database holds once it
has the lock, so an older picture never lands after a newer one. Once the workflow has ended
the scheduler leaves its card alone: the sink's edit for the end shows the final tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_sink import MESSAGE_GONE, retry_after_s, slack_error
from engine.chat_messages import ChatMessages
from engine.errors import EngineError
from engine.records import Execution
from engine.status import TERMINAL
from engine.workflows.run_tree import WorkflowTree, WorkflowTrees

log = logging.getLogger(f"attune.{__name__}")

#: Failed edits of one card after which it waits for the next news to be tried again.
MAX_FAILURES = 3
#: Workflows whose lock and last picture are kept at most (the oldest idle ones go first).
MAX_KEPT = 10_000
#: Statuses of the workflows whose cards a starting process re-renders, and how many at most.
RESUME_STATUSES = ("running", "canceling")
RESUME_LIMIT = 200
_TERMINAL_WORDS = frozenset(s.value for s in TERMINAL)

Rendered = tuple[str, list[dict[str, Any]]]


class ExecutionReader(Protocol):
    async def get(self, execution_id: int) -> Execution: ...


@dataclass(eq=False)
class _Channel:
    name: str
    #: Workflows whose card is to be re-rendered, in the order they were touched.
    dirty: OrderedDict[int, None] = field(default_factory=OrderedDict)
    next_send: float = 0.0
    task: asyncio.Task[None] | None = None


class WorkflowCards:
    """``render``: a workflow's card from its tree (:func:`bot.render_workflow.card` with the
    page link); ``client``: one that does not sleep on a 429 (the scheduler pauses instead)."""

    def __init__(
        self,
        client: AsyncWebClient,
        messages: ChatMessages,
        trees: WorkflowTrees,
        executions: ExecutionReader,
        render: Callable[[WorkflowTree], Rendered],
        *,
        sink: str = "slack",
        interval_s: float = 1.0,
        global_interval_s: float = 0.1,
    ) -> None:
        self.client = client
        self.messages = messages
        self.trees = trees
        self.executions = executions
        self.render = render
        self.sink = sink
        self.interval_s = interval_s
        self.global_interval_s = global_interval_s
        self._channels: dict[str, _Channel] = {}
        #: When each channel whose scheduler ended may be edited again.
        self._paced: dict[str, float] = {}
        self._locks: OrderedDict[int, asyncio.Lock] = OrderedDict()
        #: What each card shows now (its blocks), as last rendered here.
        self._shown: OrderedDict[int, list[dict[str, Any]]] = OrderedDict()
        self._failures: dict[int, int] = {}
        self._next_global = 0.0
        self._stopped = False
        self._resuming: asyncio.Task[int] | None = None
        #: Edits made (for tests and the bench).
        self.edits = 0

    def lock(self, root_id: int) -> asyncio.Lock:
        """The lock every edit of this workflow's card holds."""
        found = self._locks.get(root_id)
        if found is None:
            found = self._locks[root_id] = asyncio.Lock()
            while len(self._locks) > MAX_KEPT:
                oldest, old = next(iter(self._locks.items()))
                if old.locked():
                    break
                del self._locks[oldest]
        self._locks.move_to_end(root_id)
        return found

    def shown(self, root_id: int, blocks: list[dict[str, Any]]) -> None:
        """The sink edited the card to ``blocks`` (the scheduler need not repeat it)."""
        self._shown[root_id] = blocks
        self._shown.move_to_end(root_id)
        while len(self._shown) > MAX_KEPT:
            self._shown.popitem(last=False)

    def showing(self, root_id: int) -> list[dict[str, Any]] | None:
        """The blocks the card shows, as last rendered in this process (None: not known)."""
        return self._shown.get(root_id)

    def forget(self, root_id: int) -> None:
        """The workflow ended and its card shows it: nothing more to do for it."""
        self._shown.pop(root_id, None)
        self._failures.pop(root_id, None)
        lock = self._locks.get(root_id)
        if lock is not None and not lock.locked():
            del self._locks[root_id]
        for channel in self._channels.values():
            channel.dirty.pop(root_id, None)

    def touch(self, root_id: int, channel_name: str) -> None:
        """A task of the workflow moved: re-render its card (in ``channel_name``) soon."""
        if self._stopped:
            return
        channel = self._channels.get(channel_name)
        if channel is None:
            # The pace outlives the channel's scheduler (which ends when nothing is left).
            paced = self._paced.pop(channel_name, 0.0)
            channel = self._channels[channel_name] = _Channel(channel_name, next_send=paced)
        channel.dirty[root_id] = None
        if channel.task is None or channel.task.done():
            channel.task = asyncio.create_task(
                self._serve(channel), name=f"attune-workflow-cards-{channel_name}"
            )

    @property
    def pending(self) -> int:
        """Cards waiting to be re-rendered."""
        return sum(len(c.dirty) for c in self._channels.values())

    def start(self) -> None:
        """Re-render, in the background, the cards of the workflows still running: news that
        came while no process was up (a restart) shows at once, not with the next task."""
        self._resuming = asyncio.create_task(self.resume(), name="attune-workflow-cards-resume")

    async def resume(self) -> int:
        """Touch the card of every running workflow this sink posted; how many."""
        try:
            rows = await self.messages.of_statuses(self.sink, RESUME_STATUSES, RESUME_LIMIT)
            touched = 0
            for row in rows:
                execution = await self.executions.get(row.execution_id)
                if await self.trees.is_workflow(execution.action_ref):
                    self.touch(row.execution_id, row.channel)
                    touched += 1
        except EngineError as exc:
            log.warning("workflow cards: running workflows not resumed: %s", exc.message)
            return 0
        return touched

    async def join(self) -> None:
        """Wait until no card is waiting to be re-rendered (the schedulers have ended)."""
        while tasks := [c.task for c in self._channels.values() if c.task is not None]:
            await asyncio.wait(tasks)
            if all(c.task in tasks for c in self._channels.values()):
                break

    async def stop(self) -> None:
        self._stopped = True
        tasks: list[asyncio.Task[Any]] = [
            c.task for c in self._channels.values() if c.task is not None
        ]
        if self._resuming is not None:
            tasks.append(self._resuming)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._channels.clear()

    async def _serve(self, channel: _Channel) -> None:
        """The channel's scheduler: one card edit at a time, within the channel's pace."""
        try:
            while channel.dirty and not self._stopped:
                wait_s = max(channel.next_send, self._next_global) - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)  # news meanwhile joins the next edit
                    continue
                root_id, _ = channel.dirty.popitem(last=False)
                if await self._refresh(root_id, channel):
                    sent_at = time.monotonic()
                    channel.next_send = max(channel.next_send, sent_at + self.interval_s)
                    self._next_global = max(self._next_global, sent_at + self.global_interval_s)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("workflow cards: the scheduler of channel %s failed", channel.name)
        finally:
            if self._channels.get(channel.name) is channel and not channel.dirty:
                del self._channels[channel.name]
                now = time.monotonic()
                for name in [n for n, at in self._paced.items() if at <= now]:
                    del self._paced[name]
                if channel.next_send > now:
                    self._paced[channel.name] = channel.next_send

    async def _refresh(self, root_id: int, channel: _Channel) -> bool:
        """Re-render the card if it changed; True when a Slack call was made."""
        async with self.lock(root_id):
            try:
                message = await self.messages.get(root_id, self.sink)
                if message is None or not message.message_id or message.fallback:
                    return False  # its first post (or the reply URL) shows what is current
                execution = await self.executions.get(root_id)
                if execution.status in _TERMINAL_WORDS:
                    return False  # the sink's edit for the end shows the final tasks
                tree = await self.trees.tree(execution)
            except EngineError as exc:
                log.warning("workflow card of #%s: not read: %s", root_id, exc.message)
                return False
            if tree is None:
                return False
            text, blocks = self.render(tree)
            if self._shown.get(root_id) == blocks:
                return False
            try:
                await self.client.chat_update(
                    channel=message.channel, ts=message.message_id, text=text, blocks=blocks
                )
            except SlackApiError as exc:
                self._failed(root_id, channel, exc)
                return True
            except (SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
                log.warning("workflow card of #%s: %s: %s", root_id, type(exc).__name__, exc)
                self._again(root_id, channel)
                return True
            self.edits += 1
            self._failures.pop(root_id, None)
            self.shown(root_id, blocks)
            await self._after_end(root_id, message.channel, str(message.message_id), blocks)
            return True

    async def _after_end(
        self, root_id: int, channel: str, ts: str, sent: list[dict[str, Any]]
    ) -> None:
        """If the workflow ended while this edit was on its way, the sink's final edit (made
        by another process, which this lock does not hold back) may have landed first: show
        the end again, so the card never stays behind it."""
        try:
            execution = await self.executions.get(root_id)
            if execution.status not in _TERMINAL_WORDS:
                return
            tree = await self.trees.tree(execution)
            if tree is None:
                return
            text, blocks = self.render(tree)
            if blocks != sent:
                await self.client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks)
                self.edits += 1
                self.shown(root_id, blocks)
        except (EngineError, SlackApiError, SlackClientError, aiohttp.ClientError) as exc:
            log.warning("workflow card of #%s: its end not shown again: %s", root_id, exc)
        except (TimeoutError, OSError) as exc:
            log.warning("workflow card of #%s: its end not shown again: %r", root_id, exc)

    def _failed(self, root_id: int, channel: _Channel, exc: SlackApiError) -> None:
        if exc.response is not None and exc.response.status_code == 429:
            pause = retry_after_s(exc)
            until = time.monotonic() + (self.interval_s if pause is None else pause)
            channel.next_send = max(channel.next_send, until)
            self._next_global = max(self._next_global, until)
            channel.dirty[root_id] = None
            log.info("workflow cards: Slack asks to wait (channel %s)", channel.name)
            return
        error = slack_error(exc)
        if error in MESSAGE_GONE:
            self.forget(root_id)  # deleted by someone: not edited until the next news
            return
        log.warning("workflow card of #%s: slack: %s", root_id, error or exc)
        self._again(root_id, channel)

    def _again(self, root_id: int, channel: _Channel) -> None:
        failures = self._failures.get(root_id, 0) + 1
        self._failures[root_id] = failures
        if failures < MAX_FAILURES:
            channel.dirty[root_id] = None
