"""``/api/v1/keys`` as Attune's clients see it, written from Attune's published types
(``crates/api/src/dto/key.rs``, the generated client's KeyResponse, KeySummary,
CreateKeyRequest, UpdateKeyRequest): CRUD, list envelope and filters, JSON values, encryption at
rest and redaction by role, identity-owned keys, TTL expiry, Attune's status codes; and an
action calling back with ``ATTUNE_API_URL`` and its execution-scoped ``ATTUNE_API_TOKEN``.

One runtime per backend (SQLite, PostgreSQL) serves the module in-process over real HTTP, with
a worker; every test uses its own key refs.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from sqlalchemy import select, update

from config import Settings
from engine.api.app import build_app
from engine.clock import now_utc
from engine.runtime import Runtime, build_runtime
from engine.storage.tables import audit, keys
from tests.e2e.conftest import _fresh_postgres_database
from tests.waiting import eventually

#: Bound on waiting for an execution to end, and the poll interval.
RUN_TIMEOUT_S = 20.0
POLL_S = 0.05
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}

#: An action that makes one HTTP request to this server with Attune's variables and prints
#: the status and body as JSON; it can also leave its token in a file.
CALL_PY = """
import json, os, sys, urllib.error, urllib.request
p = json.load(sys.stdin)
if p.get("token_file"):
    with open(p["token_file"], "w") as fh:
        fh.write(os.environ["ATTUNE_API_TOKEN"])
body = json.dumps(p["body"]).encode() if p.get("body") is not None else None
req = urllib.request.Request(
    os.environ["ATTUNE_API_URL"] + p["path"], data=body, method=p.get("method", "GET"),
    headers={"Authorization": "Bearer " + os.environ["ATTUNE_API_TOKEN"],
             "Content-Type": "application/json"})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        status, text = r.status, r.read().decode()
except urllib.error.HTTPError as e:
    status, text = e.code, e.read().decode()
env = {k: os.environ.get(k) for k in ("ATTUNE_EXEC_ID", "ATTUNE_ACTION", "ATTUNE_RULE")}
print(json.dumps({"status": status, "body": json.loads(text), "env": env}))
"""
CALL_YAML = """
name: call
runner_type: python
entry_point: call.py
output_format: json
parameters:
  path: {type: string, required: true}
  method: {type: string}
  body: {type: object}
  token_file: {type: string}
