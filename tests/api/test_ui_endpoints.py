"""The read endpoints the pages of Attune's web UI call, written from Attune's published types
(``crates/api/src/dto/{analytics,history,worker,runtime,audit}.rs`` and the UI's own readers):
the dashboard's analytics computed from what ran, an execution's history, the workers, the
runtimes, the audit log as audit events, and the empty lists of what we have none of.

One runtime per backend (SQLite, PostgreSQL) serves the module in-process over real HTTP with a
worker and a database of its own, so counts are exact; the viewer role may only view ``core.*``
actions here, to show what a role that may not view an execution is told.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from config import Settings
from engine.api.app import build_app
from engine.runtime import Runtime, build_runtime
from tests.e2e.conftest import _fresh_postgres_database
from tests.waiting import eventually

RUN_TIMEOUT_S = 20.0
POLL_S = 0.05
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}
#: The worker's slots (few, so a test can fill them all).
WORKER_SLOTS = 3
PAGINATION = {"page", "page_size", "total_items", "total_pages", "has_previous", "has_next"}
#: Fields the UI reads (and Attune's generated client requires) of each type.
WORKER_FIELDS = {
    "id", "name", "worker_type", "worker_role", "host", "port", "status", "last_heartbeat",
    "heartbeat_age_seconds", "heartbeat_stale", "cordoned", "health_state",
    "supported_runtimes", "load", "created", "updated",
}  # fmt: skip
LOAD_FIELDS = {
    "requested", "scheduling", "scheduled", "running", "canceling", "total_active",
    "max_concurrent_executions", "utilization_percent", "queue_depth",
}  # fmt: skip
RUNTIME_FIELDS = {
    "id", "ref", "pack", "pack_ref", "description", "name", "distributions", "installation",
    "execution_config", "created", "updated",
}  # fmt: skip
AUDIT_FIELDS = {
    "id", "created", "category", "event_type", "outcome", "actor_identity", "actor_login",
    "resource_type", "resource_ref", "http_method", "http_path", "http_status", "request_id",
}  # fmt: skip
HISTORY_FIELDS = {
    "time", "operation", "entity_id", "entity_ref", "changed_fields", "old_values", "new_values"
}  # fmt: skip


@dataclass
class Env:
    rt: Runtime
    url: str
    session: aiohttp.ClientSession
    tokens: dict[str, str]

    async def call(
        self, path: str, who: str | None = "admin", method: str = "GET", body: Any = None
    ) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {self.tokens[who]}"} if who else {}
        async with self.session.request(
            method, self.url + path, json=body, headers=headers
        ) as resp:
            return resp.status, await resp.json()

    async def ok(self, path: str, who: str = "admin") -> Any:
        status, body = await self.call(path, who)
        assert status == 200, (path, body)
        return body

    async def start(self, action_ref: str, **params: Any) -> int:
        request = {"action_ref": action_ref, "parameters": params}
        status, body = await self.call("/api/v1/executions/execute", "admin", "POST", request)
        assert status == 201, body
        return int(body["data"]["id"])

    async def until(self, execution_id: int, statuses: set[str]) -> dict[str, Any]:
        async def record() -> dict[str, Any]:
            found = dict((await self.ok(f"/api/v1/executions/{execution_id}"))["data"])
            assert found["status"] in statuses or found["status"] not in TERMINAL, found
            return found

        return await eventually(
            record,
            f"execution {execution_id} to be one of {sorted(statuses)}",
            RUN_TIMEOUT_S,
            interval_s=POLL_S,
            done=lambda r: r["status"] in statuses,
        )

    async def run(self, action_ref: str, **params: Any) -> dict[str, Any]:
        return await self.until(await self.start(action_ref, **params), TERMINAL)

    async def inline_action(self, script: str) -> str:
        ref = f"ui_{uuid.uuid4().hex[:8]}.act"
        body = {"ref": ref, "entrypoint": script, "runtime_ref": "core.shell"}
        status, resp = await self.call("/api/v1/actions", "admin", "POST", body)
        assert status == 201, resp
        return ref


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def env(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Env]:
    tmp: Path = tmp_path_factory.mktemp(f"ui-{request.param}")
    (tmp / "packs").mkdir()
    url_cm = None
    if request.param == "sqlite":
        database_url = f"sqlite+aiosqlite:///{tmp / 'ui.db'}"
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
            worker_concurrency=WORKER_SLOTS,
            permissions={"viewer": {"view": ["core.*"]}},
        )
    )
    server = TestServer(build_app(rt))
    await server.start_server()
    await rt.start_worker(worker_id="ui-test-host:4242")
    tokens = {"admin": await rt.auth.issue_token("admin", name="t", ttl_s=3600)}
    await rt.auth.create_user("vic", "password-123", "viewer")
    tokens["vic"] = await rt.auth.issue_token("vic", name="t", ttl_s=3600)
    session = aiohttp.ClientSession()
    try:
        yield Env(rt, str(server.make_url("")).rstrip("/"), session, tokens)
    finally:
        await session.close()
        await server.close()
        await rt.close()
        if url_cm is not None:
            await url_cm.__aexit__(None, None, None)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _total(points: list[dict[str, Any]], label: str | None = None) -> int:
    return sum(p["value"] for p in points if label is None or p["label"] == label)


# -- the dashboard ----------------------------------------------------------------------------


async def test_dashboard_counts_what_ran_in_the_window(env: Env) -> None:
    failing = await env.inline_action("#!/bin/sh\nexit 3\n")
    before = (await env.ok("/api/v1/analytics/dashboard?hours=1"))["data"]
    ran = [await env.run("core.echo", message=f"m{i}") for i in range(3)]
    ran.append(await env.run(failing))
    assert [r["status"] for r in ran] == ["completed"] * 3 + ["failed"]

    after = (await env.ok("/api/v1/analytics/dashboard?hours=1"))["data"]
    assert set(after) == {
        "since", "until", "execution_throughput", "execution_status", "event_volume",
        "enforcement_volume", "worker_status", "failure_rate",
    }  # fmt: skip
    assert _at(after["until"]) - _at(after["since"]) == timedelta(hours=1)
    created = _total(after["execution_throughput"]) - _total(before["execution_throughput"])
    assert created == 4
    status = after["execution_status"]
    assert _total(status, "running") - _total(before["execution_status"], "running") == 4
    assert _total(status, "failed") - _total(before["execution_status"], "failed") == 1
    for series in ("execution_throughput", "execution_status", "event_volume"):
        for point in after[series]:
            assert set(point) == {"bucket", "label", "value"}
            bucket = _at(point["bucket"])
            assert bucket.utcoffset() == timedelta(0)
            assert (bucket.minute, bucket.second, bucket.microsecond) == (0, 0, 0)
    assert after["worker_status"] == []

    # The failure rate of exactly these runs: a window around them alone.
    since = _at(ran[0]["created"]).isoformat()
    until = max(_at(r["finished_at"]) for r in ran).isoformat()
    query = f"since={since}&until={until}".replace("+", "%2B")
    rate = (await env.ok(f"/api/v1/analytics/executions/failure-rate?{query}"))["data"]
    assert rate["total_terminal"] == 4
    assert (rate["completed_count"], rate["failed_count"], rate["timeout_count"]) == (3, 1, 0)
    assert rate["failure_rate_pct"] == pytest.approx(25.0)
    series = (await env.ok(f"/api/v1/analytics/executions/throughput?{query}"))["data"]
    assert _total(series["data"]) == 4
    assert _at(series["since"]) == _at(since)


async def test_dashboard_counts_events_and_enforcements(env: Env) -> None:
    trigger = f"ui_{uuid.uuid4().hex[:8]}.hook"
    status, body = await env.call("/api/v1/triggers", "admin", "POST", {"ref": trigger})
    assert status == 201, body
    status, body = await env.call(f"/api/v1/triggers/{trigger}/webhooks/enable", "admin", "POST")
    assert status == 200, body
    key = body["data"]["webhook_key"]
    rule = {"ref": f"{trigger}_rule", "trigger_ref": trigger, "action_ref": "core.noop"}
    status, body = await env.call("/api/v1/rules", "admin", "POST", rule)
    assert status == 201, body
    before = (await env.ok("/api/v1/analytics/dashboard"))["data"]
    for _n in range(2):
        status, body = await env.call(f"/api/v1/webhooks/{key}", None, "POST", {"payload": {}})
        assert status == 200, body

    async def dashboard() -> dict[str, Any]:
        return dict((await env.ok("/api/v1/analytics/dashboard"))["data"])

    after = await eventually(
        dashboard,
        "two enforcements on the dashboard",
        RUN_TIMEOUT_S,
        interval_s=POLL_S,
        done=lambda a: _total(a["enforcement_volume"]) - _total(before["enforcement_volume"]) == 2,
    )
    assert _total(after["event_volume"]) - _total(before["event_volume"]) == 2
    volume = (await env.ok("/api/v1/analytics/events/volume?hours=2"))["data"]
    assert _total(volume["data"]) == _total(after["event_volume"])


async def test_a_window_in_the_past_is_empty_and_bad_windows_are_400(env: Env) -> None:
    body = await env.ok("/api/v1/analytics/dashboard?until=2001-01-01T00:00:00Z&hours=24")
    data = body["data"]
    assert data["since"].startswith("2000-12-31T00:00:00")
    assert data["execution_throughput"] == data["execution_status"] == []
    assert data["failure_rate"]["total_terminal"] == 0
    assert data["failure_rate"]["failure_rate_pct"] == 0.0
    long = (await env.ok("/api/v1/analytics/workers/status?hours=100000"))["data"]
    assert _at(long["until"]) - _at(long["since"]) == timedelta(hours=8760)
    assert long["data"] == []
    for bad in ("hours=x", "since=yesterday", "until=0001-01-01T00:00:00"):
        status, body = await env.call(f"/api/v1/analytics/dashboard?{bad}")
        assert status == 400, body


# -- an execution's history -------------------------------------------------------------------


def _statuses(records: list[dict[str, Any]]) -> list[str]:
    """The statuses in the order the UI's timeline shows them (oldest first)."""
    return [r["new_values"]["status"] for r in reversed(records) if "status" in r["new_values"]]


