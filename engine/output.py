"""Live output of running actions: the records, the repository's protocol, and the pure
functions that cut text at UTF-8 byte offsets (no I/O here).

While an action runs, its worker stores what it printed as :class:`OutputChunk` rows (table
``execution_output``, :mod:`engine.storage.output`). A chunk's ``offset`` is the UTF-8 byte
offset of its first character in its stream, counted in the *decoded* text (invalid bytes and
NUL characters already replaced by U+FFFD, as in the final ``result``), so an offset means the
same byte in the chunks and in ``result["stdout"]`` / ``result["stderr"]``. Chunks of one
stream are contiguous and never longer than :data:`MAX_CHUNK_BYTES`; a chunk may be stored
twice (a write retried after an unknown outcome): readers skip what they already passed.
Once the run has ended, its ``result`` holds the whole output and its chunks are removed.

Readers use :class:`engine.live_output.LiveOutput`, which returns :class:`OutputSlice` values.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

Stream = Literal["stdout", "stderr"]
#: The streams of an action's output.
STREAMS: tuple[Stream, ...] = ("stdout", "stderr")
#: Longest chunk stored, in UTF-8 bytes (a writer splits longer text).
MAX_CHUNK_BYTES = 64 * 1024
#: Bytes a read returns when it names no limit, and the most it may ask for.
DEFAULT_READ_BYTES = 64 * 1024
MAX_READ_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class OutputChunk:
    """``data`` printed by a running action on ``stream``, starting at byte ``offset``."""

    execution_id: int
    stream: Stream
    #: UTF-8 byte offset of ``data``'s first character in the stream.
    offset: int
    data: str

    @property
    def end(self) -> int:
        """The byte offset just past this chunk."""
        return self.offset + utf8_len(self.data)


@dataclass(frozen=True, slots=True)
class OutputSlice:
    """A piece of one stream, as the API returns it (``GET .../logs/{stream}``)."""

    stream: Stream
    #: The text from ``offset`` to ``next_offset`` (whole characters only).
    content: str
    #: Where ``content`` starts: the offset asked for (moved forward to the next character if
    #: it fell inside one).
    offset: int
    #: The offset to ask for next; equal to ``offset`` when there was nothing new.
    next_offset: int
    #: The execution has not ended: more may come.
    running: bool
    #: The run ended with this stream cut at the output cap (always False while running).
    truncated: bool


class OutputRepository(Protocol):
    """Where running actions' chunks are kept (:mod:`engine.storage.output`)."""

    async def append(self, chunks: Sequence[OutputChunk]) -> None:
        """Store ``chunks`` (any executions and streams) in one transaction."""
        ...

    async def read(
        self, execution_id: int, stream: Stream, offset: int, max_rows: int
    ) -> list[OutputChunk]:
        """Up to ``max_rows`` chunks of one stream in offset order, from the one holding byte
        ``offset`` (the last one starting at or before it)."""
        ...

    async def tail(self, execution_id: int, stream: Stream, max_bytes: int) -> list[OutputChunk]:
        """The last chunks of one stream, in offset order, together at least ``max_bytes``
        long when the stream is (a bounded number of rows)."""
        ...

    async def drop(self, execution_id: int) -> int:
        """Remove an execution's chunks; how many there were."""
        ...


def utf8_len(text: str) -> int:
    """Length of ``text`` in UTF-8 bytes."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def slice_chunks(chunks: Iterable[OutputChunk], offset: int, limit: int) -> tuple[str, int, int]:
    """The text of ``chunks`` (sorted by offset) from byte ``offset``, at most ``limit`` bytes
    cut at a character boundary (at least one whole character when there is one): returns
    ``(content, start, next_offset)``. ``start`` is ``offset`` moved past a partial character,
    or to the first chunk when the chunks begin later (a gap); the text stops at a gap."""
    position = offset
    parts: list[bytes] = []
    budget = max(limit, 1)
    started = False
    for chunk in chunks:
        if chunk.offset > position:
            if started:
                break  # a gap: stop before it
            position = chunk.offset
        raw = chunk.data.encode("utf-8")
        if chunk.offset + len(raw) <= position:
            continue  # already passed (or a copy of one that was)
        piece = raw[position - chunk.offset :]
        if not started:
            skip = 0
            while skip < len(piece) and _is_continuation(piece[skip]):
                skip += 1
            piece = piece[skip:]
            position += skip
            offset = position
            started = True
        if len(piece) > budget:
            cut = budget
            while cut > 0 and _is_continuation(piece[cut]):
                cut -= 1
            if cut == 0 and not parts:  # one character longer than the limit: send it whole
                cut = 1
                while cut < len(piece) and _is_continuation(piece[cut]):
                    cut += 1
            piece = piece[:cut]
        parts.append(piece)
        position += len(piece)
        budget -= len(piece)
        if budget <= 0:
            break
    if not started:
        return "", offset, offset
    return b"".join(parts).decode("utf-8"), offset, position


def last_lines(text: str, max_lines: int) -> str:
    """The last ``max_lines`` lines of ``text`` (a final line without its newline counts)."""
    if max_lines <= 0 or not text:
        return ""
    lines = text.splitlines(keepends=True)
    return "".join(lines[-max_lines:])


def split_text(text: str, max_bytes: int = MAX_CHUNK_BYTES) -> list[str]:
    """``text`` in pieces of at most ``max_bytes`` UTF-8 bytes, cut between characters."""
    raw = text.encode("utf-8")
    if len(raw) <= max_bytes:
        return [text] if text else []
    pieces = []
    start = 0
    while start < len(raw):
        end = min(start + max_bytes, len(raw))
        while start < end < len(raw) and _is_continuation(raw[end]):
            end -= 1
        if end == start:  # a character longer than max_bytes: whole
            end += 1
            while end < len(raw) and _is_continuation(raw[end]):
                end += 1
        pieces.append(raw[start:end].decode("utf-8"))
        start = end
    return pieces
