"""A bound on the server-sent event streams one process keeps open (``ATTUNE_MAX_STREAMS``):
change streams and log streams together. Each holds a connection for as long as its client
likes, and a log stream reads the database every 0.25 s while its run lasts: without a bound,
one client (a link holder needs no login) could open enough of them to starve the database
pool and every other request. One stream more than the bound is answered 429 with a
``Retry-After``; the others are not disturbed."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from engine.errors import TooManyRequests

#: What a refused client is told to wait before trying again.
RETRY_AFTER_S = 5.0


class StreamSlots:
    """At most ``limit`` streams open at once in this process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    @contextmanager
    def take(self) -> Iterator[None]:
        """Hold one slot while the block runs; TooManyRequests when none is free."""
        if self.open >= self.limit:
            raise TooManyRequests(
                f"this server has {self.open} event streams open, its most "
                f"(ATTUNE_MAX_STREAMS={self.limit}); try again later",
                RETRY_AFTER_S,
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


STREAM_SLOTS_KEY = web.AppKey("stream_slots", StreamSlots)