async def test_history_of_a_run_newest_first(env: Env) -> None:
    record = await env.run("core.echo", message="hi")
    body = await env.ok(f"/api/v1/executions/{record['id']}/history")
    assert set(body["pagination"]) == PAGINATION
    items = body["items"]
    assert all(set(r) == HISTORY_FIELDS for r in items)
    assert [r["operation"] for r in items] == ["UPDATE", "UPDATE", "INSERT"]
    assert _statuses(items) == ["requested", "running", "completed"]
    assert [_at(r["time"]) for r in items] == sorted((_at(r["time"]) for r in items), reverse=True)
    done, started, created = items
    assert created["changed_fields"] == []
    assert created["old_values"] is None
    assert created["new_values"]["action_ref"] == "core.echo"
    assert _at(created["time"]) == _at(record["created"])
    assert "status" in started["changed_fields"]
    assert started["new_values"]["worker"] == "ui-test-host:4242"
    assert _at(started["time"]) == _at(record["started_at"])
    assert done["old_values"]["status"] == "running"
    assert done["new_values"]["result"]["succeeded"] is True
    assert all(r["entity_id"] == record["id"] and r["entity_ref"] == "core.echo" for r in items)

    path = f"/api/v1/executions/{record['id']}/history"
    only = await env.ok(f"{path}?operation=INSERT")
    assert [r["operation"] for r in only["items"]] == ["INSERT"]
    status_changes = await env.ok(f"{path}?changed_field=status&page_size=1&page=2")
    assert status_changes["pagination"]["total_items"] == 2
    assert status_changes["pagination"]["has_previous"] is True
    assert _statuses(status_changes["items"]) == ["running"]


