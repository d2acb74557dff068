"""Live output over the API, in-process (one runtime per backend, real HTTP, its own worker):
``GET /api/v1/executions/{id}/logs/{stream}`` and its server-sent events stream, while the
action runs and after, who may read it, what bad input is told, and a client too slow to read.

The embedded and the cluster deployments over ``attune serve`` are in
tests/e2e/test_live_output.py."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.runtime import Runtime, build_runtime
from tests.e2e.conftest import _fresh_postgres_database
from tests.sse_client import SseReader
from tests.waiting import eventually

LIVE_PACK = Path(__file__).resolve().parents[1] / "fixtures" / "packs" / "live_pack"
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
CAP_BYTES = 4096
RUN_TIMEOUT_S = 20.0
HANDLER_TIMEOUT_S = 1.0


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]

    def headers(self, who: str | None = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}

    async def call(self, path: str, who: str | None = "admin") -> tuple[int, Any]:
        async with self.session.get(self.url + path, headers=self.headers(who)) as resp:
            return resp.status, await resp.json()

    async def start(self, action_ref: str, **params: Any) -> int:
        body = {"action_ref": action_ref, "parameters": params}
        async with self.session.post(
            self.url + "/api/v1/executions/execute", json=body, headers=self.headers()
        ) as resp:
            found = await resp.json()
            assert resp.status == 201, found
            return int(found["data"]["id"])

    async def open_log_streams(self) -> int:
        """``attune_streams_open{kind="logs"}`` on ``/metrics``."""
        async with self.session.get(self.url + "/metrics", headers=self.headers()) as resp:
            text = await resp.text()
        found = re.search(r'attune_streams_open\{kind="logs"\} (\d+)', text)
        return int(float(found.group(1))) if found else 0

    async def execution(self, execution_id: int) -> dict[str, Any]:
        status, body = await self.call(f"/api/v1/executions/{execution_id}")
        assert status == 200, body
        return dict(body["data"])

    async def ended(self, execution_id: int) -> dict[str, Any]:
        return await eventually(
            lambda: self.execution(execution_id),
            f"execution {execution_id} to end",
            RUN_TIMEOUT_S,
            interval_s=0.05,
            done=lambda r: r["status"] in TERMINAL,
        )

    async def read_all(self, execution_id: int, stream: str = "stdout", limit: int = 0) -> str:
        """Tail with ``offset=next_offset`` until the run ended and nothing is left."""
        offset, parts = 0, []
        query = f"&limit={limit}" if limit else ""

        async def step() -> bool:
            nonlocal offset
            status, body = await self.call(
                f"/api/v1/executions/{execution_id}/logs/{stream}?offset={offset}{query}"
            )
            assert status == 200, body
            piece = body["data"]
            assert piece["offset"] == offset
            parts.append(piece["content"])
            offset = piece["next_offset"]
            return not piece["running"] and piece["next_offset"] == piece["offset"]

        await eventually(step, "the whole output", RUN_TIMEOUT_S, interval_s=0.02)
        return "".join(parts)


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp(f"live-{request.param}")
    (tmp / "packs").mkdir()
    url_cm = None
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp / 'live.db'}"
    else:
        url_cm = _fresh_postgres_database()
        database_url = await url_cm.__aenter__()
    rt = await build_runtime(
        Settings(
            database_url=database_url,
            database_pool_size=3,
            data_dir=tmp / "data",
            packs_path=str(tmp / "packs"),
            admin_login="admin",
            admin_password="admin-password-1",
            kill_grace_s=1,
            output_cap_bytes=CAP_BYTES,
            permissions={"viewer": {"view": ["core.*"]}},
            # Shorter than a followed run: a log stream is not cut by the handler time limit.
            http_handler_timeout_s=HANDLER_TIMEOUT_S,
        )
    )
    await rt.register_pack(LIVE_PACK)
    server = TestServer(build_app(rt))
    await server.start_server()
    await rt.start_worker(worker_id="live-test")
    tokens = {"admin": await rt.auth.issue_token("admin", name="t", ttl_s=3600)}
    await rt.auth.create_user("vic", "password-123", "viewer")
    tokens["vic"] = await rt.auth.issue_token("vic", name="t", ttl_s=3600)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        yield Env(rt, str(server.make_url("")).rstrip("/"), session, tokens)
    finally:
        await session.close()
        await server.close()
        await rt.close()
        if url_cm is not None:
            await url_cm.__aexit__(None, None, None)


async def test_output_is_readable_while_the_run_lasts_and_equals_the_result(env: Env) -> None:
    execution_id = await env.start("live_pack.ticker", lines=10, interval_ms=200)
    path = f"/api/v1/executions/{execution_id}/logs/stdout"

    async def first_line() -> dict[str, Any] | None:
        status, body = await env.call(path)
        assert status == 200, body
        return body["data"] if "tick 0" in body["data"]["content"] else None

    piece = await eventually(first_line, "the first line over the API", RUN_TIMEOUT_S)
    assert piece["running"] is True
    assert (await env.execution(execution_id))["status"] == "running"
    assert set(piece) == {
        "execution_id", "stream", "content", "offset", "next_offset", "running", "truncated",
    }  # fmt: skip
    assert (piece["execution_id"], piece["stream"], piece["offset"]) == (execution_id, "stdout", 0)
    assert piece["next_offset"] == len(piece["content"].encode())

    text = await env.read_all(execution_id, limit=7)  # small pieces: cut between characters
    record = await env.ended(execution_id)
    assert record["status"] == "completed"
    assert text == record["result"]["stdout"] == "".join(f"tick {i} ✓\n" for i in range(10))
    assert await env.read_all(execution_id, "stderr") == "ticker done\n"
    # The chunks went with the end of the run: the result holds the output.
    assert await env.rt.live_output.repository.read(execution_id, "stdout", 0, 10) == []


async def test_the_stream_follows_the_run_then_says_done(env: Env) -> None:
    execution_id = await env.start("live_pack.ticker", lines=8, interval_ms=200)  # 1.6 s
    url = f"{env.url}/api/v1/executions/{execution_id}/logs/stdout/stream"
    received, events = [], []
    async with env.session.get(url, headers=env.headers()) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        reader = SseReader(resp)
        first_seen_running = None
        while (event := await reader.next(RUN_TIMEOUT_S)) is not None:
            events.append(event)
            if event.event in ("content", "append"):
                received.append(event.data)
                assert event.id == str(len("".join(received).encode()))
                if first_seen_running is None:
                    status = (await env.execution(execution_id))["status"]
                    first_seen_running = status not in TERMINAL
                    assert await env.open_log_streams() == 1
            if event.event == "done":
                break
    assert first_seen_running is True
    await eventually(env.open_log_streams, "the stream uncounted", 5.0, done=lambda n: n == 0)
    assert events[0].event == "waiting"
    assert events[-1].event == "done"
    assert any(e.event == "append" for e in events)
    assert any("initial-catchup-complete" in e.comments for e in events)
    record = await env.ended(execution_id)
    assert "".join(received) == record["result"]["stdout"]


async def test_last_event_id_resumes_and_the_cap_holds(env: Env) -> None:
    execution_id = await env.start("live_pack.ticker", lines=2, interval_ms=0, flood_bytes=20000)
    record = await env.ended(execution_id)
    stdout = record["result"]["stdout"]
    assert len(stdout.encode()) == CAP_BYTES
    assert record["result"]["stdout_truncated"] is True
    status, body = await env.call(f"/api/v1/executions/{execution_id}/logs/stdout")
    assert status == 200, body
    assert body["data"]["truncated"] is True
    assert await env.read_all(execution_id) == stdout

    resume = 10
    url = f"{env.url}/api/v1/executions/{execution_id}/logs/stdout/stream?offset=3"
    headers = {**env.headers(), "Last-Event-ID": str(resume)}
    async with env.session.get(url, headers=headers) as resp:
        assert resp.status == 200
        reader = SseReader(resp)
        got = []
        while (event := await reader.next()) is not None and event.event != "done":
            if event.event == "content":
                got.append(event.data)
    assert "".join(got) == stdout.encode()[resume:].decode()


async def test_bad_input_and_who_may_read(env: Env) -> None:
    execution_id = await env.start("live_pack.ticker", lines=1, interval_ms=0)
    await env.ended(execution_id)
    base = f"/api/v1/executions/{execution_id}/logs"
    for path, what in [
        (f"{base}/stdin", "'stdin'"),
        (f"{base}/stdin/stream", "'stdin'"),
        (f"{base}/stdout?offset=-1", "'offset'"),
        (f"{base}/stdout?offset=abc", "'offset'"),
        (f"{base}/stdout?limit=0", "'limit'"),
        ("/api/v1/executions/nope/logs/stdout", "id"),
    ]:
        status, body = await env.call(path)
        assert status == 400, (path, body)
        assert what in body["error"], (path, body)
    async with env.session.get(
        f"{env.url}{base}/stdout/stream", headers={**env.headers(), "Last-Event-ID": "x"}
    ) as resp:
        assert resp.status == 400
        assert "Last-Event-ID" in (await resp.json())["error"]

    for path in (f"{base}/stdout", f"{base}/stdout/stream"):
        status, body = await env.call(path, who=None)
        assert status == 401, body
        # The viewer may view core.* only: not told this execution exists.
        status, body = await env.call(path, who="vic")
        assert status == 404, body
        status, body = await env.call(path.replace(str(execution_id), "987654"))
        assert status == 404, body
        assert body["error"] == "execution 987654 not found"


async def test_the_openapi_document_lists_both_routes(env: Env) -> None:
    status, doc = await env.call("/api/v1/openapi.json", who=None)
    assert status == 200
    read = doc["paths"]["/api/v1/executions/{id}/logs/{stream}"]["get"]
    assert {p["name"] for p in read["parameters"]} == {"id", "stream", "offset", "limit"}
    assert {"200", "400", "401", "404"} <= set(read["responses"])
    follow = doc["paths"]["/api/v1/executions/{id}/logs/{stream}/stream"]["get"]
    assert "Last-Event-ID" in {p["name"] for p in follow["parameters"]}


async def test_a_client_that_does_not_read_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """8 MiB of output to a client that reads nothing: the server's writes stall, and after
    the send time limit it drops the client instead of holding the rest for it."""
    monkeypatch.setattr("engine.api.log_routes.SEND_TIMEOUT_S", 0.5)
    size = 8 * 1024 * 1024
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'slow.db'}",
            data_dir=tmp_path / "data",
            packs_path=str(tmp_path),
            admin_login="admin",
            admin_password="admin-password-1",
            output_cap_bytes=size,
        )
    )
    server = TestServer(build_app(rt))
    sock = socket.socket()
    try:
        await rt.register_pack(LIVE_PACK)
        await server.start_server()
        await rt.start_worker(worker_id="slow-test")
        token = await rt.auth.issue_token("admin", name="t", ttl_s=3600)
        async with aiohttp.ClientSession() as session:
            env = Env(rt, str(server.make_url("")).rstrip("/"), session, {"admin": token})
            execution_id = await env.start("live_pack.ticker", lines=0, flood_bytes=size)
            assert (await env.ended(execution_id))["status"] == "completed"
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", server.port or 0))
        request = (
            f"GET /api/v1/executions/{execution_id}/logs/stdout/stream HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        with caplog.at_level(logging.INFO, logger="attune.engine.api.log_routes"):
            await eventually(
                lambda: "client gone or too slow" in caplog.text,
                "the server to give up on the client",
                15.0,
                interval_s=0.05,
            )
        received = 0

        def drained() -> bool:
            nonlocal received
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                return False
            except ConnectionResetError:
                return True
            received += len(data)
            return data == b""

        await eventually(drained, "the connection to be closed", 10.0, interval_s=0.01)
        assert received < size  # the rest was not kept for the client
    finally:
        sock.close()
        await server.close()
        await rt.close()