"""


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]
    ids: dict[str, int]
    tmp: Path

    async def call(
        self, method: str, path: str, who: str | None = "admin", body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def run(self, who: str, params: dict[str, Any]) -> dict[str, Any]:
        """Run ``kvt.call`` as ``who``; the finished execution."""
        request = {"action_ref": "kvt.call", "parameters": params}
        status, body = await self.call("POST", "/api/v1/executions/execute", who, request)
        assert status == 201, body
        return await self.finished(body["data"]["id"])

    async def finished(self, execution_id: int) -> dict[str, Any]:
        async def record() -> dict[str, Any]:
            _, body = await self.call("GET", f"/api/v1/executions/{execution_id}")
            return dict(body["data"])

        return await eventually(
            record,
            f"execution {execution_id} to end",
            RUN_TIMEOUT_S,
            interval_s=POLL_S,
            done=lambda r: r["status"] in TERMINAL,
        )


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    tmp = tmp_path_factory.mktemp(f"keys-{request.param}")
    actions = tmp / "packs" / "kvt" / "actions"
    actions.mkdir(parents=True)
    (tmp / "packs" / "kvt" / "pack.yaml").write_text("ref: kvt\nlabel: KV test\nversion: 1.0.0\n")
    (actions / "call.yaml").write_text(CALL_YAML)
    (actions / "call.py").write_text(CALL_PY)
    if request.param == "sqlite":
        url_cm = None
        database_url = f"sqlite+aiosqlite:///{tmp / 'k.db'}"
    else:
        url_cm = _fresh_postgres_database()
        database_url = await url_cm.__aenter__()
    rt = await build_runtime(
        Settings(
            database_url=database_url,
            data_dir=tmp / "data",
            packs_path=str(tmp / "packs"),
            admin_login="admin",
            admin_password="admin-password-1",
            kill_grace_s=1,
        )
    )
    server = TestServer(build_app(rt))
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    rt.execution_tokens.api_url = base
    await rt.start_worker(worker_id="keys-test")
    tokens = {"admin": await rt.auth.issue_token("admin", name="t", ttl_s=3600)}
    for login, role in (("olga", "operator"), ("vic", "viewer"), ("ada", "admin")):
        await rt.auth.create_user(login, "password-123", role)  # type: ignore[arg-type]
        tokens[login] = await rt.auth.issue_token(login, name="t", ttl_s=3600)
    session = aiohttp.ClientSession()
    e = Env(rt, base, session, tokens, {}, tmp)
    for login in ("admin", "olga", "ada"):
        async with rt.store.read() as conn:
            from engine.storage.tables import users

            e.ids[login] = (
                await conn.execute(select(users.c.id).where(users.c.login == login))
            ).scalar_one()
    try:
        yield e
    finally:
        await session.close()
        await server.close()
        await rt.close()
        if url_cm is not None:
            await url_cm.__aexit__(None, None, None)


def ref(prefix: str = "k") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def new_key(key_ref: str, value: Any, **more: Any) -> dict[str, Any]:
    return {"ref": key_ref, "name": key_ref, "value": value, "owner_type": "system", **more}


# -- the contract --------------------------------------------------------------------------


async def test_create_get_update_delete_with_attunes_fields_and_codes(env: Env) -> None:
    r = ref()
    status, body = await env.call("POST", "/api/v1/keys", body=new_key(r, "https://api.test/v1"))
    assert status == 201, body
    created = body["data"]
    # Every field Attune's generated KeyResponse requires, and its optional ones.
    for field in ("created", "encrypted", "id", "name", "owner_type", "ref", "updated", "value"):
        assert field in created
    for field in ("owner", "owner_action", "owner_action_ref", "owner_identity", "owner_pack"):
        assert field in created
    assert created["ref"] == r
    assert created["owner_type"] == "system"
    assert created["encrypted"] is False
    assert created["value"] == "https://api.test/v1"

    status, body = await env.call("GET", f"/api/v1/keys/{r}")
    assert status == 200
    assert body["data"]["value"] == "https://api.test/v1"

    status, body = await env.call("PUT", f"/api/v1/keys/{r}", body={"value": "v2", "name": "N"})
    assert status == 200, body
    assert body["data"]["value"] == "v2"
    assert body["data"]["name"] == "N"
    assert (await env.call("GET", f"/api/v1/keys/{r}"))[1]["data"]["value"] == "v2"

    status, body = await env.call("POST", "/api/v1/keys", body=new_key(r, "again"))
    assert status == 409
    assert body["code"] == "CONFLICT"
    assert r in body["error"]

    status, body = await env.call("DELETE", f"/api/v1/keys/{r}")
    assert status == 200
    assert body == {"success": True, "message": "Key deleted successfully"}
    status, body = await env.call("GET", f"/api/v1/keys/{r}")
    assert status == 404
    assert body["code"] == "NOT_FOUND"
    assert r in body["error"]
    assert (await env.call("DELETE", f"/api/v1/keys/{r}"))[0] == 404
    assert (await env.call("PUT", f"/api/v1/keys/{r}", body={"value": 1}))[0] == 404


@pytest.mark.parametrize(
    "value",
    [30, 3.5, True, None, ["a", 1], {"api": {"endpoint": "https://x", "retry": {"max": 3}}}],
)
async def test_values_are_any_json(env: Env, value: Any) -> None:
    r = ref()
    assert (await env.call("POST", "/api/v1/keys", body=new_key(r, value)))[0] == 201
    assert (await env.call("GET", f"/api/v1/keys/{r}"))[1]["data"]["value"] == value


async def test_list_envelope_pagination_and_filters(env: Env) -> None:
    owner = uuid.uuid4().hex[:8]
    made = sorted(ref("list") for _ in range(3))
    for r in made:
        await env.call("POST", "/api/v1/keys", body=new_key(r, "x", owner=owner))
    status, body = await env.call("GET", f"/api/v1/keys?owner={owner}&per_page=2")
    assert status == 200
    assert [k["ref"] for k in body["items"]] == made[:2]
    assert body["pagination"] == {
        "page": 1,
        "page_size": 2,
        "total_items": 3,
        "total_pages": 2,
        "has_previous": False,
        "has_next": True,
    }
    item = body["items"][0]
    # Attune's KeySummary: required fields present, and no value in a list.
    assert {"created", "encrypted", "id", "name", "owner_type", "ref", "owner"} <= set(item)
    assert "value" not in item
    _, page2 = await env.call("GET", f"/api/v1/keys?owner={owner}&per_page=2&page=2")
    assert [k["ref"] for k in page2["items"]] == made[2:]
    _, typed = await env.call("GET", f"/api/v1/keys?owner={owner}&owner_type=pack")
    assert typed["items"] == []
    status, bad = await env.call("GET", "/api/v1/keys?owner_type=team")
    assert status == 400
    assert "owner_type" in bad["error"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"ref": "a.b", "name": "a", "owner_type": "system"}, "value"),
        ({"ref": "a.b", "name": "a", "value": 1, "owner_type": "team"}, "owner_type"),
        ({"ref": "a/b", "name": "a", "value": 1, "owner_type": "system"}, "ref"),
        ({"ref": "", "name": "a", "value": 1, "owner_type": "system"}, "ref"),
        ({"ref": "a.b", "name": "a", "value": 1, "owner_type": "system", "ttl": -5}, "ttl"),
    ],
)
async def test_bad_bodies_are_400_naming_the_field(env: Env, body: Any, named: str) -> None:
    status, answer = await env.call("POST", "/api/v1/keys", body=body)
    assert status == 400
    assert answer["code"] == "BAD_REQUEST"
    assert named in answer["error"]


async def test_unknown_fields_are_ignored_and_owner_refs_resolved(env: Env) -> None:
    r = ref()
    body = new_key(r, "v", owner_type="pack", owner_pack_ref="kvt", description="Attune sends it")
    status, answer = await env.call("POST", "/api/v1/keys", body=body)
    assert status == 201, answer
    assert answer["data"]["owner_pack_ref"] == "kvt"
    assert isinstance(answer["data"]["owner_pack"], int)
    status, answer = await env.call(
        "POST", "/api/v1/keys", body=new_key(ref(), "v", owner_type="pack", owner_pack_ref="nope")
    )
    assert status == 400
    assert "nope" in answer["error"]


async def test_no_token_is_401(env: Env) -> None:
    status, body = await env.call("GET", "/api/v1/keys", who=None)
    assert status == 401
    assert body["code"] == "UNAUTHORIZED"


# -- encryption and who may see what --------------------------------------------------------


async def test_encrypted_values_are_sealed_at_rest_and_hidden_from_viewers(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r, secret = ref("sec"), f"hunter2-{uuid.uuid4().hex}"
    status, body = await env.call("POST", "/api/v1/keys", body=new_key(r, secret, encrypted=True))
    assert status == 201
    assert body["data"]["encrypted"] is True
    assert body["data"]["value"] == secret
    async with env.rt.store.read() as conn:
        row = (await conn.execute(select(keys).where(keys.c.ref == r))).one()
    assert row.value is None
    assert secret not in str(row.sealed)

    for who in ("admin", "olga"):
        assert (await env.call("GET", f"/api/v1/keys/{r}", who))[1]["data"]["value"] == secret
    status, body = await env.call("GET", f"/api/v1/keys/{r}", "vic")
    assert status == 200
    assert body["data"]["value"] is None
    assert body["data"]["encrypted"] is True

    # Turned into a plain key, and back: the value is kept.
    _, body = await env.call("PUT", f"/api/v1/keys/{r}", body={"encrypted": False})
    assert body["data"]["encrypted"] is False
    assert body["data"]["value"] == secret
    assert (await env.call("GET", f"/api/v1/keys/{r}", "vic"))[1]["data"]["value"] == secret
    _, body = await env.call("PUT", f"/api/v1/keys/{r}", body={"encrypted": True})
    assert (await env.call("GET", f"/api/v1/keys/{r}", "vic"))[1]["data"]["value"] is None
    await env.call("DELETE", f"/api/v1/keys/{r}")

    async with env.rt.store.read() as conn:
        logged = [dict(a._mapping) for a in (await conn.execute(select(audit))).all()]
    assert any(a["verb"] == "key.decrypt" and a["target"] == r for a in logged)
    assert secret not in json.dumps(logged, default=str)
    assert secret not in caplog.text


async def test_viewers_read_but_may_not_write(env: Env) -> None:
    r = ref()
    status, body = await env.call("POST", "/api/v1/keys", "vic", new_key(r, 1))
    assert status == 403
    assert body["code"] == "FORBIDDEN"
    assert (await env.call("POST", "/api/v1/keys", "olga", new_key(r, 1)))[0] == 201
    assert (await env.call("GET", f"/api/v1/keys/{r}", "vic"))[1]["data"]["value"] == 1
    assert (await env.call("PUT", f"/api/v1/keys/{r}", "vic", {"value": 2}))[0] == 403
    assert (await env.call("DELETE", f"/api/v1/keys/{r}", "vic"))[0] == 403
    assert (await env.call("DELETE", f"/api/v1/keys/{r}", "olga"))[0] == 200


async def test_identity_keys_are_their_owners_alone(env: Env) -> None:
    mine = ref("mine")
    body = {
        "ref": mine,
        "name": mine,
        "value": "private",
        "owner_type": "identity",
        "encrypted": True,
    }
    status, answer = await env.call("POST", "/api/v1/keys", "ada", body)
    assert status == 201
    assert answer["data"]["owner_identity"] == env.ids["ada"]
    assert (await env.call("GET", f"/api/v1/keys/{mine}", "ada"))[1]["data"]["value"] == "private"
    _, listed = await env.call("GET", "/api/v1/keys?owner_type=identity&per_page=100", "ada")
    assert mine in {k["ref"] for k in listed["items"]}

    # Another admin neither sees it nor may change it (Attune's answers).
    _, listed = await env.call("GET", "/api/v1/keys?owner_type=identity&per_page=100", "admin")
    assert mine not in {k["ref"] for k in listed["items"]}
    assert (await env.call("GET", f"/api/v1/keys/{mine}", "admin"))[0] == 404
    assert (await env.call("PUT", f"/api/v1/keys/{mine}", "admin", {"value": "x"}))[0] == 403
    assert (await env.call("DELETE", f"/api/v1/keys/{mine}", "admin"))[0] == 403
    # Nor may anyone make a key owned by someone else.
    other = {**body, "ref": ref("theirs"), "owner_identity": env.ids["ada"]}
    assert (await env.call("POST", "/api/v1/keys", "admin", other))[0] == 403
    assert (await env.call("DELETE", f"/api/v1/keys/{mine}", "ada"))[0] == 200


# -- TTL ------------------------------------------------------------------------------------


async def _expire(env: Env, key_ref: str) -> None:
    async with env.rt.store.write() as conn:
        await conn.execute(
            update(keys)
            .where(keys.c.ref == key_ref)
            .values(expires_at=now_utc() - timedelta(seconds=1))
        )


async def _stored(env: Env, key_ref: str) -> bool:
    async with env.rt.store.read() as conn:
        found = (await conn.execute(select(keys.c.id).where(keys.c.ref == key_ref))).first()
    return found is not None


async def test_an_expired_key_reads_as_missing_and_is_removed(env: Env) -> None:
    r, owner = ref("ttl"), uuid.uuid4().hex
    body = new_key(r, "soon gone", ttl=3600, owner=owner)
    status, body = await env.call("POST", "/api/v1/keys", body=body)
    assert status == 201
    assert body["data"]["expires_at"] is not None
    assert (await env.call("GET", f"/api/v1/keys/{r}"))[0] == 200
    await _expire(env, r)
    _, listed = await env.call("GET", f"/api/v1/keys?owner={owner}")
    assert listed["items"] == []
    status, body = await env.call("GET", f"/api/v1/keys/{r}")
    assert status == 404
    assert body["code"] == "NOT_FOUND"
    assert not await _stored(env, r)
    # Its ref is free again, and a ttl of 0 removes an expiry.
    assert (await env.call("POST", "/api/v1/keys", body=new_key(r, "back", ttl=60)))[0] == 201
    _, body = await env.call("PUT", f"/api/v1/keys/{r}", body={"ttl": 0})
    assert body["data"]["expires_at"] is None


async def test_the_sweep_removes_expired_keys_nobody_reads(env: Env) -> None:
    r = ref("ttl")
    await env.call("POST", "/api/v1/keys", body=new_key(r, 1, ttl=60))
    await _expire(env, r)
    assert await env.rt.keys.purge_expired() >= 1
    assert not await _stored(env, r)


# -- actions call back ----------------------------------------------------------------------


async def test_an_action_reads_and_writes_keys_with_its_execution_token(env: Env) -> None:
    r, secret = ref("act"), f"s3cret-{uuid.uuid4().hex}"
    await env.call("POST", "/api/v1/keys", body=new_key(r, secret, encrypted=True))
    done = await env.run("olga", {"path": f"/api/v1/keys/{r}"})
    assert done["status"] == "completed", done
    data = done["result"]["data"]
    assert data["status"] == 200
    assert data["body"]["data"]["value"] == secret
    assert data["env"] == {
        "ATTUNE_EXEC_ID": str(done["id"]),
        "ATTUNE_ACTION": "kvt.call",
        "ATTUNE_RULE": None,
    }

    written = ref("act")
    done = await env.run(
        "olga", {"path": "/api/v1/keys", "method": "POST", "body": new_key(written, {"n": 1})}
    )
    assert done["result"]["data"]["status"] == 201
    assert (await env.call("GET", f"/api/v1/keys/{written}"))[1]["data"]["value"] == {"n": 1}
    # The token was never part of the record, nor of the parameters.
    assert "atx_" not in json.dumps(done)


async def test_an_execution_token_dies_with_its_run(env: Env) -> None:
    token_file = env.tmp / f"token-{uuid.uuid4().hex}"
    done = await env.run("olga", {"path": "/api/v1/keys", "token_file": str(token_file)})
    assert done["status"] == "completed"
    assert done["result"]["data"]["status"] == 200
    token = token_file.read_text()
    async with env.session.get(
        env.url + "/api/v1/keys", headers={"Authorization": f"Bearer {token}"}
    ) as resp:
        assert resp.status == 401
        assert "ended" in (await resp.json())["error"]
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    async with env.session.get(
        env.url + "/api/v1/keys", headers={"Authorization": f"Bearer {forged}"}
    ) as resp:
        assert resp.status == 401


async def test_an_execution_token_has_its_requesters_role(env: Env, tmp_path: Path) -> None:
    # An admin's run may create keys; a token minted for a viewer's run may not, and reads
    # encrypted values as null (a viewer cannot run actions, so its token is minted directly).
    r, secret = ref("role"), "role-secret-value"
    await env.call("POST", "/api/v1/keys", body=new_key(r, secret, encrypted=True))
    done = await env.run(
        "admin", {"path": "/api/v1/keys", "method": "POST", "body": new_key(ref("role"), 1)}
    )
    assert done["result"]["data"]["status"] == 201
    viewer = env.rt.execution_tokens.mint(done["id"], "vic", "viewer", 60)
    async with env.rt.store.write() as conn:  # authenticate wants a running execution
        from engine.storage.tables import executions

        await conn.execute(
            update(executions).where(executions.c.id == done["id"]).values(status="running")
        )
    try:
        headers = {"Authorization": f"Bearer {viewer}"}
        async with env.session.get(env.url + f"/api/v1/keys/{r}", headers=headers) as resp:
            assert (await resp.json())["data"]["value"] is None
        async with env.session.post(
            env.url + "/api/v1/keys", json=new_key(ref(), 1), headers=headers
        ) as resp:
            assert resp.status == 403
    finally:
        async with env.rt.store.write() as conn:
            await conn.execute(
                update(executions).where(executions.c.id == done["id"]).values(status="completed")
            )
