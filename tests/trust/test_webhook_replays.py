"""A signed webhook call cannot be replayed (issue 12, hole 8), against a real ``attune serve``.

A sender that adds ``X-Webhook-Timestamp`` signs ``<timestamp>.<body>``: the call is refused
outside ``ATTUNE_WEBHOOK_TOLERANCE_S`` of the server's clock, and the same signed call twice is
refused the second time. Senders that sign only the body keep working.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from engine.automation.webhooks import SeenCalls
from tests.e2e.conftest import Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import Answer, call

pytestmark = pytest.mark.e2e

TOLERANCE_S = 120


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-replays")
    env = engine_env(tmp, ATTUNE_WEBHOOK_TOLERANCE_S=str(TOLERANCE_S))
    async with running_server("serve", env, tmp) as srv:
        yield srv


def _sign(secret: str, message: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


async def _events(admin: aiohttp.ClientSession, ref: str) -> list[Any]:
    answer = await call(admin, "GET", "/api/v1/events", params={"trigger_ref": ref})
    return answer.items


async def test_a_timestamped_signed_call_is_not_replayed(server: Server) -> None:
    secret = "hmac-secret-" + uuid.uuid4().hex
    ref = f"core.hook_{uuid.uuid4().hex[:8]}"
    async with (
        client(server.base_url, await login(server.base_url)) as admin,
        client(server.base_url) as anon,
    ):
        made = await call(
            admin, "POST", "/api/v1/triggers", json={"ref": ref, "webhook_secret": secret}
        )
        assert made.status == 201, made.body
        enabled = await call(admin, "POST", f"/api/v1/triggers/{ref}/webhooks/enable")
        key = enabled.data["webhook_key"]

        async def post(raw: bytes, headers: dict[str, str]) -> Answer:
            return await call(anon, "POST", f"/api/v1/webhooks/{key}", data=raw, headers=headers)

        raw = json.dumps({"payload": {"deploy": "v1"}}).encode()
        stamp = str(int(time.time()))
        signed = {
            "X-Webhook-Timestamp": stamp,
            "X-Webhook-Signature": _sign(secret, stamp.encode() + b"." + raw),
        }
        first = await post(raw, signed)
        assert first.status == 200, first.body
        replayed = await post(raw, signed)
        assert replayed.status == 409, replayed.body
        assert "replay" in replayed.error, replayed.body

        old = str(int(time.time()) - 10 * TOLERANCE_S)
        stale = await post(
            raw,
            {
                "X-Webhook-Timestamp": old,
                "X-Webhook-Signature": _sign(secret, old.encode() + b"." + raw),
            },
        )
        assert stale.status == 401, stale.body
        assert "ATTUNE_WEBHOOK_TOLERANCE_S" in stale.error, stale.body
        # A timestamp the signature does not cover is refused (it cannot be swapped).
        swapped = await post(raw, {**signed, "X-Webhook-Timestamp": str(int(stamp) + 1)})
        assert swapped.status == 401, swapped.body
        body_only = await post(
            raw, {"X-Webhook-Timestamp": stamp, "X-Webhook-Signature": _sign(secret, raw)}
        )
        assert body_only.status == 401, body_only.body

        # A sender that signs only the body keeps working.
        plain = await post(raw, {"X-Webhook-Signature": _sign(secret, raw)})
        assert plain.status == 200, plain.body
        assert len(await _events(admin, ref)) == 2


def test_seen_calls_stay_bounded() -> None:
    seen = SeenCalls(tolerance_s=60.0, max_size=3)
    for n in range(5):
        seen.remember(f"call-{n}")
    assert [seen.seen(f"call-{n}") for n in range(5)] == [False, False, True, True, True]