async def test_history_of_a_cancelled_run_shows_canceling(env: Env) -> None:
    execution_id = await env.start("core.sleep", seconds=30)
    await env.until(execution_id, {"running"})
    status, body = await env.call(f"/api/v1/executions/{execution_id}/cancel", "admin", "POST")
    assert status == 200, body
    await env.until(execution_id, {"cancelled"})
    items = (await env.ok(f"/api/v1/executions/{execution_id}/history"))["items"]
    assert _statuses(items) == ["requested", "running", "canceling", "cancelled"]


async def test_history_of_a_run_cancelled_before_it_started(env: Env) -> None:
    busy = [await env.start("core.sleep", seconds=30) for _ in range(WORKER_SLOTS)]
    for execution_id in busy:
        await env.until(execution_id, {"running"})
    waiting = await env.start("core.noop")  # every slot is taken: it stays requested
    status, body = await env.call(f"/api/v1/executions/{waiting}/cancel", "admin", "POST")
    assert status == 200, body
    assert body["data"]["status"] == "cancelled"
    for execution_id in busy:
        await env.call(f"/api/v1/executions/{execution_id}/cancel", "admin", "POST")
    items = (await env.ok(f"/api/v1/executions/{waiting}/history"))["items"]
    assert _statuses(items) == ["requested", "cancelled"]
    assert items[0]["new_values"]["result"]["error"] == "cancelled by admin before it started"
    for execution_id in busy:
        await env.until(execution_id, TERMINAL)


