"""Live output: reading a running action's output (:class:`LiveOutput`), waking readers of
this process when a worker stored more (:class:`OutputHub`), and storing it as it is printed
(:class:`OutputWriter`, one per run, used by the worker).

Readers in the worker's process are woken at once (``OutputHub.notify``); readers in another
process find out by reading again: :meth:`LiveOutput.wait` returns after at most
``poll_interval_s`` (0.25 s) either way, so a loop of ``read`` and ``wait`` serves both.

A reader's loop (the API's log stream, a chat sink)::

    offset = 0
    while True:
        piece = await live.read(execution_id, "stdout", offset)
        show(piece.content)
        offset = piece.next_offset
        if not piece.running and piece.next_offset == piece.offset:
            break  # ended, and everything was read
        if piece.next_offset == piece.offset:
            await live.wait(execution_id)
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
from typing import Protocol

from engine.output import (
    DEFAULT_READ_BYTES,
    MAX_READ_BYTES,
    STREAMS,
    OutputChunk,
    OutputRepository,
    OutputSlice,
    Stream,
    last_lines,
    slice_chunks,
    split_text,
    utf8_len,
)
from engine.records import Execution
from engine.status import ExecutionStatus

log = logging.getLogger(f"attune.{__name__}")

#: How long a reader waits for news before reading again (news from another process).
POLL_INTERVAL_S = 0.25
#: Most chunk rows one read looks at.
READ_MAX_ROWS = 512
#: Default spacing of one run's writes (``ATTUNE_OUTPUT_FLUSH_INTERVAL_S``).
FLUSH_INTERVAL_S = 0.15
#: After a quiet spell, how long a write waits for the rest of what was printed with the
#: first piece (a print's text and its newline often come in two reads).
GATHER_S = 0.005
#: Longest a run's last write may hold up the recording of its end.
CLOSE_TIMEOUT_S = 5.0


class ExecutionReader(Protocol):
    """What :class:`LiveOutput` needs of the execution service."""

    async def get(self, execution_id: int) -> Execution: ...


def is_ended(execution: Execution) -> bool:
    try:
        return ExecutionStatus(execution.status).is_terminal
    except ValueError:
        return False


class OutputHub:
    """In-process wake-ups: :meth:`notify` wakes every :meth:`wait` on that execution. Holds
    nothing for an execution nobody waits on."""

    def __init__(self) -> None:
        self._events: dict[int, asyncio.Event] = {}
        self._waiters: dict[int, int] = {}

    def notify(self, execution_id: int) -> None:
        """New output (or the end) of ``execution_id`` was stored."""
        event = self._events.pop(execution_id, None)
        if event is not None:
            event.set()

    async def wait(self, execution_id: int, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for a :meth:`notify` of ``execution_id``; True if one came."""
        event = self._events.get(execution_id)
        if event is None:
            event = self._events[execution_id] = asyncio.Event()
        self._waiters[execution_id] = self._waiters.get(execution_id, 0) + 1
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            left = self._waiters[execution_id] - 1
            if left:
                self._waiters[execution_id] = left
            else:
                del self._waiters[execution_id]
                if self._events.get(execution_id) is event:
                    del self._events[execution_id]

    @property
    def waiting(self) -> int:
        """Executions someone waits on now."""
        return len(self._waiters)


def _result_text(execution: Execution, stream: Stream) -> str | None:
    """The stream's text in the ended execution's result; None when the result has none (an
    abandoned run: its output is still in its chunks)."""
    result = execution.result or {}
    text = result.get(stream)
    return text if isinstance(text, str) else None


def _last_bytes(text: str, max_bytes: int) -> str:
    """The end of ``text``, at most ``max_bytes`` UTF-8 bytes, starting at a whole line when
    it had to be cut and a line break is in what is kept."""
    if utf8_len(text) <= max_bytes:
        return text
    raw = text.encode("utf-8")[-max_bytes:]
    kept = raw.decode("utf-8", errors="ignore")  # drops a partial first character
    newline = kept.find("\n")
    return kept[newline + 1 :] if 0 <= newline < len(kept) - 1 else kept


