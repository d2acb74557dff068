"""``attune run --url``'s pieces that need no server: reading server-sent events split anywhere
across chunks, and the URL check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.remote_run import RemoteError, check_url, events


class _Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def iter_any(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


class _Response:
    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Content(chunks)


async def _read(chunks: list[bytes]) -> list[tuple[str | None, str]]:
    response: Any = _Response(chunks)
    return [event async for event in events(response)]


async def test_events_are_read_whatever_the_chunks() -> None:
    stream = (
        b": ping\n\n"
        b'id: 1-5\ndata: {"a": 1}\n\n'
        b"id: 2-5\r\ndata: first\r\ndata: second\r\n\r\n"
        b"data: no id\n\n"
    )
    whole = await _read([stream])
    assert whole == [("1-5", '{"a": 1}'), ("2-5", "first\nsecond"), ("2-5", "no id")]
    byte_by_byte = await _read([stream[i : i + 1] for i in range(len(stream))])
    assert byte_by_byte == whole


async def test_an_unfinished_event_is_not_sent() -> None:
    assert await _read([b"id: 1-1\ndata: half"]) == []


def test_the_url_must_be_http() -> None:
    assert check_url("http://host:8080/") == "http://host:8080"
    for bad in ("host:8080", "ftp://host", "http://"):
        with pytest.raises(RemoteError, match="--url must look like"):
            check_url(bad)
