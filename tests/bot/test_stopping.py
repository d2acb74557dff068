"""Stopping ``attune serve`` / ``attune worker`` step by step (issue 12): a step that overruns
is cut off at its bound and named in the log, the steps after it still run, all of them share
one budget, and a process whose stop hangs anyway dumps its threads and exits 1."""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from bot import server
from bot.server import Stopping


async def test_an_overrunning_step_is_named_and_the_next_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def hangs() -> None:
        await asyncio.Event().wait()

    async def closes() -> None:
        ran.append("closed")

    steps = Stopping(budget_s=30)
    try:
        with caplog.at_level(logging.INFO, logger="attune"):
            began = time.monotonic()
            await steps.run("the outbox", hangs(), 0.8)
            await steps.run("the engine", closes(), 5)
            took = time.monotonic() - began
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert ran == ["closed"]
    assert took < 2, took
    assert "stopping: the outbox did not finish within 0.8 s; going on" in caplog.text


async def test_the_steps_share_one_budget() -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    steps = Stopping(budget_s=0.5)
    try:
        began = time.monotonic()
        for name in ("a", "b", "c", "d"):
            await steps.run(name, hangs(), 10)  # each alone would take 10 s
        took = time.monotonic() - began
    finally:
        faulthandler.cancel_dump_traceback_later()
    # The budget, then MIN_STEP_S for each step after it.
    assert took < 0.5 + 4 * server.MIN_STEP_S + 1, took


def test_a_hung_stop_dumps_the_threads_and_exits_1() -> None:
    script = textwrap.dedent(
        """
        import asyncio, threading, time
        from bot import server

        server.STOP_WATCHDOG_S = 0.5
        async def main():
            server.Stopping(budget_s=0.2)
        asyncio.run(main())
        threading.Event().wait()  # a thread that never ends (as a stuck executor would)
        """
    )
    began = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 1, done
    assert "Timeout" in done.stderr, done.stderr  # faulthandler's dump of every thread
    assert "Thread" in done.stderr, done.stderr
    assert time.monotonic() - began < 20
