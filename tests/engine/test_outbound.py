"""Outbound requests (``core.http_request``, callbacks) do not reach loopback, link-local,
private or multicast addresses unless ``ATTUNE_OUTBOUND_ALLOW`` says so, on any redirect hop,
and their errors do not tell a closed port from an open one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from config.settings import load_settings
from engine.callbacks import CallbackSink
from engine.outbound import OutboundPolicy
from engine.outbox import Delivery, DeliveryFailed
from engine.packs import BUILTIN_PACKS_DIR, load_pack
from engine.params import validate_parameters
from engine.records import Execution, Route
from engine.runners import RunRequest, RunResult
from engine.runners.builtin import BuiltinRunner

ACTION = next(a for a in load_pack(BUILTIN_PACKS_DIR / "core").actions if a.name == "http_request")
DEFAULT = OutboundPolicy.from_ranges(load_settings(outbound_allow=[]).outbound_allow)
NOT_ALLOWED = "destination not allowed"
COULD_NOT_CONNECT = "could not connect"


async def call(policy: OutboundPolicy, **params: Any) -> RunResult:
    valid = validate_parameters(ACTION.param_schema, {"timeout": 5, **params})
    return await BuiltinRunner(policy).run(
        RunRequest(execution_id=1, action=ACTION, parameters=valid, timeout_s=10)
    )


@pytest.fixture
async def server() -> AsyncIterator[TestServer]:
    """A server on 127.0.0.2 whose ``/to?url=`` redirects anywhere."""

    async def ok(_request: web.Request) -> web.Response:
        return web.Response(text="secret inside")

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["url"])

    app = web.Application()
    app.add_routes([web.get("/ok", ok), web.get("/to", to)])
    srv = TestServer(app, host="127.0.0.2")
    await srv.start_server()
    yield srv
    await srv.close()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:{port}/ok",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://[::1]:{port}/ok",
        "http://localhost:{port}/ok",
        "http://224.0.0.1/",
        "http://0.0.0.0:{port}/ok",
    ],
)
async def test_forbidden_destinations_are_refused_by_default(server: TestServer, url: str) -> None:
    result = await call(DEFAULT, url=url.format(port=server.port))
    assert (result.outcome, result.error) == ("failed", NOT_ALLOWED)
    assert result.data["status_code"] == 0
    assert result.data["success"] is False
    assert set(result.data) >= {"headers", "body", "json", "elapsed_ms", "url"}


async def test_the_allow_list_lets_a_range_through(server: TestServer) -> None:
    settings = load_settings(outbound_allow=["127.0.0.0/8"])
    allowed = OutboundPolicy.from_ranges(settings.outbound_allow)
    result = await call(allowed, url=f"http://127.0.0.2:{server.port}/ok")
    assert (result.outcome, result.data["status_code"], result.stdout) == (
        "completed",
        200,
        "secret inside",
    )
    policy = OutboundPolicy.from_ranges(["169.254.0.0/16", "10.0.0.0/8", "::1/128"])
    assert all(policy.allows(a) for a in ("169.254.169.254", "10.0.0.1", "::1"))
    assert not policy.allows("127.0.0.1")
    assert not DEFAULT.allows("::ffff:127.0.0.1")
    assert DEFAULT.allows("93.184.216.34")


def test_the_setting_takes_cidr_ranges_only() -> None:
    with pytest.raises(ValueError, match="CIDR"):
        load_settings(outbound_allow=["not-a-range"])


@pytest.mark.parametrize("target", ["http://127.0.0.1:{port}/ok", "http://localhost:{port}/ok"])
async def test_a_redirect_to_loopback_is_refused(server: TestServer, target: str) -> None:
    only_server = OutboundPolicy.from_ranges(["127.0.0.2/32"])
    url = target.format(port=server.port)
    result = await call(
        only_server, url=f"http://127.0.0.2:{server.port}/to", query_params={"url": url}
    )
    assert (result.outcome, result.error, result.stdout) == ("failed", NOT_ALLOWED, "")


async def test_closed_and_open_ports_look_alike(server: TestServer) -> None:
    # Refused addresses: an open port and a closed one give the same answer.
    open_port = await call(DEFAULT, url=f"http://127.0.0.2:{server.port}/ok")
    closed_port = await call(DEFAULT, url="http://127.0.0.2:9/")
    assert open_port.error == closed_port.error == NOT_ALLOWED
    # Allowed addresses: a closed port and an unknown host give one generic answer.
    allowed = OutboundPolicy.from_ranges(["127.0.0.0/8"])
    closed = await call(allowed, url="http://127.0.0.2:9/")
    unknown = await call(allowed, url="http://no-such-host.invalid/")
    assert closed.error == unknown.error == COULD_NOT_CONNECT
    assert closed.data["status_code"] == unknown.data["status_code"] == 0


async def test_a_callback_to_loopback_fails_with_the_generic_reason(server: TestServer) -> None:
    when = datetime(2026, 11, 27, tzinfo=UTC)
    delivery = Delivery(
        id=1,
        execution_id=7,
        target="callback",
        event="completed",
        attempts=0,
        state="sending",
        last_error=None,
        created=when,
        next_attempt_at=when,
        delivered_at=None,
    )
    execution = Execution(7, "core.noop", "completed", {}, None, None, None, when, when, None,
                          None, None, {})  # fmt: skip
    for url in (f"http://127.0.0.2:{server.port}/ok", f"http://localhost:{server.port}/ok?t=x"):
        sink = CallbackSink(b"k", policy=DEFAULT)
        try:
            with pytest.raises(DeliveryFailed) as failed:
                await sink.deliver(delivery, execution, Route(chat=None, callback_url=url))
        finally:
            await sink.close()
        assert failed.value.message.endswith(": " + NOT_ALLOWED)
        assert failed.value.permanent
        assert "t=x" not in failed.value.message
    allowed = CallbackSink(b"k", policy=OutboundPolicy.from_ranges(["127.0.0.0/8"]))
    try:
        with pytest.raises(DeliveryFailed) as closed:
            await allowed.deliver(
                delivery, execution, Route(chat=None, callback_url="http://127.0.0.2:9/")
            )
    finally:
        await allowed.close()
    assert closed.value.message == "POST http://127.0.0.2:9/: " + COULD_NOT_CONNECT
