"""``/api/v1/aliases`` over real HTTP on both backends (SQLite and PostgreSQL): create, list,
get, update, delete; ``view`` to read, ``manage`` on the action to change; bad input as 400
naming the problem; an alias made over the API survives its pack's registration from disk."""

from __future__ import annotations

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

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]

    async def call(
        self, method: str, path: str, body: Any = None, who: str = "admin"
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as resp:
            text = await resp.text()
            return resp.status, (await resp.json() if text else None)


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp(f"aliases-{request.param}")
    url_cm = None
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp / 'a.db'}"
    else:
        url_cm = _fresh_postgres_database()
        database_url = await url_cm.__aenter__()
    rt = await build_runtime(
        Settings(
            database_url=database_url,
            database_pool_size=3,
            data_dir=tmp / "data",
            packs_path=str(ROOT / "packs"),
            admin_login="admin",
            admin_password="admin-password-1",
            # the operator manages only the examples pack's actions
            permissions={"operator": {"manage": ["examples.*"]}},
        )
    )
    server = TestServer(build_app(rt))
    await server.start_server()
    tokens = {"admin": await rt.auth.issue_token("admin", name="t", ttl_s=3600)}
    for login, role in (("olga", "operator"), ("vic", "viewer")):
        await rt.auth.create_user(login, "password-123", role)
        tokens[login] = await rt.auth.issue_token(login, name="t", ttl_s=3600)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    try:
        yield Env(rt, str(server.make_url("")).rstrip("/"), session, tokens)
    finally:
        await session.close()
        await server.close()
        await rt.close()
        if url_cm is not None:
            await url_cm.__aexit__(None, None, None)


BODY = {
    "name": "wait_a_bit",
    "pack": "examples",
    "action_ref": "examples.wait",
    "description": "Wait some seconds",
    "formats": [
        "wait {{seconds}} seconds",
        {"display": "nap", "representation": ["nap", "take a nap"]},
    ],
    "ack": {"format": "waiting {{ execution.parameters.seconds }} s", "append_url": False},
    "result": {"enabled": False},
    "immutable_parameters": {},
    "some_field_nobody_defines": 1,
}


async def test_pack_aliases_are_listed_and_readable(env: Env) -> None:
    status, body = await env.call("GET", "/api/v1/aliases?pack_ref=examples", who="vic")
    assert status == 200, body
    refs = [a["ref"] for a in body["items"]]
    assert "examples.restart_service" in refs
    restart = next(a for a in body["items"] if a["ref"] == "examples.restart_service")
    assert restart["formats"][0] == "restart {{service}} on {{host}}"
    assert restart["adhoc"] is False
    assert body["pagination"]["total_items"] == len(refs)
    status, one = await env.call("GET", "/api/v1/aliases/examples.restart_service", who="vic")
    assert status == 200
    assert one["data"]["action_ref"] == "examples.restart_service"
    status, _ = await env.call("GET", "/api/v1/aliases/examples.nope")
    assert status == 404


async def test_create_update_delete(env: Env) -> None:
    status, made = await env.call("POST", "/api/v1/aliases", BODY, who="olga")
    assert status == 201, made
    data = made["data"]
    assert data["ref"] == "examples.wait_a_bit"
    assert data["adhoc"] is True
    assert data["formats"][1] == {"display": "nap", "representation": ["nap", "take a nap"]}
    assert data["ack"]["format"] == "waiting {{ execution.parameters.seconds }} s"
    status, again = await env.call("POST", "/api/v1/aliases", BODY, who="olga")
    assert status == 409, again
    assert "examples.wait_a_bit" in again["error"]

    status, changed = await env.call(
        "PUT", "/api/v1/aliases/examples.wait_a_bit", {"enabled": False}, who="olga"
    )
    assert status == 200, changed
    assert changed["data"]["enabled"] is False
    assert changed["data"]["description"] == "Wait some seconds"  # kept
    status, renamed = await env.call(
        "PUT", "/api/v1/aliases/examples.wait_a_bit", {"name": "other"}, who="olga"
    )
    assert status == 400
    assert "name" in renamed["error"]

    status, _ = await env.call("DELETE", "/api/v1/aliases/examples.wait_a_bit", who="olga")
    assert status == 204
    status, _ = await env.call("GET", "/api/v1/aliases/examples.wait_a_bit")
    assert status == 404
    status, _ = await env.call("DELETE", "/api/v1/aliases/examples.wait_a_bit", who="olga")
    assert status == 404


