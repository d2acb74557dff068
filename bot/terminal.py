"""``attune chat``: the chat without Slack. Commands typed at a prompt go through the same
command handler; results come back through the same outbox as Slack's, printed here.

On a terminal (stdin and stdout both) the prompt is prompt_toolkit's (``bot.terminal_prompt``):
line editing, history across sessions, Tab completion, news printed above the prompt. Otherwise
(pipes, files, ``--plain``) lines are read and printed as they are (``bot.terminal_io``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import getpass
import re
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TextIO

from bot import render, render_workflow
from bot.alias_chat import AliasResult, alias_result
from bot.handler import ChatContext, CommandHandler
from bot.terminal_io import PROMPT, LineReader, Paint, Writable, colour_wanted, writer_for
from config import Settings
from engine.broker import Envelope
from engine.errors import EngineError
from engine.live_output import LiveOutput
from engine.outbox import OutboxDrainer
from engine.output import STREAMS
from engine.page_links import execution_page_url
from engine.records import Delivery, Execution, Route
from engine.retries import Retries, RetrySweep
from engine.runtime import build_runtime
from engine.status import TERMINAL
from engine.workflows.run_tree import TaskOf, WorkflowTrees, workflow_trees

if TYPE_CHECKING:
    from bot.chat_completion import ChatCompleter

#: After end of input, how long to wait for the results of this session's executions.
DRAIN_AT_EOF_S = 600.0
_MRKDWN = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def plain(text: str) -> str:
    """Slack mrkdwn to terminal text: drop bold markers and code backticks."""
    return _MRKDWN.sub(r"\1", text).replace("`", "")


#: A line of live output longer than this is printed in pieces of it.
LIVE_LINE_CHARS = 4000


class TerminalSink:
    """Prints an execution's news in the terminal that started it: a line when it starts,
    its output lines as they are printed (``#12 | line``, from ``live``), then its status and
    its whole output when it ends (the live lines stop first, so none lands in it)."""

    def __init__(
        self,
        out: Writable,
        live: LiveOutput | None = None,
        link: Callable[[int], str | None] | None = None,
        alias_result: AliasResult | None = None,
        paint: Paint | None = None,
        workflows: WorkflowTrees | None = None,
    ) -> None:
        #: The result format of the action alias that started a run (bot/alias_chat.py).
        self.alias_result = alias_result
        #: A workflow's task runs print a line under it (``#12 > check: completed in 0.4 s``).
        self.workflows = workflows
        self.out = out
        self.live = live
        self.paint = paint or Paint(enabled=False)
        #: The execution page's address (``ATTUNE_PUBLIC_URL``), printed when a run starts.
        self.link = link
        self.finished: set[int] = set()
        self.changed = asyncio.Event()
        self._following: dict[int, asyncio.Task[None]] = {}

    async def deliver(self, delivery: Delivery, execution: Execution, route: Route) -> None:
        if delivery.event == "created":
            return  # the acknowledgement already said it is queued
        if self.workflows is not None and execution.parent is not None:
            task_of = await self.workflows.task_of(execution)
            if task_of is not None:
                self._task_moved(delivery, execution, task_of)
                return
        if delivery.event == "started":
            running = replace(execution, status="running", result=None)
            self._print(self.paint.status(render.status_line(running), "running"))
            url = self.link(execution.id) if self.link is not None else None
            if url:
                self._print(f"#{execution.id} page: {url}")
            if self.live is not None and execution.id not in self._following:
                task = asyncio.create_task(self._follow(self.live, execution.id))
                self._following[execution.id] = task
            return
        await self._stop_following(execution.id)
        word = render.WORDS.get(execution.status, execution.status)
        self._print(self.paint.status(render.status_line(execution), word))
        said = None
        if self.alias_result is not None and (route.chat or {}).get("alias"):
            said = await self.alias_result(execution, route.chat or {})
        if said is not None and (not said[0] or said[1] is not None):
            body = plain(said[1] or "") if said[0] else ""
        else:
            body = render.plain_output(execution)
        if body:
            self._print(body)
        if execution.status in TERMINAL:
            self.finished.add(execution.id)
            self.changed.set()

    def _task_moved(self, delivery: Delivery, execution: Execution, task: TaskOf) -> None:
        """A line under the workflow when its task starts and ends (with the output of a task
        that did not complete)."""
        if delivery.event == "started":
            line = replace(task.task, status="running", duration_ms=None, error=None)
            self._print(render_workflow.task_move(task.root_id, line))
            return
        self._print(
            render_workflow.task_move(task.root_id, replace(task.task, status=execution.status))
        )
        if execution.status == "completed":
            return
        # Its output (its error is on the line above already).
        quiet = replace(execution, result={**(execution.result or {}), "error": None})
        if body := render.plain_output(quiet):
            self._print("\n".join(f"#{task.root_id} > | {line}" for line in body.split("\n")))

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def _follow(self, live: LiveOutput, execution_id: int) -> None:
        """Print the run's complete lines as they come, until it ends."""
        offsets = dict.fromkeys(STREAMS, 0)
        partial = dict.fromkeys(STREAMS, "")
        try:
            while True:
                news, ended = False, False
                for stream in STREAMS:
                    piece = await live.read(execution_id, stream, offsets[stream])
                    offsets[stream] = piece.next_offset
                    ended = ended or not piece.running
                    if piece.content:
                        news = True
                        partial[stream] = self._print_lines(
                            execution_id, stream, partial[stream] + piece.content
                        )
                if ended and not news:
                    return  # the end is printed whole by deliver()
                if not news:
                    await live.wait(execution_id)
        except EngineError:
            return  # the final output is printed anyway

    def _print_lines(self, execution_id: int, stream: str, text: str) -> str:
        """Print the complete lines of ``text``; return the rest."""
        *lines, rest = text.split("\n")
        while len(rest) > LIVE_LINE_CHARS:
            lines.append(rest[:LIVE_LINE_CHARS])
            rest = rest[LIVE_LINE_CHARS:]
        mark = self.paint.dim(f"#{execution_id} | " + ("" if stream == "stdout" else "[stderr] "))
        for line in lines:
            self._print(f"{mark}{line.rstrip(chr(13))}")
        return rest

    async def _stop_following(self, execution_id: int) -> None:
        task = self._following.pop(execution_id, None)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for execution_id in list(self._following):
            await self._stop_following(execution_id)


async def _answer_within(sink: TerminalSink, ids: set[int], wait_s: float) -> None:
    """Hold the next prompt until ``ids`` have ended (the sink prints their results), at most
    ``wait_s``: a quick run is answered before the prompt comes back (ATTUNE_CHAT_WAIT_S)."""
    if wait_s <= 0:
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait_s):
            while True:
                sink.changed.clear()  # before looking: an end in between sets it again
                if ids <= sink.finished:
                    return
                await sink.changed.wait()


