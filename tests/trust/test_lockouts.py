"""Nobody locks out someone else (issue 12, hole 7), against a real ``attune serve``.

A caller without a trigger's HMAC secret cannot spend the signed sender's webhook rate limit;
password guessing from one address backs that address off for the login, but the login's
owner elsewhere still gets in; only many addresses together lock a login (a looser limit).
Clients come from different loopback addresses (127.0.0.x) to the server on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from engine import auth
from engine.errors import TooManyRequests
from tests.e2e.conftest import ADMIN_LOGIN, ADMIN_PASSWORD, Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import Answer, call

pytestmark = pytest.mark.e2e

MAX_FAILURES = 3
WINDOW_S = 60
#: Failures of one login, all addresses together, before it is locked (the looser limit).
LOGIN_LIMIT = MAX_FAILURES * 10
RATE_PER_S = 1  # burst 2 per key


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-lockouts")
    env = engine_env(
        tmp,
        ATTUNE_LOGIN_MAX_FAILURES=str(MAX_FAILURES),
        ATTUNE_LOGIN_WINDOW_S=str(WINDOW_S),
        ATTUNE_WEBHOOK_RATE_PER_S=str(RATE_PER_S),
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


async def _login_from(server: Server, address: str, login_name: str, password: str) -> Answer:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(base_url=server.base_url, connector=connector) as session:
        return await call(
            session, "POST", "/auth/login", json={"login": login_name, "password": password}
        )


def _sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_unsigned_calls_do_not_spend_the_signed_senders_rate(server: Server) -> None:
    secret = "hmac-secret-" + uuid.uuid4().hex
    ref = f"core.hook_{uuid.uuid4().hex[:8]}"
    async with client(server.base_url, await login(server.base_url)) as admin:
        made = await call(
            admin, "POST", "/api/v1/triggers", json={"ref": ref, "webhook_secret": secret}
        )
        assert made.status == 201, made.body
        key = (await call(admin, "POST", f"/api/v1/triggers/{ref}/webhooks/enable")).data[
            "webhook_key"
        ]
    raw = json.dumps({"payload": {"n": 1}}).encode()
    async with client(server.base_url) as anon:

        async def post(headers: dict[str, Any]) -> Answer:
            return await call(anon, "POST", f"/api/v1/webhooks/{key}", data=raw, headers=headers)

        # Someone who knows the key but not the secret, well past the burst.
        for _ in range(10):
            forged = await post({"X-Webhook-Signature": _sign("guessed", raw)})
            assert forged.status == 401, forged.body
        unsigned = await post({})
        assert unsigned.status == 401, unsigned.body
        signed = await post({"X-Webhook-Signature": _sign(secret, raw)})
        assert signed.status == 200, signed.body


async def test_a_guesser_elsewhere_does_not_lock_the_admin_out(server: Server) -> None:
    for _ in range(MAX_FAILURES):
        wrong = await _login_from(server, "127.0.0.2", ADMIN_LOGIN, "guess")
        assert wrong.status == 401, wrong.body
    backed_off = await _login_from(server, "127.0.0.2", ADMIN_LOGIN, "guess")
    assert backed_off.status == 429, backed_off.body
    assert 1 <= int(backed_off.headers["Retry-After"]) <= WINDOW_S, backed_off.headers
    # The right password from the guesser's address waits too; the admin's own gets in.
    still = await _login_from(server, "127.0.0.2", ADMIN_LOGIN, ADMIN_PASSWORD)
    assert still.status == 429, still.body
    admin = await _login_from(server, "127.0.0.1", ADMIN_LOGIN, ADMIN_PASSWORD)
    assert admin.status == 200, admin.body
    assert admin.data["access_token"]


async def test_many_addresses_together_lock_a_login(server: Server) -> None:
    target = f"user{uuid.uuid4().hex[:6]}"
    for n in range(LOGIN_LIMIT // MAX_FAILURES):
        for _ in range(MAX_FAILURES):
            wrong = await _login_from(server, f"127.0.1.{n + 1}", target, "guess")
            assert wrong.status == 401, (n, wrong.body)
    locked = await _login_from(server, "127.0.2.1", target, "guess")
    assert locked.status == 429, locked.body
    assert 1 <= int(locked.headers["Retry-After"]) <= WINDOW_S, locked.headers


def test_a_pair_backs_off_twice_as_long_per_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth.time, "monotonic", lambda: now[0])
    throttle = auth.LoginThrottle(MAX_FAILURES, 3600.0)
    keys = auth.throttle_keys("admin", "203.0.113.9")
    waits = []
    for _ in range(MAX_FAILURES + 3):
        try:
            throttle.check(keys)
        except TooManyRequests as exc:
            waits.append(exc.retry_after_s)
            now[0] += exc.retry_after_s
            throttle.check(keys)
        throttle.failed(keys)
    base = auth.LOGIN_BACKOFF_BASE_S
    assert waits == [base, 2 * base, 4 * base]
    throttle.check(auth.throttle_keys("admin", "198.51.100.1"))  # the owner, elsewhere
