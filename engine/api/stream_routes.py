"""``GET /api/v1/executions/stream``: Attune's server-sent events of execution changes.

Each event's ``data`` is Attune's notification JSON (``execution_created`` /
``execution_status_changed``, ``payload``: the execution as ``GET /api/v1/executions/{id}``
shows it) and its ``id`` a cursor: a client reconnecting with ``Last-Event-ID`` is sent every
execution changed since (its current state), then the live changes. ``?execution_id=N``: that
execution alone (404 or 403 as ``GET /api/v1/executions/N``). Only executions the caller's
role may view are sent. The changes come from this process's :class:`engine.changes.ChangeFeed`
(which reads the other processes' too); a client that falls too far behind is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

from aiohttp import web
from aiohttp_sse import EventSourceResponse, sse_response

from engine.api.http import RUNTIME_KEY, Call, QueryParam, RouteSpec
from engine.api.routes import requester
from engine.api.stream_slots import STREAM_SLOTS_KEY
from engine.changes import Accept, ChangeFeed, Subscription, parse_cursor
from engine.clock import now_utc
from engine.records import Execution

log = logging.getLogger(f"attune.{__name__}")

#: A comment line this often keeps proxies and clients from closing a quiet stream.
PING_S = 15.0
#: How often a stream looks whether its client's connection is still there.
GONE_CHECK_S = 1.0
CHANGES_KEY = web.AppKey("change_feed", ChangeFeed)


async def stream_executions(call: Call) -> web.StreamResponse:
    rt = call.runtime
    only = call.query_id("execution_id")
    if only is not None:
        await rt.gate.view(requester(call), only)  # 404 / 403 as for the execution itself
    header = call.request.headers.get("Last-Event-ID")
    since = parse_cursor(header) if header else None
    policy, role = rt.gate.policy, call.caller.role
    everything = policy.sees_everything(role)

    def accept(execution: Execution) -> bool:
        if only is not None and execution.id != only:
            return False
        return everything or policy.allows(role, "view", execution.action_ref)

    feed = call.request.app[CHANGES_KEY]
    with call.request.app[STREAM_SLOTS_KEY].take():  # 429 when the process has its most open
        sub = feed.subscribe(accept)  # before the headers: a client may GET the state after
        try:
            with rt.metrics.stream_open("changes"):
                async with sse_response(call.request, ping_interval=PING_S) as resp:
                    gone = asyncio.create_task(_close_when_gone(call.request, resp, sub))
                    try:
                        await _stream(call, feed, sub, resp, since, only, accept)
                    finally:
                        gone.cancel()
                    if sub.dropped and call.request.transport is not None:
                        call.request.transport.abort()  # a stalled reader: do not wait on it
                    return resp
        finally:
            feed.unsubscribe(sub)


async def _close_when_gone(
    request: web.Request, resp: EventSourceResponse, sub: Subscription
) -> None:
    """Close the subscription when the client goes: its connection is lost (looked at every
    :data:`GONE_CHECK_S`), or a keep-alive ping cannot be sent."""
    while not sub.closed and resp.is_connected():
        transport = request.transport
        if transport is None or transport.is_closing():
            break
        await asyncio.sleep(GONE_CHECK_S)
    sub.close()


async def _stream(
    call: Call,
    feed: ChangeFeed,
    sub: Subscription,
    resp: EventSourceResponse,
    since: datetime | None,
    only: int | None,
    accept: Accept,
) -> None:
    lag = call.runtime.metrics.stream_lag
    #: The newest state replayed of each execution (changed lately): the live queue, filled
    #: meanwhile, may hold the same state or an older one, neither sent again.
    replayed: dict[int, datetime] = {}
    try:
        if since is not None:
            keep_from = now_utc() - 2 * feed.lag  # older states cannot come live again
            async for page in feed.replay(since, only=only):
                for change in page:
                    if sub.closed:
                        return
                    if accept(change.execution):
                        await resp.send(change.data, id=change.cursor)
                        if change.execution.updated >= keep_from:
                            replayed[change.execution.id] = change.execution.updated
        while (live := await sub.next()) is not None:
            shown = replayed.get(live.execution.id)
            if shown is not None and live.execution.updated <= shown:
                continue
            await resp.send(live.data, id=live.cursor)
            lag.observe(max(0.0, (now_utc() - live.execution.updated).total_seconds()))
    except (ConnectionError, RuntimeError, TimeoutError):
        return  # the client went away (or stalled past the send timeout)


async def _open(app: web.Application) -> None:
    rt = app[RUNTIME_KEY]
    app[CHANGES_KEY] = ChangeFeed(rt.store, rt.service.notifier)


async def _close(app: web.Application) -> None:
    with contextlib.suppress(KeyError):
        await app[CHANGES_KEY].close()


def add_change_stream(app: web.Application) -> None:
    """The change feed of ``app``'s process: made at start-up, its streams closed at
    shutdown (an open stream must not hold the server's stop)."""
    app.on_startup.append(_open)
    app.on_shutdown.append(_close)


STREAM_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/executions/stream",
        stream_executions,
        "Server-sent events of execution changes (Last-Event-ID replays what was missed)",
        query=(
            QueryParam("execution_id", "integer", "Only this execution's changes"),
            QueryParam("Last-Event-ID", "string", "Replay changes since this event", "header"),
        ),
        errors=(403, 404, 429),
        tags=("executions",),
    ),
]