async def test_changing_needs_manage_on_the_action(env: Env) -> None:
    core = {**BODY, "name": "echo_it", "pack": "ops", "action_ref": "core.echo"}
    status, body = await env.call("POST", "/api/v1/aliases", core, who="olga")
    assert status == 403, body
    assert "'manage' permission on core.echo" in body["error"]
    status, body = await env.call("POST", "/api/v1/aliases", core, who="vic")
    assert status == 403
    status, made = await env.call("POST", "/api/v1/aliases", core)  # the admin may
    assert status == 201, made
    status, body = await env.call(
        "PUT", "/api/v1/aliases/ops.echo_it", {"description": "x"}, who="olga"
    )
    assert status == 403
    # moving an alias the operator manages onto an action it does not: refused too
    mine = {**BODY, "name": "mine"}
    assert (await env.call("POST", "/api/v1/aliases", mine, who="olga"))[0] == 201
    status, body = await env.call(
        "PUT", "/api/v1/aliases/examples.mine", {"action_ref": "core.echo"}, who="olga"
    )
    assert status == 403
    status, _ = await env.call("DELETE", "/api/v1/aliases/ops.echo_it", who="olga")
    assert status == 403
    assert (await env.call("DELETE", "/api/v1/aliases/ops.echo_it"))[0] == 204


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"formats": []}, "formats"),
        ({"formats": ["restart {{service"]}, "not closed"),
        ({"formats": ["(?<=x)y {{a}}"]}, "RE2"),
        ({"formats": [{"representation": []}]}, "display"),
        ({"action_ref": "nodot"}, "action_ref"),
        ({"name": "has space"}, "name"),
        ({"ack": {"format": "{{ unclosed"}}, "ack.format"),
        ({"pack": None}, "pack"),
    ],
)
async def test_bad_aliases_are_400_naming_the_problem(
    env: Env, change: dict[str, Any], says: str
) -> None:
    status, body = await env.call("POST", "/api/v1/aliases", {**BODY, "name": "bad", **change})
    assert status == 400, body
    assert says in body["error"]


async def test_an_api_alias_survives_its_pack_registered_again(env: Env) -> None:
    kept = {**BODY, "name": "kept_over_api"}
    assert (await env.call("POST", "/api/v1/aliases", kept))[0] == 201
    await env.rt.register_pack(ROOT / "packs" / "examples", force=True)
    status, body = await env.call("GET", "/api/v1/aliases/examples.kept_over_api")
    assert status == 200
    assert body["data"]["adhoc"] is True
    status, _ = await env.call("GET", "/api/v1/aliases/examples.restart_service")
    assert status == 200


async def test_a_deleted_pack_takes_its_aliases(env: Env) -> None:
    assert (await env.call("POST", "/api/v1/packs", {"ref": "scratch", "label": "S"}))[0] == 201
    body = {**BODY, "name": "hello", "pack": "scratch", "action_ref": "core.echo"}
    assert (await env.call("POST", "/api/v1/aliases", body))[0] == 201
    assert (await env.call("DELETE", "/api/v1/packs/scratch"))[0] == 200
    status, _ = await env.call("GET", "/api/v1/aliases/scratch.hello")
    assert status == 404


async def test_the_openapi_document_describes_aliases(env: Env) -> None:
    status, document = await env.call("GET", "/api/v1/openapi.json")
    assert status == 200
    assert {"get", "post"} <= set(document["paths"]["/api/v1/aliases"])
    assert {"get", "put", "delete"} <= set(document["paths"]["/api/v1/aliases/{ref}"])
