"""A local stand-in of Slack, run inside the test process on a free port.

It answers the parts of Slack the bot talks to, records every request, and can be scripted to
fail:

- the Web API, ``POST /api/<method>`` (form-encoded, JSON or query-string parameters, as
  ``slack_sdk`` sends them): ``auth.test``, ``chat.postMessage``, ``chat.update``,
  ``files.getUploadURLExternal``, ``files.completeUploadExternal``, ``files.info`` and
  ``apps.connections.open``;
- the upload URL handed out by ``files.getUploadURLExternal``, ``POST /upload/<file_id>``;
- a slash command's ``response_url``, ``POST /response/<key>``;
- a callback receiver for ``callback_url`` deliveries, ``POST /hook/<name>``;
- the Socket Mode WebSocket, ``GET /ws`` (it says ``hello`` on connect, records what the app
  sends, such as acks, and lets a test push envelopes).

Faults: :meth:`SlackStandIn.queue` scripts the next answers of a method (optionally only for one
channel, response key or hook name), :meth:`SlackStandIn.always` answers every matching call the
same way until removed. Every request is recorded as a :class:`Call`, the faulted ones too.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from aiohttp import WSMsgType, web

TEAM_ID = "T0SCENARIO"
BOT_USER_ID = "UBOTSCEN"
BOT_ID = "BBOTSCEN"
APP_ID = "ASCENARIO"


@dataclass(frozen=True)
class Canned:
    """One scripted answer: status, body (a dict is sent as JSON, a str as is) and headers."""

    status: int = 200
    body: dict[str, Any] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    #: Hold the answer this long (or until :meth:`SlackStandIn.release_held`): a slow Slack.
    delay_s: float = 0.0

    @classmethod
    def held(cls, seconds: float = 30.0) -> Canned:
        """A normal answer that comes only after ``seconds`` (or when released)."""
        return cls(delay_s=seconds)

    @classmethod
    def error(cls, error: str, status: int = 200) -> Canned:
        """Slack's usual failure: HTTP 200 with ``{"ok": false, "error": ...}``."""
        return cls(status, {"ok": False, "error": error})

    @classmethod
    def rate_limited(cls, retry_after_s: int = 1) -> Canned:
        return cls(429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(retry_after_s)})

    @classmethod
    def server_error(cls, status: int = 500) -> Canned:
        """A 5xx as Slack's edge sends it: an HTML page, not JSON."""
        return cls(status, "<html><body>Internal Server Error</body></html>", {}, "text/html")

    @classmethod
    def status_only(cls, status: int) -> Canned:
        """For the callback receiver and response URLs: a bare status with a short text."""
        return cls(status, f"HTTP {status}", {}, "text/plain")


@dataclass
class Call:
    """One request the stand-in received."""

    method: str  # an API method, or "upload", "response_url", "hook", "ws"
    params: dict[str, Any]
    headers: dict[str, str]
    path: str
    body: bytes
    at: float  # time.monotonic()
    status: int = 0
    response: dict[str, Any] | str | None = None

    @property
    def ok(self) -> bool:
        """Answered with success (2xx, and ``ok: true`` for API methods)."""
        if not 200 <= self.status < 300:
            return False
        if isinstance(self.response, dict) and "ok" in self.response:
            return bool(self.response["ok"])
        return True

    @property
    def target(self) -> str | None:
        """The channel of a chat call, or the key of a response URL, hook or upload."""
        if self.method in {"upload", "response_url", "hook"}:
            return self.path.rstrip("/").rsplit("/", 1)[-1]
        channel = self.params.get("channel") or self.params.get("channel_id")
        return str(channel) if channel is not None else None

    @property
    def blocks(self) -> list[dict[str, Any]]:
        blocks = self.params.get("blocks") or []
        if isinstance(blocks, str):  # form-encoded requests carry blocks as a JSON string
            blocks = json.loads(blocks)
        return list(blocks)

    def block_texts(self) -> list[str]:
        """The text of each block (all its text fields, joined)."""
        return ["\n".join(_texts(block)) for block in self.blocks]

    def all_text(self) -> str:
        """The fallback text and every text of every block."""
        return "\n".join([str(self.params.get("text") or ""), *self.block_texts()])

    def json(self) -> Any:
        return json.loads(self.body)


