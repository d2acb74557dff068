"""Who may do what over the REST API, and the audit log that records it.

One ``attune serve`` (SQLite, in-process broker) for the module, with operators narrowed to
running and cancelling ``core.*`` and viewing ``core.*`` and ``examples.*``. Two registered
people hold tokens made with ``attune token create``: olga (operator) and victor (viewer).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import (
    audit,
    call,
    cancel_quietly,
    execute,
    executed,
    executions_of,
    inline_action,
    register,
    token_for,
    wait_status,
)

pytestmark = pytest.mark.e2e

PERMISSIONS = {
    "operator": {"run": ["core.*"], "cancel": ["core.*"], "view": ["core.*", "examples.*"]}
}
OPERATOR, VIEWER = "olga", "victor"
SECRET_VALUE = "hunter2-sup3r-s3cret"


@dataclass
class People:
    admin: aiohttp.ClientSession
    operator: aiohttp.ClientSession
    viewer: aiohttp.ClientSession


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-permissions")
    env = engine_env(
        tmp,
        ATTUNE_PERMISSIONS=json.dumps(PERMISSIONS),
        ATTUNE_ALLOW_REGISTRATION="true",
        ATTUNE_REGISTRATION_ROLE="operator",  # tokens of both roles are made for them
        ATTUNE_LOG_FORMAT="text",
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def tokens(server: Server) -> dict[str, str]:
    await register(server.base_url, OPERATOR, "olga-password-1")
    await register(server.base_url, VIEWER, "victor-password-1")
    admin, operator, viewer = await asyncio.gather(
        login(server.base_url),
        token_for(server, OPERATOR, "operator"),
        token_for(server, VIEWER, "viewer"),
    )
    return {"admin": admin, "operator": operator, "viewer": viewer}


@pytest.fixture
async def people(server: Server, tokens: dict[str, str]) -> AsyncIterator[People]:
    async with (
        client(server.base_url, tokens["admin"]) as admin,
        client(server.base_url, tokens["operator"]) as operator,
        client(server.base_url, tokens["viewer"]) as viewer,
    ):
        yield People(admin, operator, viewer)


def the_entry(entries: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The one audit entry with ``fields``; fails showing the log otherwise."""
    found = [e for e in entries if all(e.get(k) == v for k, v in fields.items())]
    assert len(found) == 1, f"expected one audit entry with {fields}, got {found} in {entries}"
    return found[0]


def forbidden(answer: Any, *words: str) -> str:
    assert answer.status == 403, answer.body
    assert answer.body["code"] == "FORBIDDEN", answer.body
    for word in words:
        assert word in answer.error, (word, answer.error)
    return str(answer.error)


# -- operator ---------------------------------------------------------------------------------


async def test_operator_runs_core_but_not_examples(people: People) -> None:
    ran = await execute(people.operator, "core.echo", {"message": "allowed"})
    assert ran.status == 201, ran.body
    assert ran.data["requester"]["identity"] == OPERATOR
    before = len(await executions_of(people.admin, "examples.greet"))

    refused = await execute(people.operator, "examples.greet", {"name": "nope"})
    forbidden(refused, "'run'", "examples.greet", "operator")
    assert len(await executions_of(people.admin, "examples.greet")) == before

    log = await audit(people.admin, actor=OPERATOR)
    accepted = the_entry(log, verb="run", outcome="accepted", execution_id=ran.data["id"])
    assert accepted["target"] == "core.echo"
    assert accepted["parameters"] == {"message": "allowed"}
    assert accepted["role"] == "operator"
    assert accepted["source"] == "api"
    denied = the_entry(log, verb="run", outcome="denied", target="examples.greet")
    assert denied["role"] == "operator"
    assert denied["execution_id"] is None
    assert "'run'" in denied["detail"]


async def test_operator_views_but_cannot_cancel_examples(people: People) -> None:
    record = await executed(people.admin, "examples.wait", {"seconds": 30})
    execution_id = record["id"]
    try:
        seen = await call(people.operator, "GET", f"/api/v1/executions/{execution_id}")
        assert seen.status == 200, seen.body
        assert seen.data["action_ref"] == "examples.wait"

        refused = await call(people.operator, "POST", f"/api/v1/executions/{execution_id}/cancel")
        forbidden(refused, "'cancel'", "examples.wait")
        status = (await call(people.admin, "GET", f"/api/v1/executions/{execution_id}")).data
        assert status["status"] not in {"canceling", "cancelled"}, status

        entry = the_entry(
            await audit(people.admin, actor=OPERATOR, verb="cancel"),
            execution_id=execution_id,
        )
        assert entry["outcome"] == "denied"
        assert entry["target"] == "examples.wait"
    finally:
        await cancel_quietly(people.admin, execution_id)
    await wait_status(people.admin, execution_id, {"cancelled"})


async def test_operator_cannot_see_executions_outside_its_view(people: People) -> None:
    ref = await inline_action(people.admin, "adhoc_x", "y", "echo hidden")
    hidden = await executed(people.admin, ref)
    mine = await executed(people.operator, "core.echo", {"message": "visible"})

    refused = await call(people.operator, "GET", f"/api/v1/executions/{hidden['id']}")
    forbidden(refused, "'view'", ref)
    entry = the_entry(
        await audit(people.admin, actor=OPERATOR, verb="view"), execution_id=hidden["id"]
    )
    assert entry["outcome"] == "denied"
    assert entry["target"] == ref

    listed = await call(people.operator, "GET", "/api/v1/executions?per_page=100")
    assert listed.status == 200, listed.body
    refs = {item["action_ref"] for item in listed.items}
    ids = {item["id"] for item in listed.items}
    assert mine["id"] in ids
    assert hidden["id"] not in ids
    assert all(r.startswith(("core.", "examples.")) for r in refs), refs
    only_hidden = await call(people.operator, "GET", f"/api/v1/executions?action_ref={ref}")
    assert only_hidden.items == []
    # The admin sees it.
    assert [e["id"] for e in await executions_of(people.admin, ref)] == [hidden["id"]]


