"""An execution's deliveries are shown only to whom may view the execution, and never with a
callback URL's credentials or query string.

One ``attune serve`` for the module; operators view only ``core.*``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.conftest import Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import (
    EXECUTE,
    POLL_S,
    Answer,
    call,
    inline_action,
    register,
    token_for,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

PERMISSIONS = {"operator": {"run": ["core.*"], "cancel": ["core.*"], "view": ["core.*"]}}
OPERATOR = "dora"
#: ``.invalid`` never resolves: the delivery fails at once, with the URL in its error.
CALLBACK = "http://hookuser:hookpass@callback.invalid:8443/hook/path?token=qs-secret-token"


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-deliveries")
    env = engine_env(
        tmp,
        ATTUNE_PERMISSIONS=json.dumps(PERMISSIONS),
        ATTUNE_ALLOW_REGISTRATION="true",
        ATTUNE_REGISTRATION_ROLE="operator",
        ATTUNE_LOG_FORMAT="text",
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture
async def sessions(
    server: Server,
) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    await register(server.base_url, OPERATOR, "dora-password-1")
    admin, operator = await asyncio.gather(
        login(server.base_url), token_for(server, OPERATOR, "operator")
    )
    async with (
        client(server.base_url, admin) as admin_session,
        client(server.base_url, operator) as operator_session,
    ):
        yield admin_session, operator_session


async def test_deliveries_need_view_and_hide_the_callback_urls_secrets(
    server: Server, sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession]
) -> None:
    admin, operator = sessions
    ref = await inline_action(admin, "hidden", "job", "echo done")
    ran = await call(admin, "POST", EXECUTE, json={"action_ref": ref, "callback_url": CALLBACK})
    assert ran.status == 201, ran.body
    path = f"/api/v1/executions/{ran.data['id']}/deliveries"

    def failed_once(answer: Answer) -> bool:
        return any(item["last_error"] for item in answer.items)

    seen = await eventually(
        lambda: call(admin, "GET", path), "a failed delivery", interval_s=POLL_S, done=failed_once
    )
    error = next(item["last_error"] for item in seen.items if item["last_error"])
    assert "callback.invalid:8443/hook/path?…" in error, error
    logs = server.logs()
    assert "callback.invalid:8443/hook/path?…" in logs
    for secret in ("hookuser", "hookpass", "qs-secret-token", "token="):
        assert secret not in error, error
        assert secret not in logs, secret

    refused = await call(operator, "GET", path)
    assert refused.status == 403, refused.body
    assert "'view'" in refused.error, refused.error
    assert ref in refused.error, refused.error