def _texts(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "text" and isinstance(value, str):
                yield value
            else:
                yield from _texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from _texts(item)


@dataclass
class Fault:
    """Scripted answers for calls whose method matches ``method`` (a glob such as ``chat.*``)
    and, when given, whose :attr:`Call.target` is ``target``."""

    method: str
    target: str | None
    responses: deque[Canned] | None  # answered in turn; None: ``sticky`` forever
    sticky: Canned | None = None
    #: Only calls for which this holds (None: any).
    where: Callable[[Call], bool] | None = None

    def matches(self, call: Call) -> bool:
        if not fnmatchcase(call.method, self.method):
            return False
        if self.target is not None and call.target != self.target:
            return False
        return self.where is None or self.where(call)

    def take(self) -> Canned | None:
        if self.responses is None:
            return self.sticky
        return self.responses.popleft() if self.responses else None


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.faults: list[Fault] = []
        self.files: dict[str, dict[str, Any]] = {}
        #: Bytes uploaded to each file's upload URL.
        self.uploads: dict[str, bytes] = {}
        self.sockets: list[web.WebSocketResponse] = []
        #: Messages the app sent over the WebSocket (acks), parsed, with their arrival time.
        self.ws_received: list[tuple[float, dict[str, Any]]] = []
        self._ts = itertools.count(100, 100)
        self._file_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._released = asyncio.Event()
        self.port = 0

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> SlackStandIn:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_post("/upload/{file_id}", self._upload)
        app.router.add_post("/response/{key}", self._response_url)
        app.router.add_post("/hook/{name}", self._hook)
        app.router.add_get("/ws", self._ws)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def close(self) -> None:
        self.release_held()
        await self.close_sockets()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def close_sockets(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        """What ``ATTUNE_SLACK_API_URL`` points at."""
        return f"{self.base_url}/api/"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def response_url(self, key: str) -> str:
        return f"{self.base_url}/response/{key}"

    def hook_url(self, name: str) -> str:
        return f"{self.base_url}/hook/{name}"

    # -- scripting ----------------------------------------------------------------------------

    def queue(
        self,
        method: str,
        *responses: Canned,
        target: str | None = None,
        where: Callable[[Call], bool] | None = None,
    ) -> Fault:
        """The next matching calls (``where``: only those it holds for) get ``responses`` in
        turn, then normal answers again."""
        fault = Fault(method, target, deque(responses), where=where)
        self.faults.append(fault)
        return fault

    def always(self, method: str, response: Canned, *, target: str | None = None) -> Fault:
        """Every matching call gets ``response`` until :meth:`remove` is called."""
        fault = Fault(method, target, None, response)
        self.faults.append(fault)
        return fault

    def release_held(self) -> None:
        """Let every held answer go now."""
        self._released.set()

    def remove(self, fault: Fault) -> None:
        with contextlib.suppress(ValueError):
            self.faults.remove(fault)

    def _scripted(self, call: Call) -> Canned | None:
        for fault in self.faults:
            if fault.matches(call):
                canned = fault.take()
                if canned is not None:
                    return canned
        return None

    # -- queries ------------------------------------------------------------------------------

    def find(
        self,
        method: str,
        *,
        target: str | None = None,
        ok: bool | None = None,
        where: Callable[[Call], bool] | None = None,
    ) -> list[Call]:
        return [
            c
            for c in self.calls
            if fnmatchcase(c.method, method)
            and (target is None or c.target == target)
            and (ok is None or c.ok == ok)
            and (where is None or where(c))
        ]

    # -- handlers -----------------------------------------------------------------------------

    async def _record(self, request: web.Request, method: str) -> Call:
        body = await request.read()
        params: dict[str, Any] = dict(request.query)
        ctype = request.content_type
        if body and ctype == "application/json":
            params.update(json.loads(body))
        elif body and ctype in {"application/x-www-form-urlencoded", "multipart/form-data"}:
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        call = Call(
            method=method,
            params=params,
            headers=dict(request.headers),
            path=request.path,
            body=body,
            at=time.monotonic(),
        )
        self.calls.append(call)
        return call

    @staticmethod
    def _answer(call: Call, canned: Canned) -> web.Response:
        call.status = canned.status
        call.response = canned.body
        text = json.dumps(canned.body) if isinstance(canned.body, dict) else canned.body or ""
        return web.Response(
            status=canned.status,
            text=text,
            headers=canned.headers,
            content_type=canned.content_type,
        )

    async def _api(self, request: web.Request) -> web.Response:
        call = await self._record(request, request.match_info["method"])
        canned = self._scripted(call)
        if canned is not None and canned.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), canned.delay_s)
            if canned.body is None:
                canned = None
        return self._answer(call, canned or Canned(200, self._normal(call)))

    def _next_ts(self) -> str:
        return f"1700000000.{next(self._ts):06d}"

    def _normal(self, call: Call) -> dict[str, Any]:
        p = call.params
        match call.method:
            case "auth.test":
                return {
                    "ok": True,
                    "url": "https://scenario.slack.example/",
                    "team": "Scenario",
                    "user": "attune",
                    "team_id": TEAM_ID,
                    "user_id": BOT_USER_ID,
                    "bot_id": BOT_ID,
                    "is_enterprise_install": False,
                }
            case "chat.postMessage":
                ts = self._next_ts()
                message = {
                    "type": "message",
                    "user": BOT_USER_ID,
                    "bot_id": BOT_ID,
                    "text": p.get("text", ""),
                    "ts": ts,
                }
                if p.get("blocks"):
                    message["blocks"] = call.blocks
                if p.get("thread_ts"):
                    message["thread_ts"] = p["thread_ts"]
                return {"ok": True, "channel": p.get("channel"), "ts": ts, "message": message}
            case "chat.postEphemeral":
                return {"ok": True, "message_ts": self._next_ts()}
            case "chat.update":
                return {
                    "ok": True,
                    "channel": p.get("channel"),
                    "ts": p.get("ts"),
                    "text": p.get("text", ""),
                    "message": {"text": p.get("text", ""), "blocks": call.blocks},
                }
            case "files.getUploadURLExternal":
                file_id = f"F{next(self._file_ids):08d}"
                self.files[file_id] = {
                    "id": file_id,
                    "name": p.get("filename"),
                    "length": int(p.get("length") or 0),
                }
                return {
                    "ok": True,
                    "upload_url": f"{self.base_url}/upload/{file_id}",
                    "file_id": file_id,
                }
            case "files.completeUploadExternal":
                items = p.get("files") or "[]"
                items = json.loads(items) if isinstance(items, str) else items
                shared = []
                for item in items:
                    info = self.files.setdefault(item["id"], {"id": item["id"]})
                    info["title"] = item.get("title")
                    info["channel"] = p.get("channel_id")
                    info["thread_ts"] = p.get("thread_ts")
                    shared.append(dict(info))
                return {"ok": True, "files": shared}
            case "files.info":
                info = self.files.get(str(p.get("file")))
                if info is None:
                    return {"ok": False, "error": "file_not_found"}
                return {"ok": True, "file": info}
            case "views.open":
                view = p.get("view") or "{}"
                view = json.loads(view) if isinstance(view, str) else view
                return {"ok": True, "view": {"id": f"V{self._next_ts()}", **view}}
            case "apps.connections.open":
                return {"ok": True, "url": self.ws_url}
        return {"ok": False, "error": "unknown_method"}

    async def _upload(self, request: web.Request) -> web.Response:
        call = await self._record(request, "upload")
        canned = self._scripted(call)
        if canned is None:
            self.uploads[request.match_info["file_id"]] = call.body
            canned = Canned(200, f"OK - {len(call.body)}", {}, "text/plain")
        return self._answer(call, canned)

    async def _response_url(self, request: web.Request) -> web.Response:
        call = await self._record(request, "response_url")
        return self._answer(call, self._scripted(call) or Canned(200, {"ok": True}))

    async def _hook(self, request: web.Request) -> web.Response:
        call = await self._record(request, "hook")
        return self._answer(call, self._scripted(call) or Canned.status_only(200))

    # -- Socket Mode --------------------------------------------------------------------------

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        call = await self._record(request, "ws")
        call.status = 101
        ws = web.WebSocketResponse(autoping=True)  # pongs the SDK's "sdk-ping-pong:<t>" pings
        await ws.prepare(request)
        self.sockets.append(ws)
        try:
            await ws.send_json(
                {
                    "type": "hello",
                    "num_connections": len(self.sockets),
                    "debug_info": {
                        "host": "applink-scenario",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": APP_ID},
                }
            )
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        self.ws_received.append((time.monotonic(), json.loads(msg.data)))
        finally:
            self.sockets.remove(ws)
        return ws

    async def send_envelope(self, envelope: dict[str, Any]) -> None:
        """Push an envelope to the most recent open WebSocket."""
        open_sockets = [ws for ws in self.sockets if not ws.closed]
        if not open_sockets:
            raise AssertionError("no Socket Mode connection is open")
        await open_sockets[-1].send_json(envelope)

    def acks(self, envelope_id: str) -> list[dict[str, Any]]:
        return [m for _, m in self.ws_received if m.get("envelope_id") == envelope_id]


async def started() -> SlackStandIn:
    return await SlackStandIn().start()