async def test_operator_pages_hold_only_viewable_executions(people: People) -> None:
    for i in range(2):
        await executed(people.operator, "core.echo", {"message": f"page {i}"})
    ref = await inline_action(people.admin, "adhoc_hidden", "z", "true")
    for _ in range(2):  # the newest two are not viewable by operators
        await executed(people.admin, ref)

    everything = await call(people.operator, "GET", "/api/v1/executions?per_page=100")
    viewable = len(everything.items)
    first = await call(people.operator, "GET", "/api/v1/executions?per_page=2&page=1")
    assert first.status == 200, first.body
    assert len(first.items) == 2, f"page 1 of 2 per page holds {first.items}"
    assert first.body["pagination"]["total_items"] == viewable, first.body["pagination"]


# -- viewer -----------------------------------------------------------------------------------


async def test_viewer_cannot_run_but_can_view(people: People) -> None:
    before = len(await executions_of(people.admin, "core.noop"))
    refused = await execute(people.viewer, "core.noop")
    assert refused.status == 403, refused.body
    assert len(await executions_of(people.admin, "core.noop")) == before

    record = await executed(people.admin, "core.echo", {"message": "for the viewer"})
    seen = await call(people.viewer, "GET", f"/api/v1/executions/{record['id']}")
    assert seen.status == 200, seen.body
    refused_cancel = await call(people.viewer, "POST", f"/api/v1/executions/{record['id']}/cancel")
    assert refused_cancel.status == 403, refused_cancel.body


async def test_viewer_run_denial_is_audited(people: People) -> None:
    refused = await execute(people.viewer, "core.echo", {"message": "viewer tries"})
    assert refused.status == 403, refused.body
    entries = await audit(people.admin, actor=VIEWER, outcome="denied")
    assert any(e["verb"] == "run" and e["target"] == "core.echo" for e in entries), entries


# -- the audit log ----------------------------------------------------------------------------


async def test_accepted_run_is_audited_with_secrets_redacted(people: People) -> None:
    ref = await inline_action(
        people.admin,
        "adhoc_secret",
        "deploy",
        "cat > /dev/null; echo deployed",
        parameters={
            "api_token": {"type": "string", "secret": True, "required": True},
            "env": {"type": "string", "default": "staging"},
        },
    )
    record = await executed(people.admin, ref, {"api_token": SECRET_VALUE, "env": "prod"})
    assert await wait_status(people.admin, record["id"], {"completed", "failed"}) == "completed"

    entry = the_entry(
        await audit(people.admin, verb="run", outcome="accepted"), execution_id=record["id"]
    )
    assert entry["actor"] == "admin"
    assert entry["role"] == "admin"
    assert entry["target"] == ref
    assert entry["parameters"] == {"api_token": "********", "env": "prod"}
    raw = await call(people.admin, "GET", "/api/v1/audit?per_page=100")
    assert SECRET_VALUE not in json.dumps(raw.body)


async def test_audit_is_for_admins_only(server: Server, people: People) -> None:
    for session in (people.operator, people.viewer):
        refused = await call(session, "GET", "/api/v1/audit")
        assert refused.status == 403, refused.body
    async with client(server.base_url) as anon:
        assert (await call(anon, "GET", "/api/v1/audit")).status == 401


async def test_audit_filters(people: People) -> None:
    since = datetime.now(UTC)
    await asyncio.sleep(0.01)
    ran = await executed(people.operator, "core.echo", {"message": "filtered"})
    refused = await execute(people.operator, "examples.fail")
    assert refused.status == 403

    recent = await audit(people.admin, since=since.isoformat())
    assert {(e["actor"], e["verb"], e["outcome"]) for e in recent} == {
        (OPERATOR, "run", "accepted"),
        (OPERATOR, "run", "denied"),
    }, recent
    assert all(datetime.fromisoformat(e["at"]) >= since for e in recent)
    # Newest first.
    assert [e["outcome"] for e in recent] == ["denied", "accepted"]

    by_actor = await audit(people.admin, actor=OPERATOR)
    assert by_actor
    assert all(e["actor"] == OPERATOR for e in by_actor)
    assert ran["id"] in {e["execution_id"] for e in by_actor}
    assert await audit(people.admin, actor="nobody-at-all") == []

    denied = await audit(people.admin, outcome="denied")
    assert denied
    assert all(e["outcome"] == "denied" for e in denied)
    assert any(e["target"] == "examples.fail" for e in denied)

    cancels = await audit(people.admin, verb="cancel")
    assert all(e["verb"] == "cancel" for e in cancels)
    combined = await audit(
        people.admin, actor=OPERATOR, verb="run", outcome="denied", since=since.isoformat()
    )
    assert [e["target"] for e in combined] == ["examples.fail"]

    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert await audit(people.admin, since=future) == []
    bad = await call(people.admin, "GET", "/api/v1/audit?since=yesterday")
    assert bad.status == 400, bad.body
    assert "since" in bad.error

    paged = await call(people.admin, "GET", "/api/v1/audit?per_page=1&page=2")
    assert paged.status == 200
    assert len(paged.items) == 1
    assert paged.body["pagination"]["page_size"] == 1
    assert paged.body["pagination"]["total_items"] >= 2
