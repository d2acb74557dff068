"""Slow requests time out (issue 12, hole 10): a client that trickles its headers or its body
(slowloris) loses its connection within the configured bounds instead of holding it for ever.

One ``attune serve`` (SQLite) for the module with 1 s header and body timeouts; the clients
are raw sockets that send a byte at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest

from bot.server import LINGER_S
from tests.e2e.conftest import Server, engine_env
from tests.scenario.harness import running_server

pytestmark = pytest.mark.e2e

HEADER_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
#: A trickling client gives up after this long: the server must have dropped it well before.
GIVE_UP_S = 15.0
TRICKLE_EVERY_S = 0.2


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-slow")
    env = engine_env(
        tmp,
        ATTUNE_HTTP_HEADER_TIMEOUT_S=str(HEADER_TIMEOUT_S),
        ATTUNE_HTTP_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


async def trickle(server: Server, head: bytes, drip: bytes) -> tuple[bytes, float]:
    """Send ``head`` at once, then ``drip`` a byte every 200 ms until the server answers or
    closes; return what it sent back and how long the connection lived."""
    address = urlsplit(server.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    started = time.monotonic()
    received = b""
    try:
        writer.write(head)
        await writer.drain()
        while time.monotonic() - started < GIVE_UP_S:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), TRICKLE_EVERY_S)
            except TimeoutError:
                try:
                    writer.write(drip)
                    await writer.drain()
                except ConnectionError:
                    break
                continue
            if not chunk:
                break  # closed by the server
            received += chunk
        else:
            pytest.fail(f"the server still held the trickling connection after {GIVE_UP_S} s")
        return received, time.monotonic() - started
    finally:
        writer.close()


async def test_trickled_headers_lose_the_connection(server: Server) -> None:
    received, lived = await trickle(server, b"GET /health HTTP/1.1\r\nHost: x\r\n", b"X")
    assert lived < HEADER_TIMEOUT_S + 3, lived
    assert b"200 OK" not in received, received


async def test_a_trickled_body_is_answered_408_and_closed(server: Server) -> None:
    head = (
        b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    received, lived = await trickle(server, head, b" ")
    assert lived < BODY_TIMEOUT_S + LINGER_S + 3, lived
    assert received.startswith(b"HTTP/1.1 408 "), received
    assert b"request body not received within 1 s" in received, received


async def test_a_route_named_stream_keeps_the_time_limits(server: Server) -> None:
    """Only the server-sent event routes live on without time limits, not any path ending in
    ``/stream``: a public webhook whose key is ``stream`` is bounded as any other request."""
    head = (
        b"POST /api/v1/webhooks/stream HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
    )
    received, lived = await trickle(server, head, b" ")
    assert lived < BODY_TIMEOUT_S + LINGER_S + 3, lived
    assert received.startswith(b"HTTP/1.1 408 "), received


def test_the_unbounded_routes_are_the_event_streams() -> None:
    from engine.api.app import ALL_ROUTES
    from engine.api.http import UNBOUNDED_ROUTES

    streams = {spec.path for spec in ALL_ROUTES if spec.path.endswith("/stream")}
    assert streams == UNBOUNDED_ROUTES


async def test_a_prompt_client_is_served(server: Server) -> None:
    address = urlsplit(server.base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    try:
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer
