"""An action's concurrency policy over the REST API: set at creation, shown, changed and
removed by an update, refused with a 400 naming the field when it cannot be used; and a run
refused by its ``cancel`` policy as a client sees it (``cancelled``, Attune's result).

One runtime (SQLite, in-process broker and worker) serves the module over real HTTP.
"""

from __future__ import annotations

import json
import uuid
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
from tests.waiting import eventually

ADMIN, PASSWORD = "admin", "admin-password-1"


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        async with self.session.request(method, self.url + path, json=body) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if text else None


@pytest.fixture(scope="module")
async def env(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp("concurrency-api")
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp / 's.db'}",
            data_dir=tmp / "data",
            packs_path=str(tmp / "none"),
            admin_login=ADMIN,
            admin_password=PASSWORD,
        )
    )
    await rt.start_worker("api-worker")
    server = TestServer(build_app(rt))
    await server.start_server()
    session = aiohttp.ClientSession()
    try:
        token = await rt.auth.issue_token(ADMIN, name="concurrency")
        session.headers["Authorization"] = f"Bearer {token}"
        yield Env(rt, str(server.make_url("")).rstrip("/"), session)
    finally:
        await session.close()
        await server.close()
        await rt.close()


def action_body(**more: Any) -> dict[str, Any]:
    return {
        "ref": f"cc_{uuid.uuid4().hex[:8]}.sleeper",
        "entrypoint": "cat >/dev/null\nsleep 1\n",
        "runtime_ref": "core.shell",
        "param_schema": {"host": {"type": "string"}},
        **more,
    }


async def test_a_policy_is_set_shown_changed_and_removed(env: Env) -> None:
    body = action_body(concurrency={"limit": 2, "parameters": ["host"]})
    status, created = await env.call("POST", "/api/v1/actions", body)
    assert status == 201, created
    ref = created["data"]["ref"]
    policy = {"limit": 2, "method": "enqueue", "parameters": ["host"]}
    assert created["data"]["concurrency"] == policy
    status, shown = await env.call("GET", f"/api/v1/actions/{ref}")
    assert (status, shown["data"]["concurrency"]) == (200, policy)

    status, changed = await env.call(
        "PUT", f"/api/v1/actions/{ref}", {"description": "still limited"}
    )
    assert (status, changed["data"]["concurrency"]) == (200, policy), "kept when not given"
    status, changed = await env.call(
        "PUT", f"/api/v1/actions/{ref}", {"concurrency": {"threshold": 1, "method": "cancel"}}
    )
    assert status == 200, changed
    assert changed["data"]["concurrency"] == {"limit": 1, "method": "cancel", "parameters": []}
    status, changed = await env.call("PUT", f"/api/v1/actions/{ref}", {"concurrency": None})
    assert (status, changed["data"]["concurrency"]) == (200, None)


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"limit": 0}, "field 'concurrency.limit'"),
        ({"limit": 1, "method": "queue"}, "field 'concurrency.method'"),
        ({"method": "cancel"}, "concurrency.limit"),
        ({"limit": 1, "parameters": ["hots"]}, "concurrency.parameters: 'hots' is not a parameter"),
        ({"limit": 1, "burst": 3}, "unknown field 'concurrency.burst'"),
    ],
)
async def test_a_policy_that_cannot_be_used_is_a_400_naming_the_field(
    env: Env, policy: dict[str, Any], message: str
) -> None:
    status, refused = await env.call("POST", "/api/v1/actions", action_body(concurrency=policy))
    assert status == 400, refused
    assert message in refused["error"]


async def test_a_run_over_a_cancel_policy_is_cancelled_with_attunes_result(env: Env) -> None:
    body = action_body(concurrency={"limit": 1, "method": "cancel"})
    status, created = await env.call("POST", "/api/v1/actions", body)
    assert status == 201, created
    ref = created["data"]["ref"]
    run = {"action_ref": ref, "parameters": {"host": "a"}}
    status, first = await env.call("POST", "/api/v1/executions/execute", run)
    assert status == 201, first
    first_id = first["data"]["id"]

    async def state(execution_id: int) -> dict[str, Any]:
        _, got = await env.call("GET", f"/api/v1/executions/{execution_id}")
        return dict(got["data"])

    await eventually(
        lambda: state(first_id), "the first run to start", done=lambda r: r["status"] == "running"
    )
    status, second = await env.call("POST", "/api/v1/executions/execute", run)
    assert status == 201, second
    refused = await eventually(
        lambda: state(second["data"]["id"]),
        "the second run to be refused",
        done=lambda r: r["status"] != "requested",
    )
    assert refused["status"] == "cancelled"
    assert refused["result"]["error"].startswith("Execution cancelled by policy: ")
    assert refused["result"]["message"] == (
        "Policy violation: Concurrency limit exceeded: 1 running executions (limit: 1)"
    )
    assert refused["result"]["action_ref"] == ref
    done = await eventually(
        lambda: state(first_id), "the first run to end", done=lambda r: r["status"] != "running"
    )
    assert done["status"] == "completed"
