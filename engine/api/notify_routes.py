"""``/ws``: Attune's notifier protocol for its web UI. The client offers the subprotocols
``attune.v1`` and ``attune.jwt.<access token>`` (a browser cannot send a header); a bad token
closes with 1008. The server greets (``{"type": "welcome"}``), takes ``subscribe`` /
``unsubscribe`` messages with a filter and ``ping``, and sends each notification a filter
matches, for executions the caller's role may view."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import weakref

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from engine.api.http import RUNTIME_KEY
from engine.auth import Principal
from engine.errors import EngineError
from engine.notifications import Listener, Notifier

log = logging.getLogger(f"attune.{__name__}")

PROTOCOL = "attune.v1"
TOKEN_PREFIX = "attune.jwt."  # noqa: S105 (a prefix, not a secret)
#: Longest subscription filter, and most filters one connection may hold.
MAX_FILTER = 200
MAX_FILTERS = 100
_ids = itertools.count(1)
#: The open notifier connections of an app, closed when the server stops (a browser tab left
#: open must not hold the HTTP server's shutdown for its whole timeout).
SOCKETS_KEY = web.AppKey("notifier_sockets", weakref.WeakSet[web.WebSocketResponse])


async def close_sockets(app: web.Application) -> None:
    """``on_shutdown``: close every notifier connection with 1001 (going away)."""
    for ws in list(app.get(SOCKETS_KEY, ())):
        with contextlib.suppress(Exception):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")


def _offered_token(request: web.Request) -> str | None:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    for item in (part.strip() for part in offered.split(",")):
        if item.startswith(TOKEN_PREFIX):
            return item[len(TOKEN_PREFIX) :]
    return None


class _Socket:
    """One writer at a time: the reader answers pings while the sender sends news."""

    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self._lock = asyncio.Lock()

    async def send(self, message: dict[str, object]) -> None:
        async with self._lock:
            await self.ws.send_str(orjson.dumps(message).decode())


async def _receive(ws: web.WebSocketResponse, out: _Socket, listener: Listener) -> None:
    async for msg in ws:
        if msg.type != WSMsgType.TEXT:
            continue
        try:
            message = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            await out.send({"type": "error", "message": "messages are JSON objects"})
            continue
        kind = message.get("type") if isinstance(message, dict) else None
        flt = message.get("filter") if isinstance(message, dict) else None
        if kind == "ping":
            await out.send({"type": "pong"})
        elif kind in ("subscribe", "unsubscribe") and isinstance(flt, str) and flt:
            if kind == "unsubscribe":
                listener.filters.discard(flt)
            elif len(flt) <= MAX_FILTER and len(listener.filters) < MAX_FILTERS:
                listener.filters.add(flt)
        else:
            await out.send({"type": "error", "message": "unknown message"})


async def _send(out: _Socket, listener: Listener, who: Principal, request: web.Request) -> None:
    policy = request.app[RUNTIME_KEY].gate.policy
    while True:
        note = await listener.queue.get()
        ref = note["payload"].get("action_ref", "")
        if note["entity_type"] == "execution" and not policy.allows(who.role, "view", ref):
            continue
        await out.send(note)


async def notifications(request: web.Request) -> web.StreamResponse:
    runtime = request.app[RUNTIME_KEY]
    notifier: Notifier | None = runtime.service.notifier
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), heartbeat=30.0, compress=False)
    await ws.prepare(request)
    request.app[SOCKETS_KEY].add(ws)
    token = _offered_token(request)
    try:
        if token is None:
            raise EngineError("no token offered")
        who = await runtime.auth.authenticate(token)
    except EngineError:
        await ws.close(code=1008, message=b"a valid access token is needed")
        return ws
    if notifier is None:
        await ws.close(code=1011, message=b"no notifications on this server")
        return ws
    listener = notifier.listen()
    client_id = f"client_{next(_ids)}"
    out = _Socket(ws)
    sender = asyncio.create_task(_send(out, listener, who, request))
    try:  # the connection is upgraded: a failure closes it, it never becomes an HTTP answer
        await out.send({"type": "welcome", "client_id": client_id, "message": "Connected"})
        await _receive(ws, out, listener)
    except ConnectionError:
        pass
    except Exception:
        log.exception("notifier connection %s failed", client_id)
        await ws.close(code=1011, message=b"internal error")
    finally:
        notifier.forget(listener)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await sender
    return ws
