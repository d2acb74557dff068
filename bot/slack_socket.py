"""Slack's Socket Mode, connected in the background: the server comes up (and stops) whether
Slack answers or not, and reports the link in ``/health/ready``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError

from engine import backoff
from engine.background import cancel_and_wait

log = logging.getLogger(f"attune.{__name__}")

#: Bound on one attempt: asking for a WebSocket URL, then opening it.
CONNECT_TIMEOUT_S = 30.0
#: First wait after a failed attempt; it doubles up to MAX_BACKOFF_S.
FIRST_BACKOFF_S = 1.0
MAX_BACKOFF_S = 60.0


def describe(exc: BaseException) -> str:
    """One line on why an attempt failed (never a traceback, never the token)."""
    if isinstance(exc, TimeoutError):
        return f"Slack did not answer within {CONNECT_TIMEOUT_S:.0f} s"
    if isinstance(exc, SlackApiError):
        error = exc.response.get("error") if exc.response is not None else None
        return f"Slack refused: {error or exc.response.status_code}"
    if isinstance(exc, aiohttp.ClientError | OSError):
        return f"cannot reach Slack ({type(exc).__name__}: {exc})"
    return f"{type(exc).__name__}: {exc}"


class SocketModeLink:
    """Keeps a Bolt ``AsyncSocketModeHandler`` connected: tries at once, then again with
    back-off until the first connection stands; from then on slack_sdk's client reconnects by
    itself (its ping monitor), and :meth:`up` follows its session."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.last_error: str | None = None
        self._connected = False
        self._tried = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="attune-slack-socket")

    def up(self) -> bool:
        client = self.handler.client
        session = client.current_session
        return (
            self._connected
            and not client.closed
            and not client.stale
            and session is not None
            and not session.closed
        )

    async def first_attempt(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) for the first attempt to succeed or fail."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), timeout_s)

    async def _run(self) -> None:
        failures = 0
        while True:
            delay = backoff.delay_s(failures, base_s=FIRST_BACKOFF_S, cap_s=MAX_BACKOFF_S)
            try:
                await self._connect_once()
            except Exception as exc:
                self.last_error = describe(exc)
                log.warning(
                    "Slack Socket Mode: not connected (%s); trying again in %.0f s",
                    self.last_error,
                    delay,
                )
            else:
                self._connected, self.last_error = True, None
                self._tried.set()
                log.info("Slack Socket Mode: connected")
                return
            self._tried.set()
            await asyncio.sleep(delay)
            failures += 1

    async def _connect_once(self) -> None:
        client = self.handler.client
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            # Asked here, not in client.connect(): that one retries a failed request forever
            # (every 5 s, a traceback each time) and so never returns while Slack is down.
            client.wss_uri = await client.issue_new_wss_url()
            await client.connect()

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.handler.close_async()
