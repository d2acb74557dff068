"""Acks first: background work steps aside while a person waits on a request.

A chat command's ack shares the event loop with the work earlier commands left behind (their
claims, cards and results). Profiled one command at a time, an ack waited on the previous
command's card posts more than on its own work. Requests a person waits on are counted here;
the outbox and the worker check :meth:`AcksFirst.step_aside` before each delivery or claim,
and wait, at most ``max_wait_s`` each time, while any is in flight (so a stream of commands
slows background work down, never stops it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator

#: The longest one background step waits for requests in flight to be answered.
MAX_WAIT_S = 0.05


class AcksFirst:
    def __init__(self, max_wait_s: float = MAX_WAIT_S) -> None:
        self.max_wait_s = max_wait_s
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Count a request a person waits on, while the block runs."""
        self._in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def step_aside(self) -> None:
        """Return at once when nothing is in flight; else when it is, or after ``max_wait_s``."""
        if self._in_flight:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.max_wait_s)
