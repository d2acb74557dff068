"""``core.http_request`` against a local HTTP server: Attune's parameters (query, JSON body,
auth, redirects, timeout) and Attune's result (status_code, headers, body, json, elapsed_ms,
url, success); an answer that is not a success completes unless ``expected_status`` says
otherwise, and a request that gets no answer fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from engine.outbound import OutboundPolicy
from engine.packs import BUILTIN_PACKS_DIR, load_pack
from engine.params import validate_parameters
from engine.runners import RunRequest, RunResult
from engine.runners.builtin import BuiltinRunner

ACTION = next(a for a in load_pack(BUILTIN_PACKS_DIR / "core").actions if a.name == "http_request")


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "method": request.method,
            "query": dict(request.query),
            "auth": request.headers.get("Authorization"),
            "agent": request.headers.get("User-Agent"),
            "body": await request.text(),
        }
    )


async def _missing(_request: web.Request) -> web.Response:
    return web.Response(status=404, text="nothing here")


async def _moved(_request: web.Request) -> web.Response:
    raise web.HTTPFound("/echo")


async def _slow(_request: web.Request) -> web.Response:
    await asyncio.sleep(5)
    return web.Response(text="late")


@pytest.fixture
async def base() -> AsyncIterator[str]:
    app = web.Application()
    app.add_routes(
        [
            web.route("*", "/echo", _echo),
            web.get("/missing", _missing),
            web.get("/moved", _moved),
            web.get("/slow", _slow),
        ]
    )
    server = TestServer(app)
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


#: The test server listens on loopback, which the default policy refuses (see test_outbound.py).
LOOPBACK = OutboundPolicy.from_ranges(["127.0.0.0/8"])


async def call(**params: Any) -> RunResult:
    valid = validate_parameters(ACTION.param_schema, params)
    return await BuiltinRunner(LOOPBACK).run(
        RunRequest(execution_id=1, action=ACTION, parameters=valid, timeout_s=10)
    )


async def test_get_with_query_headers_and_bearer_auth(base: str) -> None:
    result = await call(
        url=f"{base}/echo",
        query_params={"q": "a b", "n": 2},
        headers={"User-Agent": "Attune-Test/1.0"},
        auth_type="bearer",
        auth_token="tok",
    )
    assert result.outcome == "completed", result.error
    data = result.data
    assert (data["status_code"], data["success"]) == (200, True)
    assert data["json"] == {
        "method": "GET",
        "query": {"q": "a b", "n": "2"},
        "auth": "Bearer tok",
        "agent": "Attune-Test/1.0",
        "body": "",
    }
    assert set(data) >= {"headers", "body", "elapsed_ms", "url"}


async def test_post_json_body_and_basic_auth(base: str) -> None:
    result = await call(
        url=f"{base}/echo",
        method="POST",
        json_body={"ok": True},
        auth_type="basic",
        auth_username="u",
        auth_password="p",
    )
    echoed = result.data["json"]
    assert (echoed["method"], echoed["body"]) == ("POST", '{"ok": true}')
    assert echoed["auth"] == "Basic dTpw"


async def test_redirects_are_followed_unless_asked_not_to(base: str) -> None:
    followed = await call(url=f"{base}/moved")
    assert (followed.data["status_code"], followed.data["url"]) == (200, f"{base}/echo")
    stopped = await call(url=f"{base}/moved", follow_redirects=False)
    assert (stopped.data["status_code"], stopped.data["success"]) == (302, False)


async def test_an_error_status_completes_unsuccessful_unless_expected_status_refuses_it(
    base: str,
) -> None:
    result = await call(url=f"{base}/missing")
    assert result.outcome == "completed"
    assert (result.data["status_code"], result.data["success"]) == (404, False)
    assert result.data["body"] == "nothing here"
    refused = await call(url=f"{base}/missing", expected_status=[200])
    assert refused.outcome == "failed"
    assert refused.error == "HTTP 404 is not in expected_status"
    accepted = await call(url=f"{base}/missing", expected_status=[404])
    assert (accepted.outcome, accepted.data["success"]) == ("completed", True)


async def test_no_answer_fails_with_the_reason(base: str) -> None:
    late = await call(url=f"{base}/slow", timeout=1)
    assert (late.outcome, late.data["success"]) == ("failed", False)
    assert late.error == "no answer within 1 s"
    nowhere = await call(url="http://127.0.0.1:9/")
    assert nowhere.outcome == "failed"
    assert nowhere.error is not None
    assert nowhere.error == "could not connect"
    bad = await call(url="ftp://example/")
    assert bad.error == "url must be http or https, got 'ftp://example/'"
