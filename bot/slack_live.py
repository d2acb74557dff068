"""The live message: while a run lasts, a message in its card's thread shows the last lines of
its output, edited in place; the Slack sink (:mod:`bot.slack_sink`) edits it into the final
output when the run ends.

One scheduler task per channel serves the channel's runs in turn (round robin), at most one
Slack call per ``interval_s`` per channel (so each of N runs sharing a channel is refreshed
about every N seconds), and no more than one call per ``global_interval_s`` in all. A 429's
``Retry-After`` pauses the channel (and every channel: Slack limits ``chat.update`` per
workspace). The tasks run beside the outbox drainer, never in it: a slow or limited Slack
delays live messages, not cards and results.

A run's output is read through :class:`engine.live_output.LiveOutput` (the database, so a
worker in another process is seen too) when its hub says this process's worker stored more,
or otherwise every ``poll_s`` (less often while nothing changes). The first live message is
posted once the run has lasted ``first_after_s``: a quick run gets its output as a reply only.

The live message's ``ts`` is saved in the sink's row (``chat_messages.live_message_id``), so a
process that restarts mid-run edits the same message again (:meth:`LiveUpdater.resume`), and
whichever process delivers the end of the run replaces it with the output: no message is left
saying the run is going on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Literal, Protocol

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot import render
from bot.slack_sink import MESSAGE_GONE, retry_after_s, slack_error
from engine.chat_messages import ChatMessage, ChatMessages
from engine.errors import EngineError
from engine.outbox import DeliveryFailed
from engine.records import Execution
from engine.status import TERMINAL

log = logging.getLogger(f"attune.{__name__}")

#: Lines of each stream the live message shows.
LIVE_LINES = 15
#: Bytes of each stream's end read for those lines.
LIVE_BYTES = 4096
#: Statuses in which a run is shown live (also what :meth:`LiveUpdater.resume` looks for).
LIVE_STATUSES = ("running", "canceling")
#: Runs a restarted process picks up again, at most.
RESUME_LIMIT = 200
#: Slack calls a run's live message is given up after, when they keep failing.
MAX_FAILURES = 5
#: How long :meth:`LiveUpdater.finish` waits for a live edit in flight before the run's end is
#: put off (its delivery tried again a second later: the drainer is not held up).
FINISH_WAIT_S = 2.0
#: When the end of a run whose live edit is in flight is tried again.
RETRY_FINISH_S = 1.0
#: Longest pause between two reads of a run whose output does not change.
MAX_POLL_S = 8.0
#: How long a wait on the output hub lasts before it is started again.
WAKE_WAIT_S = 30.0
#: Slack errors after which a run is no longer shown live (the message or channel is not ours).
GIVE_UP_ERRORS = frozenset(
    {
        "not_in_channel",
        "channel_not_found",
        "is_archived",
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "thread_not_found",
    }
)
_TERMINAL_WORDS = frozenset(s.value for s in TERMINAL)


Stream = Literal["stdout", "stderr"]
_STREAMS: tuple[Stream, ...] = ("stdout", "stderr")


class OutputReader(Protocol):
    """What is read of a run's output (:class:`engine.live_output.LiveOutput`)."""

    async def tail(
        self,
        execution_id: int,
        stream: Stream = "stdout",
        max_lines: int = 10,
        max_bytes: int = 4096,
        *,
        execution: Execution | None = None,
    ) -> str: ...

    async def wait(self, execution_id: int, timeout_s: float | None = None) -> bool: ...


class ExecutionReader(Protocol):
    async def get(self, execution_id: int) -> Execution: ...


@dataclass(eq=False)
class _Run:
    execution_id: int
    channel: str
    thread_ts: str
    live_ts: str | None
    #: A live message was posted but its ts is not saved yet.
    unsaved: bool = False
    #: What the live message shows now (the tails it was last given).
    shown: dict[str, str] | None = None
    #: The hub said there is more (or nothing was read yet).
    dirty: bool = True
    #: Monotonic time of the next read without a wake-up.
    next_read: float = 0.0
    #: Not posted before this monotonic time.
    first_at: float = 0.0
    quiet: int = 0
    failures: int = 0
    finished: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiter: asyncio.Task[None] | None = None


@dataclass(eq=False)
class _Channel:
    name: str
    runs: dict[int, _Run] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: Not before this monotonic time (the rate, a 429).
    next_send: float = 0.0
    #: The run served last (the next round starts after it).
    last: int | None = None
    task: asyncio.Task[None] | None = None

    def in_turn(self) -> list[_Run]:
        """The runs, starting after the one served last (round robin)."""
        runs = list(self.runs.values())
        ids = [r.execution_id for r in runs]
        if self.last in ids:
            start = ids.index(self.last) + 1
            runs = runs[start:] + runs[:start]
        return runs


