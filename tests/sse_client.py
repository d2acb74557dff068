"""A small reader of server-sent events for tests: one event at a time, bounded waits."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp


@dataclass
class SseEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None
    #: Comment lines (``: ...``) seen before this event.
    comments: list[str] = field(default_factory=list)


class SseReader:
    """Reads events from a ``text/event-stream`` response; None at the end of the stream."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self._comments: list[str] = []

    async def next(self, timeout_s: float = 10.0) -> SseEvent | None:
        async with asyncio.timeout(timeout_s):
            data: list[str] = []
            event = SseEvent()
            seen = False
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return event if seen else None
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line:
                    if seen:
                        event.data = "\n".join(data)
                        event.comments, self._comments = self._comments, []
                        return event
                    continue
                if line.startswith(":"):
                    self._comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                seen = True
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event.event = value
                elif name == "id":
                    event.id = value
