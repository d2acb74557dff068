"""Malformed requests to ``POST /slack/events`` (issue 12, hole 9): a body Bolt cannot parse,
signed or not, is refused with 401 (unsigned) or 400, never a 500 and never a traceback in the
server's log."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.conftest import Server
from tests.scenario.harness import SIGNING_SECRET, running_server, scenario_env
from tests.scenario.slack_standin import SlackStandIn

pytestmark = pytest.mark.e2e

FORM = "application/x-www-form-urlencoded"
#: Bodies Bolt cannot parse: interactivity payloads that are not JSON, bytes that are not UTF-8.
MALFORMED = [
    ("payload=%7Bnot-json", FORM),
    ("payload=" + "%5B" * 50, FORM),
    ("payload=%5B1%5D", FORM),
    ("payload=42", FORM),
    ("[1, 2]", "application/json"),
    ("{not json", "application/json"),
    (b"\xff\xfe\x00garbage", FORM),
    (b"\xff\xfe\x00garbage", "application/json"),
]


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("slack-malformed")
    async with running_server("serve", scenario_env(tmp, standin), tmp) as srv:
        yield srv


@pytest.mark.parametrize(("body", "content_type"), MALFORMED)
async def test_an_unsigned_malformed_body_is_401_without_a_traceback(
    server: Server, body: str | bytes, content_type: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.base_url}/slack/events", data=body, headers={"Content-Type": content_type}
        ) as resp,
    ):
        assert resp.status == 401, await resp.text()
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize(("body", "content_type"), MALFORMED)
async def test_a_signed_malformed_body_is_400_without_a_traceback(
    server: Server, body: str | bytes, content_type: str
) -> None:
    raw = body.encode() if isinstance(body, str) else body
    ts = str(int(time.time()))
    mac = hmac.new(SIGNING_SECRET.encode(), b"v0:" + ts.encode() + b":" + raw, hashlib.sha256)
    headers = {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": "v0=" + mac.hexdigest(),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/slack/events", data=raw, headers=headers) as resp,
    ):
        assert resp.status == 400, await resp.text()
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize("timestamp", ["not-a-number", "", "1e9", "9" * 40])
async def test_a_bad_timestamp_header_is_401_without_a_traceback(
    server: Server, timestamp: str
) -> None:
    headers = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": "v0=" + "0" * 64,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.base_url}/slack/events", data="command=%2Fattune&text=help", headers=headers
        ) as resp,
    ):
        assert resp.status == 401, await resp.text()
    assert "Traceback" not in server.logs()


@pytest.mark.parametrize("body", ["command=%2Fattune&text=help", "payload=%7Bnot-json"])
async def test_a_signature_that_is_not_ascii_is_401_without_a_traceback(
    server: Server, body: str
) -> None:
    headers = {
        "Content-Type": FORM,
        "X-Slack-Request-Timestamp": str(int(time.time())),
        "X-Slack-Signature": "v0=é",
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/slack/events", data=body, headers=headers) as resp,
    ):
        assert resp.status == 401, await resp.text()
    assert "Traceback" not in server.logs()
