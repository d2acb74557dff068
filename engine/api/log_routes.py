"""An execution's output over the API, while it runs and after: Attune's
``GET /api/v1/executions/{id}/logs/{stream}/stream`` (server-sent events) and a plain read
``GET /api/v1/executions/{id}/logs/{stream}?offset=N`` for tailing.

Offsets are UTF-8 byte offsets into the stream's text (:mod:`engine.output`). Who may view the
execution may read its output; anyone else is told 404, as for an unknown execution.

The stream's events are Attune's: ``waiting`` (nothing to send yet; about every 0.25 s while
idle), ``content`` (catch-up from the offset asked for, in pieces of up to 64 KiB), a comment
``initial-catchup-complete``, ``append`` (new output), ``done`` (the run ended and everything
was sent; the stream then closes). ``content`` and ``append`` carry the next byte offset as
their ``id``, so a client reconnecting with ``Last-Event-ID`` resumes where it stopped (the
header wins over ``?offset=``). Keep-alive comments (``: ping``) go out every 15 s. A client
that does not read what is sent within :data:`SEND_TIMEOUT_S` is disconnected.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp_sse import EventSourceResponse, sse_response
from pydantic import BaseModel

from engine.api import schemas as s
from engine.api.http import MAX_ID, Call, QueryParam, RouteSpec
from engine.api.routes import requester
from engine.api.stream_slots import STREAM_SLOTS_KEY
from engine.errors import EngineError, Forbidden, InvalidRequest, NotFound
from engine.live_output import is_ended
from engine.output import DEFAULT_READ_BYTES, MAX_READ_BYTES, STREAMS, OutputSlice, Stream
from engine.records import Execution
from engine.status import PENDING, ExecutionStatus

log = logging.getLogger(f"attune.{__name__}")

#: Most bytes one ``content`` or ``append`` event carries (Attune's read size).
EVENT_BYTES = 64 * 1024
#: A client that has not taken an event (or a keep-alive) within this long is dropped.
SEND_TIMEOUT_S = 10.0
#: Time between keep-alive comments (axum's default, as Attune's stream).
PING_INTERVAL_S = 15.0


class LogSlice(BaseModel):
    """A piece of an execution's stdout or stderr (:class:`engine.output.OutputSlice`)."""

    execution_id: int
    stream: str
    #: The text from ``offset`` to ``next_offset``.
    content: str
    #: UTF-8 byte offset where ``content`` starts.
    offset: int
    #: The offset to ask for next (equal to ``offset`` when nothing new was there).
    next_offset: int
    #: The execution has not ended: more may come.
    running: bool
    #: The run ended with this stream cut at the output cap.
    truncated: bool


def _stream_name(call: Call) -> Stream:
    name = call.path_param("stream")
    for stream in STREAMS:
        if name == stream:
            return stream
    raise InvalidRequest(f"unsupported log stream '{name[:40]}': expected 'stdout' or 'stderr'")


def _offset(what: str, raw: str | None) -> int:
    if raw is None or raw == "":
        return 0
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(
            f"{what} must be a byte offset (an integer), got '{raw[:40]}'"
        ) from None
    if not 0 <= value <= MAX_ID:
        raise InvalidRequest(f"{what} must be between 0 and {MAX_ID}")
    return value


def _limit(call: Call) -> int:
    raw = call.request.query.get("limit")
    if raw is None or raw == "":
        return DEFAULT_READ_BYTES
    value = _offset("query parameter 'limit'", raw)
    if not 1 <= value <= MAX_READ_BYTES:
        raise InvalidRequest(f"query parameter 'limit' must be between 1 and {MAX_READ_BYTES}")
    return value


async def _viewable(call: Call, execution_id: int) -> Execution:
    """The execution if the caller may view it; 404 otherwise (not 403: whether it exists is
    not told to someone who may not see it)."""
    try:
        return await call.runtime.gate.view(requester(call), execution_id)
    except Forbidden:
        raise NotFound(f"execution {execution_id} not found") from None


def _as_json(execution_id: int, piece: OutputSlice) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "stream": piece.stream,
        "content": piece.content,
        "offset": piece.offset,
        "next_offset": piece.next_offset,
        "running": piece.running,
        "truncated": piece.truncated,
    }