@dataclass(frozen=True)
class ChatOptions:
    """How ``attune chat`` was asked to run (its command-line flags)."""

    #: Plain lines even on a terminal: no line editing, no completion, no history file.
    plain: bool = False
    #: The history file (``bot.terminal_prompt.history_path``); ``None``: none.
    history: Path | None = None


class Console(Protocol):
    """Where the chat reads lines and prints."""

    out: Writable
    paint: Paint

    async def read_line(self) -> str | None:
        """The next line; ``None`` at the end of input."""
        ...

    def close(self) -> None: ...


class LineConsole:
    """Plain lines, for pipes, files and tests (and ``--plain``): a prompt only when stdin is a
    terminal; every write whole (``bot.terminal_io``); colour only when stdout is a terminal."""

    def __init__(self, stdin: TextIO, out: TextIO) -> None:
        self.out = writer_for(out)
        self.paint = Paint(colour_wanted(out))
        self._reader = LineReader(stdin.fileno())
        self._prompt = stdin.isatty()

    async def read_line(self) -> str | None:
        if self._prompt:
            self.out.write(PROMPT)
            self.out.flush()
        raw = await self._reader.readline()
        return raw.decode("utf-8", errors="replace") if raw else None

    def close(self) -> None:
        return None


def _open_console(
    stdin: TextIO, out: TextIO, options: ChatOptions
) -> tuple[Console, ChatCompleter | None, str | None]:
    """The console for this terminal (or pipe); its completer (the prompt's only); a note on
    the history when its file cannot be used."""
    if options.plain or not (stdin.isatty() and out.isatty()):
        return LineConsole(stdin, out), None, None
    from bot.chat_completion import ChatCompleter
    from bot.terminal_prompt import PromptConsole, open_history

    completer = ChatCompleter()
    history, note = open_history(options.history, lambda line: not completer.secrets_given(line))
    console = PromptConsole(completer, history, colour_wanted(out))
    console.open()
    return console, completer, note


