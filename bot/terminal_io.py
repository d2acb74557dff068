"""The plain line mode of ``attune chat`` (stdin not a terminal, or ``--plain``) and what both
modes share: reading lines without touching the terminal's blocking flag, writing text whole,
and colour only where it is wanted.

Why not asyncio's ``connect_read_pipe``: it sets ``O_NONBLOCK`` on stdin's open file
description, and on a terminal stdin, stdout and stderr share one. Stdout then became
non-blocking too, and a long output written to a slow terminal lost everything past the
terminal's buffer (about 20 KB) without a word. Here the descriptor is watched by the event loop
(``add_reader``) and read only once it is readable, and it stays blocking; writes loop until
every byte is out, waiting for the descriptor when someone else made it non-blocking anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import stat
from collections.abc import Mapping
from typing import Protocol, TextIO

PROMPT = "attune> "
#: Bytes asked of one ``read`` of stdin.
READ_CHUNK_BYTES = 65536

_RESET = "\x1b[0m"
#: ANSI colours of the statuses (the first word after ``#N action:`` in a status line).
STATUS_COLOURS: dict[str, str] = {
    "completed": "\x1b[32m",  # green
    "failed": "\x1b[31m",  # red
    "timeout": "\x1b[31m",
    "abandoned": "\x1b[31m",
    "running": "\x1b[33m",  # yellow
    "canceling": "\x1b[33m",
    "cancelled": "\x1b[35m",  # magenta
    "queued": "\x1b[36m",  # cyan
}
_DIM = "\x1b[2m"
_RED = "\x1b[31m"


class Writable(Protocol):
    """Where the chat prints: a text stream, the prompt's stdout proxy, or a test's buffer."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


def colour_wanted(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to anything but empty
    (https://no-color.org) or the terminal says it is dumb."""
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Paint:
    """The chat's few colours, or none (``enabled=False``: text unchanged)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def status(self, line: str, status_word: str) -> str:
        colour = STATUS_COLOURS.get(status_word)
        if not self.enabled or colour is None:
            return line
        return f"{colour}{line}{_RESET}"

    def dim(self, text: str) -> str:
        return f"{_DIM}{text}{_RESET}" if self.enabled else text

    def refusal(self, text: str) -> str:
        """A reply that did not do what was asked: its first line in red."""
        if not self.enabled:
            return text
        first, sep, rest = text.partition("\n")
        return f"{_RED}{first}{_RESET}{sep}{rest}"


def write_whole(fd: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``fd``: partial writes are continued, and a descriptor
    that is non-blocking (``EAGAIN``) is waited on until it takes more, never given up on."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[written:]


class WholeWriter:
    """A text stream's descriptor written whole (see :func:`write_whole`), unbuffered: each
    ``write`` is on the terminal when it returns."""

    def __init__(self, stream: TextIO) -> None:
        stream.flush()  # whatever was printed before goes first
        self._fd = stream.fileno()
        self._encoding = stream.encoding or "utf-8"

    def write(self, text: str, /) -> int:
        write_whole(self._fd, text.encode(self._encoding, "replace"))
        return len(text)

    def flush(self) -> None:
        return None


def writer_for(stream: TextIO) -> Writable:
    """``stream`` written whole when it has a descriptor; as it is otherwise (a test's buffer)."""
    try:
        return WholeWriter(stream)
    except (AttributeError, OSError, ValueError):
        return stream


class LineReader:
    """Lines of a file descriptor, read when the event loop says it is readable: cancellable
    (Ctrl-C and shutdown never wait on a blocked read) and without making the descriptor, and
    so a terminal shared with stdout, non-blocking. A regular file or ``/dev/null``, which
    the loop cannot watch and which never block, is read directly."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._eof = False
        self._watchable = not stat.S_ISREG(os.fstat(fd).st_mode)

    async def readline(self) -> bytes:
        """The next line with its newline; the rest without one at end of input; ``b""`` after."""
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[: end + 1])
                del self._buffer[: end + 1]
                return line
            if self._eof:
                line = bytes(self._buffer)
                self._buffer.clear()
                return line
            chunk = await self._read()
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True

    async def _read(self) -> bytes:
        if self._watchable:
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[None] = loop.create_future()

            def readable() -> None:
                if not ready.done():
                    ready.set_result(None)

            try:
                loop.add_reader(self._fd, readable)
            except (PermissionError, ValueError):  # epoll refuses it (e.g. /dev/null)
                self._watchable = False
            else:
                try:
                    await ready
                finally:
                    with contextlib.suppress(ValueError, OSError):
                        loop.remove_reader(self._fd)
        return os.read(self._fd, READ_CHUNK_BYTES)