async def get_execution_log(call: Call) -> Any:
    execution_id = call.int_path_param("id")
    stream = _stream_name(call)
    offset = _offset("query parameter 'offset'", call.request.query.get("offset"))
    limit = _limit(call)
    execution = await _viewable(call, execution_id)
    piece = await call.runtime.live_output.read(
        execution_id, stream, offset, limit, execution=execution
    )
    return {"data": _as_json(execution_id, piece)}


def _started(execution: Execution) -> bool:
    """Output may exist: the run began (or ended). Attune's "log file found"."""
    try:
        return ExecutionStatus(execution.status) not in PENDING
    except ValueError:
        return True


async def stream_execution_log(call: Call) -> Any:
    execution_id = call.int_path_param("id")
    stream = _stream_name(call)
    offset = _offset("query parameter 'offset'", call.request.query.get("offset"))
    resume = call.request.headers.get(EventSourceResponse.DEFAULT_LAST_EVENT_HEADER)
    if resume:
        offset = _offset("the Last-Event-ID header", resume)
    execution = await _viewable(call, execution_id)
    with call.request.app[STREAM_SLOTS_KEY].take():  # 429 when the process has its most open
        async with sse_response(
            call.request, send_timeout=SEND_TIMEOUT_S, ping_interval=PING_INTERVAL_S
        ) as response:
            try:
                with call.runtime.metrics.stream_open("logs"):
                    await _follow(call, response, execution_id, stream, offset, execution)
            except (ConnectionError, TimeoutError):
                log.info("log stream of execution %s: client gone or too slow", execution_id)
            except EngineError as exc:
                log.info("log stream of execution %s ended: %s", execution_id, exc.message)
    return response


async def _follow(
    call: Call,
    response: EventSourceResponse,
    execution_id: int,
    stream: Stream,
    offset: int,
    execution: Execution,
) -> None:
    """Attune's states: waiting for output, catch-up (``content``), tail (``append``), done."""
    live = call.runtime.live_output
    while not _started(execution):
        if is_ended(execution):
            await response.send("", event="done")
            return
        await live.wait(execution_id)
        await response.send("Waiting for log output", event="waiting")
        execution = await live.executions.get(execution_id)
    await response.send("Log file found", event="waiting")
    catching_up, fresh = True, True
    while True:
        if not fresh and not is_ended(execution):  # once ended, the result read is kept
            execution = await live.executions.get(execution_id)
        fresh = False
        piece = await live.read(execution_id, stream, offset, EVENT_BYTES, execution=execution)
        if piece.next_offset != piece.offset:
            offset = piece.next_offset
            event = "content" if catching_up else "append"
            await response.send(piece.content, id=str(offset), event=event)
            continue
        if catching_up:
            catching_up = False
            await _comment(call, response, "initial-catchup-complete")
            continue
        if not piece.running:
            await response.send("Execution complete", event="done")
            return
        await live.wait(execution_id)
        await response.send("Waiting for log output", event="waiting")


async def _comment(call: Call, response: EventSourceResponse, text: str) -> None:
    """A comment line, bounded as events are (a stalled client is cut off)."""
    try:
        async with asyncio.timeout(SEND_TIMEOUT_S):
            await response.write(f": {text}\r\n\r\n".encode())
    except TimeoutError:
        if call.request.transport is not None:
            call.request.transport.abort()
        raise


_STREAM_PARAM_NOTE = "Offsets are UTF-8 byte offsets into the stream (stdout or stderr)"

LOG_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/executions/{id}/logs/{stream}",
        get_execution_log,
        "Read an execution's stdout or stderr from a byte offset, while it runs or after "
        "(tail it by asking again from next_offset)",
        response=s.Single[LogSlice],
        query=(
            QueryParam("offset", "integer", f"{_STREAM_PARAM_NOTE}; default 0"),
            QueryParam("limit", "integer", f"Most bytes returned, 1-{MAX_READ_BYTES} (64 KiB)"),
        ),
        errors=(400, 401, 404),
        tags=("executions",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/executions/{id}/logs/{stream}/stream",
        stream_execution_log,
        "Follow an execution's stdout or stderr as server-sent events (text/event-stream): "
        "waiting, content (catch-up), append, done; id = next byte offset",
        response=None,
        query=(
            QueryParam("offset", "integer", f"Resume from this byte offset. {_STREAM_PARAM_NOTE}"),
            QueryParam(
                "Last-Event-ID", "string", "The id of the last event received (wins)", "header"
            ),
        ),
        errors=(400, 401, 404, 429),
        tags=("executions",),
    ),
]
