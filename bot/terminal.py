"""``attune chat``: the chat without Slack. Commands typed at a prompt go through the same
command handler; results come back through the same outbox as Slack's, printed here."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import re
import sys
import uuid
from dataclasses import replace
from typing import TextIO

from bot import render
from bot.handler import ChatContext, CommandHandler
from config import Settings
from engine.broker import Envelope
from engine.outbox import OutboxDrainer
from engine.records import Delivery, Execution, Route
from engine.runtime import build_runtime
from engine.status import TERMINAL

PROMPT = "attune> "
#: After end of input, how long to wait for the results of this session's executions.
DRAIN_AT_EOF_S = 600.0
_MRKDWN = re.compile(r"(?<![\w*])\*([^*\n]+)\*(?![\w*])")


def plain(text: str) -> str:
    """Slack mrkdwn to terminal text: drop bold markers and code backticks."""
    return _MRKDWN.sub(r"\1", text).replace("`", "")


class TerminalSink:
    """Prints an execution's news in the terminal that started it."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.finished: set[int] = set()
        self.changed = asyncio.Event()

    async def deliver(self, delivery: Delivery, execution: Execution, route: Route) -> None:
        if delivery.event == "created":
            return  # the acknowledgement already said it is queued
        if delivery.event == "started":
            self._print(render.status_line(replace(execution, status="running", result=None)))
            return
        self._print(render.status_line(execution))
        body = render.plain_output(execution)
        if body:
            self._print(body)
        if execution.status in TERMINAL:
            self.finished.add(execution.id)
            self.changed.set()

    def _print(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()


async def _line_reader(stdin: TextIO) -> asyncio.StreamReader:
    """Lines of ``stdin`` read by the event loop itself: cancellable, so Ctrl-C and shutdown
    never wait for a blocked read (a thread reading stdin would hold the exit)."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    return reader


async def chat(settings: Settings, stdin: TextIO = sys.stdin, out: TextIO = sys.stdout) -> int:
    runtime = await build_runtime(settings, ensure_admin=False)
    session = uuid.uuid4().hex
    sink = TerminalSink(out)
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
    interactive = stdin.isatty()

    async def wake(_envelope: Envelope) -> None:
        drainer.wake()

    try:
        if not settings.amqp_url:
            # Nobody else shares our in-process broker: run this session's commands here.
            await runtime.start_worker(housekeeping=False)
        await runtime.broker.consume(None, ["execution.*"], wake, prefetch=8)
        drainer.start()
        reader = await _line_reader(stdin)
        if interactive:
            out.write("Attune chat: type `help`; Ctrl-D to leave, Ctrl-C to stop at once.\n")
        while True:
            if interactive:
                out.write(PROMPT)
                out.flush()
            raw = await reader.readline()
            if not raw:
                break
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            reply = await handler.handle(line, ctx)
            out.write(plain(reply.text) + "\n")
            out.flush()
            if reply.execution_id is not None and line.split()[0].lower() in (
                "run",
                "rerun",
                "confirm",
            ):
                submitted.add(reply.execution_id)
        pending = sorted(submitted - sink.finished)
        if pending:
            out.write(
                f"waiting for {', '.join(f'#{i}' for i in pending)} to finish "
                "(Ctrl-C to stop waiting; running ones end abandoned)\n"
            )
            out.flush()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_AT_EOF_S):
                while not submitted <= sink.finished:
                    sink.changed.clear()
                    await sink.changed.wait()
        return 0
    finally:
        await drainer.stop()
        await runtime.close(grace_s=0 if submitted - sink.finished else None)