async def test_history_answers_as_the_execution_does(env: Env) -> None:
    hidden = await env.run(await env.inline_action("#!/bin/sh\necho hi\n"))
    status, body = await env.call(f"/api/v1/executions/{hidden['id']}/history", "vic")
    assert status == 403, body
    status, body = await env.call(f"/api/v1/executions/{hidden['id']}/artifacts", "vic")
    assert status == 403, body
    seen = await env.run("core.noop")
    assert len((await env.ok(f"/api/v1/executions/{seen['id']}/history", "vic"))["items"]) == 3
    status, body = await env.call("/api/v1/executions/999999999/history")
    assert status == 404, body
    status, body = await env.call(f"/api/v1/executions/{seen['id']}/history", None)
    assert status == 401, body


# -- workers ----------------------------------------------------------------------------------


async def test_workers_list_this_servers_worker_with_its_load(env: Env) -> None:
    execution_id = await env.start("core.sleep", seconds=30)
    await env.until(execution_id, {"running"})
    body = await env.ok("/api/v1/workers?page=1&page_size=100", "vic")
    assert set(body["pagination"]) == PAGINATION
    [worker] = [w for w in body["items"] if w["name"] == "ui-test-host:4242"]
    assert set(worker) >= WORKER_FIELDS
    assert set(worker["load"]) >= LOAD_FIELDS
    assert worker["worker_role"] == "action"
    assert worker["worker_type"] == "local"
    assert worker["host"] == "ui-test-host"
    assert worker["status"] == worker["health_state"] == "busy"
    assert worker["heartbeat_stale"] is False
    assert worker["cordoned"] is False
    assert worker["load"]["running"] >= 1
    assert worker["load"]["max_concurrent_executions"] == env.rt.settings.worker_concurrency
    names = {r["name"] for r in worker["supported_runtimes"]}
    assert names == {"shell", "python", "builtin"}

    alone = await env.ok(f"/api/v1/workers/{worker['id']}")
    assert alone["id"] == worker["id"]
    assert alone["name"] == worker["name"]
    status, body = await env.call(f"/api/v1/executions/{execution_id}/cancel", "admin", "POST")
    assert status == 200, body
    await env.until(execution_id, TERMINAL)
    idle = await env.ok(f"/api/v1/workers/{worker['id']}")
    assert idle["status"] == "active"
    assert idle["load"]["total_active"] == 0

    assert (await env.ok("/api/v1/workers?health_state=offline"))["items"] == []
    assert len((await env.ok("/api/v1/workers?role=action&cordoned=false"))["items"]) == 1
    for bad in ("role=robot", "status=sleeping", "cordoned=maybe", "health_state=x"):
        status, body = await env.call(f"/api/v1/workers?{bad}")
        assert status == 400, body
    status, body = await env.call("/api/v1/workers/1")
    assert status == 404, body


