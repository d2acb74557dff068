"""Inquiries over HTTP, in-process (one runtime per backend, real HTTP, its own worker and the
serve process's inquiry sweep): ``core.ask`` and an ``__inquiry`` result park the run, the
first valid answer ends it ``completed``, a later one gets 409, a bad one 400 naming the field,
a non-assignee 403, the deadline ends both ``timeout``, a cancel cancels the inquiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest.mock import patch

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.inquiries import InquirySweep, inquiries_of
from engine.runtime import Runtime, build_runtime
from tests.e2e.conftest import _fresh_postgres_database
from tests.waiting import eventually

ASK_PACK = Path(__file__).resolve().parents[1] / "fixtures" / "packs" / "ask_pack"
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
WAIT_S = 20.0


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]
    user_ids: dict[str, int]

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def get(self, path: str, who: str = "admin") -> tuple[int, Any]:
        async with self.session.get(self.url + path, headers=self.headers(who)) as resp:
            return resp.status, await resp.json()

    async def post(self, path: str, body: Any, who: str = "admin") -> tuple[int, Any]:
        async with self.session.post(self.url + path, json=body, headers=self.headers(who)) as r:
            return r.status, await r.json()

    async def start(self, action_ref: str, **params: Any) -> int:
        status, body = await self.post(
            "/api/v1/executions/execute", {"action_ref": action_ref, "parameters": params}
        )
        assert status == 201, body
        return int(body["data"]["id"])

    async def execution(self, execution_id: int) -> dict[str, Any]:
        status, body = await self.get(f"/api/v1/executions/{execution_id}")
        assert status == 200, body
        return dict(body["data"])

    async def ended(self, execution_id: int) -> dict[str, Any]:
        return await eventually(
            lambda: self.execution(execution_id),
            f"execution {execution_id} to end",
            WAIT_S,
            interval_s=0.05,
            done=lambda r: r["status"] in TERMINAL,
        )

    async def inquiry_of(self, execution_id: int) -> dict[str, Any]:
        async def found() -> dict[str, Any] | None:
            status, body = await self.get(f"/api/v1/inquiries?execution={execution_id}")
            assert status == 200, body
            return body["items"][0] if body["items"] else None

        summary = await eventually(found, f"the inquiry of {execution_id}", WAIT_S)
        status, body = await self.get(f"/api/v1/inquiries/{summary['id']}")
        assert status == 200, body
        return dict(body["data"])

    async def inquiry(self, inquiry_id: int) -> dict[str, Any]:
        status, body = await self.get(f"/api/v1/inquiries/{inquiry_id}")
        assert status == 200, body
        return dict(body["data"])


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp(f"inquiries-{request.param}")
    (tmp / "packs").mkdir()
    url_cm = None
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp / 'inq.db'}"
    else:
        url_cm = _fresh_postgres_database()
        database_url = await url_cm.__aenter__()
    rt = await build_runtime(
        Settings(
            database_url=database_url,
            database_pool_size=3,
            data_dir=tmp / "data",
            packs_path=str(tmp / "packs"),
            admin_login="admin",
            admin_password="admin-password-1",
            worker_concurrency=1,  # a waiting run must not hold the only slot
        )
    )
    await rt.register_pack(ASK_PACK)
    server = TestServer(build_app(rt))
    await server.start_server()
    await rt.start_worker(worker_id="inquiry-test")
    sweep = await InquirySweep(inquiries_of(rt), 0.1, rt.broker).start()
    tokens = {"admin": await rt.auth.issue_token("admin", name="t", ttl_s=3600)}
    user_ids = {}
    for login, role in (("olga", "operator"), ("vic", "viewer"), ("rita", "viewer")):
        user = await rt.auth.create_user(login, "password-123", role)
        user_ids[login] = user.id
        tokens[login] = await rt.auth.issue_token(login, name="t", ttl_s=3600)
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    try:
        yield Env(rt, str(server.make_url("")).rstrip("/"), session, tokens, user_ids)
    finally:
        await session.close()
        await sweep.stop()
        await server.close()
        await rt.close()
        if url_cm is not None:
            await url_cm.__aexit__(None, None, None)


async def test_core_ask_waits_then_the_first_valid_answer_completes_it(env: Env) -> None:
    first = await env.start("core.ask", prompt="Ship it?", assigned_to="olga")
    second = await env.start("core.ask", prompt="And this?", assigned_to=env.user_ids["rita"])
    asked = await env.inquiry_of(first)
    # Both wait at once although the worker has one slot: a waiting run holds none.
    other = await env.inquiry_of(second)
    assert asked["status"] == other["status"] == "pending"
    assert asked["prompt"] == "Ship it?"
    assert asked["assignees"] == ["olga"]
    assert asked["assigned_to"] is None
    assert other["assigned_to"] == env.user_ids["rita"]
    assert asked["response_schema"]["required"] == ["approved"]
    assert (await env.execution(first))["status"] == "running"
    # No heartbeat is expected of a waiting run: the abandon sweep leaves it alone.
    assert await env.rt.service.abandon(stale_for_s=0) == []

    path = f"/api/v1/inquiries/{asked['id']}/respond"
    status, body = await env.post(path, {"response": {"approved": True}}, who="vic")
    assert status == 403, body
    status, body = await env.post(path, {"response": {"approved": "yes"}}, who="olga")
    assert status == 400, body
    assert "response.approved" in body["error"], body
    status, body = await env.post(path, {"response": {}}, who="olga")
    assert status == 400, body
    assert "'approved' is a required property" in body["error"], body
    status, body = await env.post(path, {"response": {"approved": True}}, who="olga")
    assert status == 200, body
    assert body["data"]["status"] == "responded"
    assert body["data"]["responded_by"] == "olga"
    status, body = await env.post(path, {"response": {"approved": False}}, who="olga")
    assert status == 409, body
    assert "already responded" in body["error"], body

    record = await env.ended(first)
    assert record["status"] == "completed"
    assert record["result"]["data"]["response"] == {"approved": True}
    assert record["result"]["data"]["inquiry"] == asked["id"]
    assert record["result"]["succeeded"] is True

    # The identity id assigned (Attune's assigned_to) may answer; an admin may too.
    status, body = await env.post(
        f"/api/v1/inquiries/{other['id']}/respond", {"response": {"approved": False}}, who="rita"
    )
    assert status == 200, body
    assert (await env.ended(second))["result"]["data"]["response"] == {"approved": False}

    # Who answered, and who was refused, is in the audit log.
    entries, _ = await env.rt.audit.list(verb="inquiry respond")
    seen = {(e["actor"], e["outcome"], e["detail"], e["execution_id"]) for e in entries}
    assert ("vic", "denied", f"inquiry #{asked['id']}", first) in seen
    assert ("olga", "accepted", f"inquiry #{asked['id']}", first) in seen
    assert ("rita", "accepted", f"inquiry #{other['id']}", second) in seen


async def test_an_inquiry_result_of_any_action_asks(env: Env) -> None:
    execution_id = await env.start("ask_pack.deploy_check", assignee="olga")
    asked = await env.inquiry_of(execution_id)
    assert asked["prompt"] == "Deploy where?"
    assert asked["assignees"] == ["olga"]
    path = f"/api/v1/inquiries/{asked['id']}/respond"
    status, body = await env.post(path, {"response": {"env": "dev"}})
    assert status == 400, body
    assert body["error"].startswith("response.env:"), body
    status, body = await env.post(path, {"response": "prod"})
    assert status == 400, body
    assert "must be an object" in body["error"], body
    status, body = await env.post(path, {"response": {"env": "prod"}})  # admin
    assert status == 200, body
    record = await env.ended(execution_id)
    assert record["status"] == "completed"
    assert record["result"]["data"]["response"] == {"env": "prod"}
    assert record["result"]["stderr"] == "checked\n"  # the run's own output is kept

    status, body = await env.get("/api/v1/inquiries?status=responded&limit=1")
    assert status == 200, body
    assert len(body["items"]) == 1, body
    assert body["pagination"]["total_items"] >= 1
    assert body["items"][0]["has_response"] is True
    status, body = await env.get("/api/v1/inquiries?status=maybe")
    assert status == 400, body
    assert "unknown status 'maybe'" in body["error"], body
    status, body = await env.get("/api/v1/inquiries/999999")
    assert status == 404, body


async def test_the_deadline_ends_the_inquiry_and_the_execution_timeout(env: Env) -> None:
    execution_id = await env.start("core.ask", prompt="Quick?", timeout_seconds=0.3)
    asked = await env.inquiry_of(execution_id)
    record = await env.ended(execution_id)
    assert record["status"] == "timeout"
    assert "not answered in time" in record["result"]["error"]
    assert (await env.inquiry(asked["id"]))["status"] == "timeout"
    status, body = await env.post(
        f"/api/v1/inquiries/{asked['id']}/respond", {"response": {"approved": True}}
    )
    assert status == 409, body
    assert "already timeout" in body["error"], body


async def test_cancelling_the_execution_cancels_its_inquiry(env: Env) -> None:
    execution_id = await env.start("core.ask", prompt="Cancel me?")
    asked = await env.inquiry_of(execution_id)
    status, body = await env.post(f"/api/v1/executions/{execution_id}/cancel", {})
    assert status == 200, body
    assert (await env.ended(execution_id))["status"] == "cancelled"
    assert (await env.inquiry(asked["id"]))["status"] == "cancelled"


async def test_an_unusable_inquiry_request_fails_the_run_naming_the_field(env: Env) -> None:
    execution_id = await env.start("core.ask", prompt="Bad?", response_schema={"type": 5})
    record = await env.ended(execution_id)
    assert record["status"] == "failed"
    assert "response_schema is not a valid JSON Schema" in record["result"]["error"]


async def test_the_openapi_document_lists_the_inquiry_routes(env: Env) -> None:
    status, body = await env.get("/api/v1/openapi.json")
    assert status == 200
    assert "409" in body["paths"]["/api/v1/inquiries/{id}/respond"]["post"]["responses"]
    assert "get" in body["paths"]["/api/v1/inquiries"]


async def test_of_answers_sent_at_once_exactly_one_wins(env: Env) -> None:
    execution_id = await env.start(
        "core.ask",
        prompt="Which?",
        response_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    asked = await env.inquiry_of(execution_id)
    path = f"/api/v1/inquiries/{asked['id']}/respond"
    answers = await asyncio.gather(*(env.post(path, {"response": {"n": n}}) for n in range(6)))
    winners = [n for n, (status, _) in enumerate(answers) if status == 200]
    assert len(winners) == 1, answers
    assert sorted(status for status, _ in answers) == [200] + [409] * 5
    record = await env.ended(execution_id)
    assert record["result"]["data"]["response"] == {"n": winners[0]}


async def test_sweeps_in_several_processes_end_an_overdue_inquiry_once(env: Env) -> None:
    execution_id = await env.start("core.ask", prompt="Late?", timeout_seconds=3600)
    asked = await env.inquiry_of(execution_id)
    # Three sweeps (as three serve processes) at a time the deadline has passed.
    sweeps = [inquiries_of(env.rt) for _ in range(3)]
    with patch("engine.inquiries.now_utc", lambda: datetime.now(UTC) + timedelta(hours=2)):
        moved = await asyncio.gather(*(s.sweep() for s in sweeps))
    assert sum(moved) == 1
    record = await env.ended(execution_id)
    assert record["status"] == "timeout"
    assert (await env.inquiry(asked["id"]))["status"] == "timeout"