class LiveUpdater:
    """Live messages of the runs this process was told of (:meth:`watch`) or found running
    at start (:meth:`resume`), until :meth:`finish` (the sink, at the run's end)."""

    def __init__(
        self,
        client: AsyncWebClient,
        messages: ChatMessages,
        output: OutputReader,
        executions: ExecutionReader,
        *,
        sink: str = "slack",
        interval_s: float = 1.0,
        global_interval_s: float = 0.1,
        poll_s: float = 1.0,
        first_after_s: float = 1.0,
        lines: int = LIVE_LINES,
    ) -> None:
        self.client = client
        self.messages = messages
        self.output = output
        self.executions = executions
        self.sink = sink
        self.interval_s = interval_s
        self.global_interval_s = global_interval_s
        self.poll_s = poll_s
        self.first_after_s = first_after_s
        self.lines = lines
        self._channels: dict[str, _Channel] = {}
        self._runs: dict[int, _Run] = {}
        #: Runs finished while an edit of theirs was in flight.
        self._ending: dict[int, _Run] = {}
        self._next_global = 0.0
        self._running = False
        self._resuming: asyncio.Task[None] | None = None

    # -- life -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start, and pick up in the background the runs a previous process was showing."""
        self._running = True
        self._resuming = asyncio.create_task(self.resume(), name="attune-live-resume")

    async def stop(self) -> None:
        """Stop every task; live messages stay as they are (the run's end replaces them)."""
        self._running = False
        tasks = [self._resuming] if self._resuming is not None else []
        for run in self._runs.values():
            run.finished = True
            if run.waiter is not None:
                tasks.append(run.waiter)
        tasks.extend(c.task for c in self._channels.values() if c.task is not None)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._runs.clear()
        self._ending.clear()
        self._channels.clear()

    async def resume(self) -> None:
        """Show live again the runs still running whose card this sink posted."""
        try:
            rows = await self.messages.of_statuses(self.sink, LIVE_STATUSES, RESUME_LIMIT)
        except EngineError as exc:
            log.warning("live output: running executions not resumed: %s", exc.message)
            return
        for row in rows:
            self.watch(row, resumed=True)
        if rows:
            log.info("live output: resumed %d running executions", len(rows))

    @property
    def watching(self) -> int:
        """Runs shown live now."""
        return len(self._runs)

    # -- the sink's calls -------------------------------------------------------------------

    def watch(self, message: ChatMessage, *, resumed: bool = False) -> None:
        """Show the run of ``message`` (its card posted) live in the card's thread."""
        if not self._running or not message.message_id or message.fallback:
            return
        if message.execution_id in self._runs or message.output_posted:
            return
        now = time.monotonic()
        run = _Run(
            execution_id=message.execution_id,
            channel=message.channel,
            thread_ts=message.message_id,
            live_ts=message.live_message_id,
            first_at=now if resumed else now + self.first_after_s,
            next_read=now if resumed else now + self.first_after_s,
        )
        channel = self._channels.get(run.channel)
        if channel is None:
            channel = self._channels[run.channel] = _Channel(run.channel)
        channel.runs[run.execution_id] = run
        self._runs[run.execution_id] = run
        run.waiter = asyncio.create_task(
            self._wait_for_output(run, channel), name=f"attune-live-{run.execution_id}"
        )
        if channel.task is None or channel.task.done():
            channel.task = asyncio.create_task(
                self._serve(channel), name=f"attune-live-channel-{channel.name}"
            )
        channel.wake.set()

    async def finish(self, execution_id: int, wait_s: float = FINISH_WAIT_S) -> str | None:
        """Stop showing the run live. Returns the live message's ts known here (None when
        none). Raises :class:`engine.outbox.DeliveryFailed` (retry in a second) when an edit
        is still in flight after ``wait_s``; nothing new starts meanwhile."""
        run = self._runs.pop(execution_id, None) or self._ending.get(execution_id)
        if run is None:
            return None
        run.finished = True
        channel = self._channels.get(run.channel)
        if channel is not None and channel.runs.pop(execution_id, None) is not None:
            channel.wake.set()
        if run.waiter is not None:
            run.waiter.cancel()
        if run.lock.locked():
            self._ending[execution_id] = run
            try:
                async with asyncio.timeout(wait_s):
                    async with run.lock:
                        pass
            except TimeoutError:
                raise DeliveryFailed(
                    f"slack: a live edit of #{execution_id} is still in flight",
                    retry_after_s=RETRY_FINISH_S,
                ) from None
        self._ending.pop(execution_id, None)
        if run.live_ts and run.unsaved:
            with contextlib.suppress(EngineError):
                await self.messages.set_live_message(execution_id, self.sink, run.live_ts)
        return run.live_ts

    # -- tasks ------------------------------------------------------------------------------

    async def _wait_for_output(self, run: _Run, channel: _Channel) -> None:
        """Mark the run to be read whenever this process's worker stored more of its output."""
        while not run.finished:
            try:
                woken = await self.output.wait(run.execution_id, WAKE_WAIT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the hub is in memory: this is a bug, not an outage
                log.warning("live output of #%s: wait failed: %r", run.execution_id, exc)
                return
            if woken:
                run.dirty = True
                channel.wake.set()

    def _drop(self, run: _Run) -> None:
        run.finished = True
        self._runs.pop(run.execution_id, None)
        if run.unsaved and run.live_ts:
            self._ending[run.execution_id] = run  # finish() still tells the sink its ts
        channel = self._channels.get(run.channel)
        if channel is not None:
            channel.runs.pop(run.execution_id, None)
        if run.waiter is not None and run.waiter is not asyncio.current_task():
            run.waiter.cancel()

    async def _serve(self, channel: _Channel) -> None:
        """The channel's scheduler: one run at a time, in turn, within the channel's rate."""
        try:
            while self._running and channel.runs:
                now = time.monotonic()
                wait_s = max(channel.next_send, self._next_global) - now
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
                    continue
                due = [r for r in channel.in_turn() if r.first_at <= now]
                due = [r for r in due if r.dirty or r.next_read <= now]
                if not due:
                    later = [max(r.next_read, r.first_at) for r in channel.runs.values()]
                    channel.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(min(later, default=now) - now, 0.01)):
                            await channel.wake.wait()
                    continue
                for run in due:
                    if await self._refresh(run, channel):
                        channel.last = run.execution_id
                        sent_at = time.monotonic()
                        channel.next_send = max(channel.next_send, sent_at + self.interval_s)
                        self._next_global = max(self._next_global, sent_at + self.global_interval_s)
                        break
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live output: the scheduler of channel %s failed", channel.name)
        finally:
            if self._channels.get(channel.name) is channel and not channel.runs:
                del self._channels[channel.name]

    async def _refresh(self, run: _Run, channel: _Channel) -> bool:
        """Read the run's output; post or edit its live message if it changed. True when a
        Slack call was made (it counts against the rate)."""
        run.dirty = False
        now = time.monotonic()
        try:
            execution = await self.executions.get(run.execution_id)
            if execution.status in _TERMINAL_WORDS:
                self._drop(run)  # the sink replaces the live message with the output
                return False
            tails: dict[str, str] = {
                stream: await self.output.tail(
                    run.execution_id, stream, self.lines, LIVE_BYTES, execution=execution
                )
                for stream in _STREAMS
            }
        except EngineError as exc:
            if exc.http_status == 404:
                self._drop(run)
                return False
            log.warning("live output of #%s: not read: %s", run.execution_id, exc.message)
            run.next_read = now + MAX_POLL_S
            return False
        if tails == run.shown or not any(t.strip() for t in tails.values()):
            run.quiet += 1
            run.next_read = now + min(self.poll_s * 2 ** min(run.quiet, 6), MAX_POLL_S)
            return False
        run.quiet = 0
        run.next_read = now + self.poll_s
        async with run.lock:
            if run.finished:
                return False
            await self._send(run, channel, tails)
        return True

    async def _send(self, run: _Run, channel: _Channel, tails: dict[str, str]) -> None:
        text, blocks = render.live(run.execution_id, tails)
        try:
            if run.live_ts is None:
                resp = await self.client.chat_postMessage(
                    channel=run.channel, thread_ts=run.thread_ts, text=text, blocks=blocks
                )
                run.live_ts = str(resp["ts"])
                run.unsaved = True
            else:
                await self.client.chat_update(
                    channel=run.channel, ts=run.live_ts, text=text, blocks=blocks
                )
            run.shown = tails
            run.failures = 0
        except SlackApiError as exc:
            self._failed(run, channel, exc)
        except (SlackClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
            run.failures += 1
            run.dirty = True
            log.warning("live output of #%s: %s: %s", run.execution_id, type(exc).__name__, exc)
            if run.failures >= MAX_FAILURES:
                self._drop(run)
        if run.unsaved and run.live_ts is not None:
            try:
                await self.messages.set_live_message(run.execution_id, self.sink, run.live_ts)
                run.unsaved = False
            except EngineError as exc:  # tried again with the next edit, and at the end
                log.warning("live output of #%s: not saved: %s", run.execution_id, exc.message)

    def _failed(self, run: _Run, channel: _Channel, exc: SlackApiError) -> None:
        error = slack_error(exc)
        if exc.response is not None and exc.response.status_code == 429:
            pause = retry_after_s(exc)
            pause = self.interval_s if pause is None else pause
            until = time.monotonic() + pause
            channel.next_send = max(channel.next_send, until)
            self._next_global = max(self._next_global, until)
            run.dirty = True
            log.info("live output: Slack asks to wait %.1f s (channel %s)", pause, run.channel)
            return
        if error in MESSAGE_GONE:
            run.live_ts = None  # deleted by someone: a new one next time
            run.unsaved = False
            run.dirty = True
            return
        run.failures += 1
        log.warning("live output of #%s: slack: %s", run.execution_id, error or exc)
        if error in GIVE_UP_ERRORS or run.failures >= MAX_FAILURES:
            self._drop(run)
        else:
            run.dirty = True