# -- runtimes ---------------------------------------------------------------------------------


async def test_runtimes_are_this_servers_runners(env: Env) -> None:
    body = await env.ok("/api/v1/runtimes?page=1&page_size=100", "vic")
    refs = [r["ref"] for r in body["items"]]
    assert refs == ["core.shell", "core.python", "core.builtin"]
    assert body["pagination"]["total_items"] == 3
    core = (await env.ok("/api/v1/packs/core"))["data"]
    for runtime in body["items"]:
        assert set(runtime) >= RUNTIME_FIELDS
        assert runtime["pack"] == core["id"]
        assert runtime["pack_ref"] == "core"
        assert isinstance(runtime["distributions"], dict)
        assert isinstance(runtime["execution_config"], dict)
    one = (await env.ok("/api/v1/runtimes/core.python"))["data"]
    assert one["name"] == "Python"
    assert one["runner_type"] == "python"
    status, body = await env.call("/api/v1/runtimes/core.nodejs")
    assert status == 404, body
    assert len((await env.ok("/api/v1/packs/core/runtimes"))["items"]) == 3
    page = await env.ok("/api/v1/packs/core/runtimes?per_page=2&page=2")
    assert [r["ref"] for r in page["items"]] == ["core.builtin"]
    status, body = await env.call("/api/v1/packs/no_such_pack/runtimes")
    assert status == 404, body


# -- what we have none of ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sensors",
        "/api/v1/sensors/enabled",
        "/api/v1/packs/core/sensors",
        "/api/v1/workflows",
        "/api/v1/packs/core/workflows",
        "/api/v1/queues?page=1&per_page=20",
        "/api/v1/packs/core/queues",
        "/api/v1/artifacts?page=1&per_page=20",
    ],
)
async def test_empty_lists_in_attunes_envelope(env: Env, path: str) -> None:
    body = await env.ok(path, "vic")
    assert body["items"] == []
    assert set(body["pagination"]) == PAGINATION
    assert body["pagination"]["total_items"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/sensors/core.cpu",
        "/api/v1/workflows/core.flow",
        "/api/v1/queues/core.inbox",
        "/api/v1/artifacts/7",
        "/api/v1/packs/no_such_pack/sensors",
        "/api/v1/packs/no_such_pack/workflows",
        "/api/v1/packs/no_such_pack/queues",
        "/api/v1/triggers/no_such.trigger/sensors",
        "/api/v1/executions/999999999/artifacts",
    ],
)
async def test_one_of_them_is_404(env: Env, path: str) -> None:
    status, body = await env.call(path)
    assert status == 404, body
    assert set(body) == {"error", "code"}


async def test_an_executions_artifacts_are_an_empty_list(env: Env) -> None:
    record = await env.run("core.noop")
    assert await env.ok(f"/api/v1/executions/{record['id']}/artifacts", "vic") == {"data": []}


# -- audit events -----------------------------------------------------------------------------


