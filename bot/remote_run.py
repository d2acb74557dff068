"""``attune run --url URL --token TOKEN``: run an action on a remote server over its REST API
(``POST /api/v1/executions/execute``) and, with ``--wait``, follow its change stream
(``GET /api/v1/executions/stream?execution_id=N``) until it ends. No database access."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from engine.status import TERMINAL as TERMINAL_STATUSES

#: Statuses an execution ends in.
TERMINAL = frozenset(s.value for s in TERMINAL_STATUSES)
#: Bound on connecting and on each plain request (the stream itself is bounded by --timeout).
REQUEST_TIMEOUT_S = 30.0
#: A stream that ends before the execution does is opened again this many times.
RECONNECTS = 5
#: Largest event accepted from the stream (an execution's result holds its output).
MAX_EVENT_BYTES = 64 * 1024 * 1024


class RemoteError(Exception):
    """A failure to show the user as is (no traceback), and the exit code it gives."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def check_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(f"--url must look like http://host:port, got '{url}'")
    return url.rstrip("/")


async def _error_of(resp: aiohttp.ClientResponse) -> str:
    text = await resp.text(errors="replace")
    with contextlib.suppress(ValueError):
        body = orjson.loads(text)
        if isinstance(body, dict) and isinstance(body.get("error"), str):
            return str(body["error"])
    return text.strip()[:200] or (resp.reason or "")


async def _refuse(resp: aiohttp.ClientResponse, url: str) -> RemoteError:
    error = await _error_of(resp)
    if resp.status == 401:
        return RemoteError(f"{url} refused the token (401: {error}); check --token or ATTUNE_TOKEN")
    if resp.status == 403:
        return RemoteError(f"not allowed (403): {error}")
    if resp.status == 404 and resp.content_type != "application/json":
        return RemoteError(f"{url}: 404 {error}: is this an Attune server?")
    return RemoteError(f"{error} ({resp.status})")


async def events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str | None, str]]:
    """The ``(id, data)`` of each server-sent event of ``resp`` (comments skipped)."""
    buffer = b""
    data: list[str] = []
    event_id: str | None = None
    async for chunk in resp.content.iter_any():
        buffer += chunk
        if len(buffer) > MAX_EVENT_BYTES:
            raise RemoteError(f"an event of the stream is over {MAX_EVENT_BYTES} bytes")
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", errors="replace").rstrip("\r")
            if not line:
                if data:
                    yield event_id, "\n".join(data)
                data = []
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                data.append(value)
            elif name == "id":
                event_id = value


class RemoteRun:
    """One ``attune run`` against a server."""

    def __init__(self, url: str, token: str) -> None:
        self.url = check_url(url)
        self.headers = {"Authorization": f"Bearer {token}"}

    def _session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=REQUEST_TIMEOUT_S, sock_connect=REQUEST_TIMEOUT_S
            ),
        )

    async def run(
        self,
        ref: str,
        params: dict[str, Any],
        *,
        wait: bool,
        timeout_s: float | None,
        show: Callable[[dict[str, Any], bool], None],
    ) -> dict[str, Any]:
        """Submit; with ``wait``, follow the stream until the execution ends (or
        ``timeout_s``: RemoteError with code 3). ``show(record, queued)`` prints."""
        try:
            async with self._session() as session:
                record = await self._submit(session, ref, params)
                if not wait:
                    show(record, True)
                    return record
                try:
                    async with asyncio.timeout(timeout_s):
                        record = await self._follow(session, record)
                except TimeoutError:
                    raise RemoteError(
                        f"execution {record['id']} is still {record['status']} after "
                        f"{timeout_s:g} s; follow it at {self.url}/api/v1/executions/"
                        f"{record['id']}",
                        3,
                    ) from None
                show(record, False)
                return record
        except aiohttp.ClientConnectorError as exc:
            reason = exc.os_error.strerror if exc.os_error and exc.os_error.strerror else exc
            raise RemoteError(f"cannot connect to {self.url}: {reason}") from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RemoteError(
                f"connection to {self.url} failed: {exc or type(exc).__name__}"
            ) from None

    async def _submit(
        self, session: aiohttp.ClientSession, ref: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async with session.post(
                f"{self.url}/api/v1/executions/execute",
                json={"action_ref": ref, "parameters": params},
            ) as resp:
                if resp.status != 201:
                    raise await _refuse(resp, self.url)
                body = await resp.json()
        record: dict[str, Any] = body["data"]
        return record

    async def _get(self, session: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async with session.get(f"{self.url}/api/v1/executions/{execution_id}") as resp:
                if resp.status != 200:
                    raise await _refuse(resp, self.url)
                body = await resp.json()
        record: dict[str, Any] = body["data"]
        return record

    async def _follow(
        self, session: aiohttp.ClientSession, record: dict[str, Any]
    ) -> dict[str, Any]:
        """The stream of this execution, then its state (the stream listens before its
        headers come, so nothing between the two is missed), then each event until it ends;
        a stream cut short is opened again with ``Last-Event-ID``."""
        execution_id = record["id"]
        last_id: str | None = None
        for _ in range(RECONNECTS + 1):
            headers = {"Last-Event-ID": last_id} if last_id else {}
            async with session.get(
                f"{self.url}/api/v1/executions/stream",
                params={"execution_id": str(execution_id)},
                headers=headers,
            ) as resp:
                if resp.status != 200:
                    raise await _refuse(resp, self.url)
                record = await self._get(session, execution_id)
                if record["status"] in TERMINAL:
                    return record
                async for event_id, data in events(resp):
                    last_id = event_id or last_id
                    try:
                        note = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise RemoteError(
                            f"{self.url} sent an event that is not JSON: {data[:80]!r}"
                        ) from None
                    if not isinstance(note, dict) or not isinstance(note.get("payload"), dict):
                        continue  # not an execution's notification
                    if note.get("entity_id") != execution_id:
                        continue
                    record = {
                        k: v
                        for k, v in note["payload"].items()
                        if k not in ("entity_type", "entity_id")
                    }
                    if record["status"] in TERMINAL:
                        return record
        raise RemoteError(f"the stream of {self.url} kept closing before execution ended")