class LiveOutput:
    """Reads an execution's output while it runs (from its chunks) and after (from its
    ``result``), at the same UTF-8 byte offsets either way.

    - :meth:`read`: a slice from a byte offset (for ``GET .../logs/{stream}`` and streams);
    - :meth:`tail`: the last lines (for chat sinks' live messages);
    - :meth:`wait`: until news or ``poll_interval_s``.

    ``executions.get`` raising :class:`engine.errors.NotFound` for an unknown execution is
    passed on; nothing here checks who may view it (the caller does).
    """

    def __init__(
        self,
        repository: OutputRepository,
        executions: ExecutionReader,
        hub: OutputHub | None = None,
        *,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.repository = repository
        self.executions = executions
        self.hub = hub or OutputHub()
        self.poll_interval_s = poll_interval_s

    async def read(
        self,
        execution_id: int,
        stream: Stream,
        offset: int = 0,
        limit: int = DEFAULT_READ_BYTES,
        *,
        execution: Execution | None = None,
    ) -> OutputSlice:
        """Up to ``limit`` bytes (at most :data:`MAX_READ_BYTES`) of ``stream`` from byte
        ``offset``; ``execution`` when the caller has just read it (saves a query)."""
        limit = min(max(limit, 1), MAX_READ_BYTES)
        offset = max(offset, 0)
        if execution is None:
            execution = await self.executions.get(execution_id)
        ended = is_ended(execution)
        text = _result_text(execution, stream) if ended else None
        if text is not None:
            whole = [OutputChunk(execution_id, stream, 0, text)]
            content, start, following = slice_chunks(whole, offset, limit)
            truncated = bool((execution.result or {}).get(f"{stream}_truncated"))
            return OutputSlice(stream, content, start, following, False, truncated)
        chunks = await self.repository.read(execution_id, stream, offset, READ_MAX_ROWS)
        content, start, following = slice_chunks(chunks, offset, limit)
        return OutputSlice(stream, content, start, following, not ended, False)

    async def tail(
        self,
        execution_id: int,
        stream: Stream = "stdout",
        max_lines: int = 10,
        max_bytes: int = 4096,
        *,
        execution: Execution | None = None,
    ) -> str:
        """The last ``max_lines`` lines of ``stream`` within its last ``max_bytes`` bytes
        (the final line may lack its newline); "" when nothing was printed yet.
        ``execution`` when the caller has just read it (saves a query)."""
        if execution is None:
            execution = await self.executions.get(execution_id)
        text = _result_text(execution, stream) if is_ended(execution) else None
        if text is None:
            chunks = await self.repository.tail(execution_id, stream, max_bytes)
            text = slice_chunks(chunks, 0, MAX_READ_BYTES)[0] if chunks else ""
        return last_lines(_last_bytes(text, max_bytes), max_lines)

    async def wait(self, execution_id: int, timeout_s: float | None = None) -> bool:
        """Wait for news of ``execution_id`` stored by this process (True), or up to
        ``timeout_s`` (default ``poll_interval_s``; False): then read again."""
        limit = self.poll_interval_s if timeout_s is None else timeout_s
        return await self.hub.wait(execution_id, limit)


class OutputWriter:
    """One run's output on its way to the repository: decoded as it comes (an incremental
    UTF-8 decoder per stream, invalid bytes and NUL as U+FFFD, as in the final result),
    coalesced, and written at most once per ``interval_s`` with at most one write in flight.
    A line printed after a quiet spell is written at once (after :data:`GATHER_S`).

    :meth:`feed` is called by the runner (synchronously, with the bytes it keeps: never more
    than its cap, so what waits here is bounded by it too). A failed write is logged and
    tried again with the next one; it never fails the run. :meth:`close` writes the rest."""

    def __init__(
        self,
        execution_id: int,
        repository: OutputRepository,
        hub: OutputHub | None = None,
        *,
        interval_s: float = FLUSH_INTERVAL_S,
    ) -> None:
        self.execution_id = execution_id
        self.repository = repository
        self.hub = hub
        self.interval_s = interval_s
        self._decoders = {
            s: codecs.getincrementaldecoder("utf-8")(errors="replace") for s in STREAMS
        }
        #: Bytes of each stream decoded so far, and where its pending text starts.
        self._decoded = dict.fromkeys(STREAMS, 0)
        self._pending_from = dict.fromkeys(STREAMS, 0)
        self._pending: dict[Stream, list[str]] = {s: [] for s in STREAMS}
        #: Chunks whose write failed, tried again first.
        self._unwritten: list[OutputChunk] = []
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._writing: asyncio.Task[None] | None = None
        # The first write waits one interval from the start: a run that ends sooner writes
        # nothing (its result holds the output), so short runs cost the database nothing.
        self._last_write = self._loop.time()
        self._closed = False
        self._failures = 0
        #: Writes done and chunks stored (for tests and logs).
        self.writes = 0

    @property
    def touched(self) -> bool:
        """A write was tried: the repository may hold chunks of this run."""
        return self.writes > 0 or self._failures > 0 or bool(self._unwritten)

    def feed(self, stream: str, data: bytes) -> None:
        """Take ``data`` printed on ``stream`` ('stdout' or 'stderr')."""
        if self._closed or stream not in self._decoders:
            return
        name: Stream = "stdout" if stream == "stdout" else "stderr"
        self._add(name, self._decoders[name].decode(data))
        self._schedule()

    def _add(self, stream: Stream, text: str) -> None:
        if not text:
            return
        if "\x00" in text:
            text = text.replace("\x00", "\ufffd")  # as the stored result has it
        self._pending[stream].append(text)
        self._decoded[stream] += utf8_len(text)

    def _take(self) -> list[OutputChunk]:
        chunks, self._unwritten = self._unwritten, []
        for stream in STREAMS:
            parts = self._pending[stream]
            if not parts:
                continue
            offset = self._pending_from[stream]
            for piece in split_text("".join(parts)):
                chunks.append(OutputChunk(self.execution_id, stream, offset, piece))
                offset += utf8_len(piece)
            parts.clear()
            self._pending_from[stream] = self._decoded[stream]
        return chunks

    def _has_pending(self) -> bool:
        return bool(self._unwritten) or any(self._pending.values())

    def _schedule(self) -> None:
        if self._closed or self._writing is not None or self._timer is not None:
            return
        delay = self._last_write + self.interval_s - self._loop.time()
        self._timer = self._loop.call_later(max(delay, GATHER_S), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if not self._closed:
            self._start_write()

    def _start_write(self) -> None:
        self._last_write = self._loop.time()
        task = self._loop.create_task(self._write(self._take()))
        self._writing = task
        task.add_done_callback(self._written)

    def _written(self, _task: asyncio.Task[None]) -> None:
        self._writing = None
        if self._has_pending():
            self._schedule()

    async def _write(self, chunks: list[OutputChunk]) -> None:
        if not chunks:
            return
        try:
            await self.repository.append(chunks)
        except Exception as exc:
            self._unwritten = chunks + self._unwritten
            self._failures += 1
            if self._failures == 1:
                log.warning(
                    "execution %s: live output not stored (tried again): %s",
                    self.execution_id,
                    getattr(exc, "message", None) or exc,
                )
            return
        if self._failures:
            log.info("execution %s: live output stored again", self.execution_id)
            self._failures = 0
        self.writes += 1
        if self.hub is not None:
            self.hub.notify(self.execution_id)

    async def close(self, *, result_follows: bool = False) -> None:
        """Write what is left (within :data:`CLOSE_TIMEOUT_S`); feeds after this are ignored.
        Call before the end of the run is recorded. ``result_follows``: the result about to
        be stored holds the whole output, so a run that has written nothing yet writes
        nothing now."""
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if result_follows and not self.touched and self._writing is None:
            return
        for stream in STREAMS:
            self._add(stream, self._decoders[stream].decode(b"", final=True))
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                if self._writing is not None:
                    await asyncio.shield(self._writing)
                await self._write(self._take())
        except TimeoutError:
            log.warning(
                "execution %s: the last live output was not stored within %g s",
                self.execution_id,
                CLOSE_TIMEOUT_S,
            )
        if self._writing is not None:
            self._writing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writing