async def test_audit_events_map_our_log_onto_attunes_fields(env: Env) -> None:
    record = await env.run("core.echo", message="audited")
    body = await env.ok(f"/api/v1/audit-events?resource_id={record['id']}")
    assert set(body["pagination"]) == PAGINATION
    [event] = body["items"]
    assert set(event) >= AUDIT_FIELDS
    assert event["category"] == "execution"
    assert event["event_type"] == "execution.run"
    assert event["outcome"] == "success"
    assert event["actor_login"] == "admin"
    assert isinstance(event["actor_identity"], int)
    assert event["resource_type"] == "execution"
    assert event["resource_ref"] == "core.echo"
    # Ours, beside Attune's.
    assert event["verb"] == "run"
    assert event["source"] == "api"
    assert event["details"]["outcome"] == "accepted"
    assert event["details"]["parameters"] == {"message": "audited"}
    one = (await env.ok(f"/api/v1/audit-events/{event['id']}"))["data"]
    assert one == event
    status, body = await env.call("/api/v1/audit-events/999999999")
    assert status == 404, body


async def test_audit_events_are_for_admins_and_a_refusal_is_an_rbac_event(env: Env) -> None:
    status, body = await env.call("/api/v1/audit-events", "vic")
    assert status == 403, body
    status, body = await env.call("/api/v1/audit-events", None)
    assert status == 401, body
    body = await env.ok("/api/v1/audit-events?category=rbac&outcome=denied&actor_login=VI")
    refused = body["items"][0]
    assert refused["event_type"] == "rbac.denied"
    assert refused["actor_login"] == "vic"
    assert refused["http_path"] == "/api/v1/audit-events"
    assert refused["http_status"] == 403
    same = await env.ok("/api/v1/audit-events?http_status=403&http_path=audit-events")
    assert refused["id"] in {e["id"] for e in same["items"]}
    by_type = await env.ok("/api/v1/audit-events?event_type=rbac.denied&per_page=1")
    assert by_type["pagination"]["page_size"] == 1
    assert by_type["items"][0]["id"] == refused["id"]


async def test_audit_event_filters(env: Env) -> None:
    record = await env.run("core.noop")
    base = f"/api/v1/audit-events?resource_id={record['id']}"
    assert len((await env.ok(f"{base}&category=execution"))["items"]) == 1
    assert (await env.ok(f"{base}&category=secret"))["items"] == []
    assert (await env.ok(f"{base}&outcome=failure"))["items"] == []
    assert len((await env.ok(f"{base}&event_type=execution.run"))["items"]) == 1
    assert len((await env.ok(f"{base}&resource_type=execution"))["items"]) == 1
    assert (await env.ok(f"{base}&http_method=GET"))["items"] == []
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat().replace("+", "%2B")
    assert (await env.ok(f"{base}&created_after={later}"))["items"] == []
    assert len((await env.ok(f"{base}&created_before={later}"))["items"]) == 1
    for bad in ("category=misc", "outcome=maybe", "resource_id=x", "created_after=soon"):
        status, body = await env.call(f"/api/v1/audit-events?{bad}")
        assert status == 400, (bad, body)


# -- everyone must say who they are -----------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/analytics/dashboard",
        "/api/v1/analytics/executions/status",
        "/api/v1/analytics/executions/throughput",
        "/api/v1/analytics/executions/failure-rate",
        "/api/v1/analytics/events/volume",
        "/api/v1/analytics/enforcements/volume",
        "/api/v1/analytics/workers/status",
        "/api/v1/workers",
        "/api/v1/workers/1",
        "/api/v1/runtimes",
        "/api/v1/runtimes/core.shell",
        "/api/v1/packs/core/runtimes",
        "/api/v1/sensors",
        "/api/v1/workflows",
        "/api/v1/queues",
        "/api/v1/artifacts",
        "/api/v1/executions/1/artifacts",
        "/api/v1/audit-events/1",
    ],
)
async def test_no_token_is_401(env: Env, path: str) -> None:
    status, body = await env.call(path, None)
    assert status == 401, body