def _banner(completer: ChatCompleter | None, options: ChatOptions, note: str | None) -> str:
    if completer is None:
        return "Attune chat: type help; Ctrl-D to leave, Ctrl-C to stop at once.\n"
    kept = f"history in {options.history}" if options.history else "history not kept"
    return (
        "Attune chat: type help; Tab completes, Up recalls "
        f"({note or kept}); Ctrl-D to leave, Ctrl-C on an empty line to stop at once.\n"
    )


async def chat(
    settings: Settings,
    stdin: TextIO = sys.stdin,
    out: TextIO = sys.stdout,
    options: ChatOptions | None = None,
) -> int:
    options = options or ChatOptions()
    runtime = await build_runtime(settings, ensure_admin=False)
    session = uuid.uuid4().hex
    console, completer, note = _open_console(stdin, out, options)
    sink = TerminalSink(
        console.out,
        runtime.live_output,
        link=lambda eid: execution_page_url(settings, eid),
        alias_result=functools.partial(alias_result, runtime),
        paint=console.paint,
        workflows=workflow_trees(runtime),
    )
    drainer = OutboxDrainer(runtime.service, {f"terminal:{session}": sink}, poll_interval_s=0.5)
    handler = CommandHandler(runtime)
    user = getpass.getuser()
    # Whoever can start `attune chat` can read the database and the secret key: admin.
    ctx = ChatContext(
        source="chat",
        sink="terminal",
        user_id=user,
        user_name=user,
        role="admin",
        channel_id="terminal",
        session=session,
    )
    submitted: set[int] = set()
    retry_sweep: RetrySweep | None = None

    def say(text: str) -> None:
        console.out.write(text + "\n")
        console.out.flush()

    async def wake(_envelope: Envelope) -> None:
        drainer.wake()

    try:
        if not settings.amqp_url:
            # Nobody else shares our in-process broker: run this session's commands here.
            await runtime.start_worker(housekeeping=False)
            # And their retries (an action's max_retries), which only this process would run.
            retries = Retries(runtime.service, runtime.service.retry_marks)
            retry_sweep = RetrySweep(retries, settings.retry_poll_s).start()
        await runtime.broker.consume(None, ["execution.*"], wake, prefetch=8)
        drainer.start()
        if completer is not None:
            await completer.refresh(runtime, ctx.requester())
        if stdin.isatty():
            console.out.write(_banner(completer, options, note))
        while True:
            try:
                line = await console.read_line()
            except KeyboardInterrupt:  # Ctrl-C on the prompt's empty line: leave now
                return 130
            if line is None:
                break
            if not line.strip():
                continue
            reply = await handler.handle(line, ctx)
            text = plain(reply.text)
            say(text if reply.ok else console.paint.refusal(text))
            if reply.execution_id is not None and (
                line.split()[0].lower() in ("run", "rerun", "confirm") or "alias" in reply.extra
            ):
                asked = {reply.execution_id, *reply.extra.get("execution_ids", ())}  # a batch's
                submitted |= asked
                await _answer_within(sink, asked, settings.chat_wait_s)
            if completer is not None:  # a pack, template or rule may have come or gone
                await completer.refresh(runtime, ctx.requester())
        pending = sorted(submitted - sink.finished)
        if pending:
            say(
                f"waiting for {', '.join(f'#{i}' for i in pending)} to finish "
                "(Ctrl-C to stop waiting; running ones end abandoned)"
            )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_AT_EOF_S):
                while not submitted <= sink.finished:
                    sink.changed.clear()
                    await sink.changed.wait()
        return 0
    finally:
        if retry_sweep is not None:
            await retry_sweep.stop()
        await drainer.stop()
        await sink.close()
        console.close()
        await runtime.close(grace_s=0 if submitted - sink.finished else None)
