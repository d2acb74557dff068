"""Workflow definitions over HTTP on SQLite and PostgreSQL: Attune's CRUD, the 422 refusals
that name the task and field, permissions, the workflow's disabled action, and a pack folder
with a good and two bad workflow files (the pack loads; the bad files are named)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.automation.wire import DATABASES, call, serving, uniq
from tests.e2e.conftest import Server, client
from tests.scenario.harness import login
from tests.scenario.slack_standin import SlackStandIn
from tests.trust.support import register, token_for

pytestmark = pytest.mark.e2e

PERMISSIONS = {"operator": {"run": ["core.*"], "view": ["*"]}}
DEFINITION = {
    "vars": {"attempts": 0},
    "tasks": [
        {
            "name": "greet",
            "action": "core.echo",
            "input": {"message": "hello {{ parameters.who }}"},
            "on_success": "done",
            "on_failure": "report",
        },
        {"name": "done", "action": "core.noop"},
        {"name": "report", "action": "core.echo", "input": {"message": "{{ result() }}"}},
    ],
    "output_map": {"attempts": "{{ vars.attempts }}"},
}


@pytest.fixture(scope="module", params=DATABASES)
async def server(
    request: pytest.FixtureRequest, standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp(f"workflows-{request.param}")
    async with serving(
        request.param,
        standin,
        tmp,
        ATTUNE_PERMISSIONS=json.dumps(PERMISSIONS),
        ATTUNE_ALLOW_REGISTRATION="true",
        ATTUNE_REGISTRATION_ROLE="operator",
    ) as srv:
        yield srv


@pytest.fixture(scope="module")
async def tokens(server: Server) -> dict[str, str]:
    await register(server.base_url, "wendy", "wendy-password-1")
    operator = await token_for(server, "wendy", "operator")
    return {"admin": await login(server.base_url), "operator": operator}


@pytest.fixture
async def api(server: Server, tokens: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, tokens["admin"]) as session:
        yield session


async def new_pack(api: aiohttp.ClientSession) -> str:
    ref = f"wf{uniq()}"
    pack = {"ref": ref, "label": ref, "version": "1.0.0"}
    status, got = await call(api, "POST", "/api/v1/packs", pack)
    assert status == 201, got
    return ref


def body(pack: str, name: str = "hello", **over: Any) -> dict[str, Any]:
    return {
        "ref": f"{pack}.{name}",
        "pack_ref": pack,
        "label": "Hello workflow",
        "version": "1.0.0",
        "description": "says hello",
        "param_schema": {"who": {"type": "string", "required": True}},
        "definition": DEFINITION,
        "tags": ["demo", "runbook"],
        "unknown_field": "ignored as Attune ignores it",
        **over,
    }


async def test_crud_as_attunes_clients_call_it(api: aiohttp.ClientSession) -> None:
    pack = await new_pack(api)
    status, got = await call(api, "POST", "/api/v1/workflows", body(pack))
    assert status == 201, got
    data = got["data"]
    assert (data["ref"], data["pack_ref"], data["label"], data["version"]) == (
        f"{pack}.hello",
        pack,
        "Hello workflow",
        "1.0.0",
    )
    assert data["tags"] == ["demo", "runbook"]
    assert isinstance(data["pack"], int)
    tasks = data["definition"]["tasks"]
    assert tasks[0]["next"] == [
        {"when": "{{ succeeded() }}", "do": ["done"]},
        {"when": "{{ failed() }}", "do": ["report"]},
    ]
    assert (await call(api, "POST", "/api/v1/workflows", body(pack)))[0] == 409
    status, got = await call(api, "GET", f"/api/v1/workflows/{pack}.hello")
    assert status == 200
    assert got["data"]["definition"] == data["definition"]

    # listed, filtered as Attune filters, and under its pack
    await call(api, "POST", "/api/v1/workflows", body(pack, "other", tags=["other"]))
    status, got = await call(api, "GET", f"/api/v1/workflows?pack_ref={pack}&tags=runbook")
    assert [w["ref"] for w in got["items"]] == [f"{pack}.hello"]
    assert got["pagination"]["total_items"] == 1
    status, got = await call(api, "GET", f"/api/v1/packs/{pack}/workflows")
    assert [w["ref"] for w in got["items"]] == [f"{pack}.hello", f"{pack}.other"]
    assert (await call(api, "GET", "/api/v1/packs/nosuchpack/workflows"))[0] == 404

    # the workflow is an action of the same ref, runnable
    status, action = await call(api, "GET", f"/api/v1/actions/{pack}.hello")
    assert status == 200, action
    assert action["data"]["runtime_ref"] == "workflow"
    assert action["data"]["enabled"] is True
    assert action["data"]["disabled_reason"] is None
    assert "who" in action["data"]["param_schema"]
    status, got = await call(
        api,
        "POST",
        "/api/v1/executions/execute",
        {"action_ref": f"{pack}.hello", "parameters": {"who": "x"}},
    )
    assert status == 201, got  # it runs (tests/e2e/test_workflow_runs.py follows runs)
    assert got["data"]["action_ref"] == f"{pack}.hello"

    # its action changes only with it
    for method in ("PUT", "DELETE"):
        status, got = await call(api, method, f"/api/v1/actions/{pack}.hello", {"label": "x"})
        assert status == 400, got
        assert (
            f"is a workflow: change or delete it at /api/v1/workflows/{pack}.hello" in got["error"]
        )

    # update sends only what changes
    status, got = await call(
        api,
        "PUT",
        f"/api/v1/workflows/{pack}.hello",
        {"label": "Updated", "description": "new words", "version": "1.1.0"},
    )
    assert status == 200, got
    assert (got["data"]["label"], got["data"]["version"]) == ("Updated", "1.1.0")
    assert got["data"]["definition"]["tasks"] == data["definition"]["tasks"]
    status, action = await call(api, "GET", f"/api/v1/actions/{pack}.hello")
    assert action["data"]["label"] == "Updated"

    status, got = await call(api, "DELETE", f"/api/v1/workflows/{pack}.hello")
    assert status == 200
    assert got["success"] is True
    assert (await call(api, "GET", f"/api/v1/workflows/{pack}.hello"))[0] == 404
    assert (await call(api, "GET", f"/api/v1/actions/{pack}.hello"))[0] == 404
    assert (await call(api, "DELETE", f"/api/v1/workflows/{pack}.hello"))[0] == 404


async def test_bad_definitions_are_refused_with_422_naming_task_and_field(
    api: aiohttp.ClientSession,
) -> None:
    pack = await new_pack(api)
    bad = {
        "unknown do": (
            [{"name": "a", "action": "core.echo", "next": [{"do": ["nope"]}]}],
            "task 'a' next[0].do: no task named 'nope'",
        ),
        "missing action": (
            [{"name": "a", "action": "ops.restart_everything"}],
            "task 'a' action: no action 'ops.restart_everything'",
        ),
        "bad template": (
            [{"name": "a", "action": "core.echo", "input": {"message": "{{ parameters.x"}}],
            "task 'a' input.message",
        ),
        "cycle": (
            [
                {"name": "a", "action": "core.echo", "on_complete": "b"},
                {"name": "b", "action": "core.echo", "on_complete": "c"},
                {"name": "c", "action": "core.echo", "on_complete": "b"},
            ],
            "cycle without an exit",
        ),
    }
    for case, (tasks, expected) in bad.items():
        status, got = await call(
            api, "POST", "/api/v1/workflows", body(pack, "bad", definition={"tasks": tasks})
        )
        assert status == 422, (case, got)
        assert expected in got["error"], (case, got)
    assert (await call(api, "GET", f"/api/v1/workflows/{pack}.bad"))[0] == 404
    assert (await call(api, "GET", f"/api/v1/actions/{pack}.bad"))[0] == 404
    # a bad update leaves the stored definition as it was
    assert (await call(api, "POST", "/api/v1/workflows", body(pack)))[0] == 201
    status, got = await call(
        api, "PUT", f"/api/v1/workflows/{pack}.hello", {"definition": {"tasks": bad["cycle"][0]}}
    )
    assert status == 422
    assert "cycle without an exit" in got["error"]
    status, got = await call(api, "GET", f"/api/v1/workflows/{pack}.hello")
    assert got["data"]["definition"]["tasks"][0]["name"] == "greet"
    # a bare name is a parameter of param_schema (Attune's fallback), else unknown
    bare = {"tasks": [{"name": "a", "action": "core.echo", "input": {"message": "{{ who }}"}}]}
    status, got = await call(api, "POST", "/api/v1/workflows", body(pack, "bare", definition=bare))
    assert status == 201, got
    assert got["data"]["definition"]["parameters"] == {"who": {"type": "string", "required": True}}
    status, got = await call(
        api,
        "POST",
        "/api/v1/workflows",
        body(pack, "bare2", definition=bare, param_schema={"whom": {"type": "string"}}),
    )
    assert status == 422, got
    assert "task 'a' input.message: unknown name 'who'" in got["error"]
    # the pack must exist, the ref must be in it, the body must be whole
    status, got = await call(api, "POST", "/api/v1/workflows", body("nosuchpack"))
    assert status == 404, got
    status, got = await call(api, "POST", "/api/v1/workflows", body(pack) | {"ref": "other.x"})
    assert status == 400
    assert "does not belong" in got["error"]
    status, got = await call(api, "POST", "/api/v1/workflows", {"ref": f"{pack}.x"})
    assert status == 400, got


async def test_changing_needs_manage_and_reading_needs_a_token(
    server: Server, tokens: dict[str, str], api: aiohttp.ClientSession
) -> None:
    pack = await new_pack(api)
    assert (await call(api, "POST", "/api/v1/workflows", body(pack)))[0] == 201
    async with client(server.base_url, tokens["operator"]) as wendy:
        status, got = await call(wendy, "POST", "/api/v1/workflows", body(pack, "mine"))
        assert status == 403, got
        status, got = await call(wendy, "DELETE", f"/api/v1/workflows/{pack}.hello")
        assert status == 403, got
        status, got = await call(wendy, "GET", f"/api/v1/workflows/{pack}.hello")
        assert status == 200, got
    async with aiohttp.ClientSession(base_url=server.base_url) as anon:
        assert (await call(anon, "GET", "/api/v1/workflows"))[0] == 401
    status, got = await call(api, "GET", "/api/v1/openapi.json")
    assert {"/api/v1/workflows", "/api/v1/workflows/{ref}", "/api/v1/packs/{ref}/workflows"} <= set(
        got["paths"]
    )


GOOD = """
ref: {pack}.restart
label: Restart
version: 1.0.0
parameters:
  service: {{type: string, required: true}}
tasks:
  - name: restart
    action: core.echo
    input: {{message: "restart {{{{ parameters.service }}}}"}}
    on_failure: rollback
  - name: rollback
    action: {pack}.rollback
"""


async def test_pack_folder_with_good_and_bad_workflow_files(
    api: aiohttp.ClientSession, tmp_path: Path
) -> None:
    pack = f"wfpack{uniq()}"
    folder = tmp_path / pack
    (folder / "actions").mkdir(parents=True)
    (folder / "workflows").mkdir()
    (folder / "pack.yaml").write_text(f"ref: {pack}\nlabel: Workflow pack\nversion: 1.0.0\n")
    (folder / "actions" / "rollback.yaml").write_text(
        "name: rollback\nrunner_type: shell\nentry_point: rollback.sh\n"
    )
    (folder / "actions" / "rollback.sh").write_text("#!/bin/sh\necho rolled back\n")
    (folder / "workflows" / "restart.yaml").write_text(GOOD.format(pack=pack))
    (folder / "workflows" / "broken.yaml").write_text(
        "tasks:\n  - name: a\n    action: core.echo\n    on_success: nowhere\n"
    )
    (folder / "workflows" / "garbled.yaml").write_text("tasks: [\n")
    status, got = await call(api, "POST", "/api/v1/packs/register", {"path": str(folder)})
    assert status == 400, got
    assert "broken.yaml: task 'a' on_success" not in got["error"]  # folded into next
    assert "broken.yaml: task 'a' next[0].do: no task named 'nowhere'" in got["error"], got
    assert "garbled.yaml: invalid YAML" in got["error"], got
    # the pack loaded: its action and its good workflow are there
    status, got = await call(api, "GET", f"/api/v1/workflows/{pack}.restart")
    assert status == 200, got
    assert got["data"]["param_schema"] == {"service": {"type": "string", "required": True}}
    assert got["data"]["is_adhoc"] is False
    status, action = await call(api, "GET", f"/api/v1/actions/{pack}.restart")
    assert action["data"]["enabled"] is True
    assert (await call(api, "GET", f"/api/v1/actions/{pack}.rollback"))[0] == 200
    assert (await call(api, "GET", f"/api/v1/workflows/{pack}.broken"))[0] == 404
    # registered again without the good file: its definition and action go
    (folder / "workflows" / "restart.yaml").unlink()
    status, got = await call(
        api, "POST", "/api/v1/packs/register", {"path": str(folder), "force": True}
    )
    assert status == 400, got  # the bad files are still there
    assert (await call(api, "GET", f"/api/v1/workflows/{pack}.restart"))[0] == 404
    assert (await call(api, "GET", f"/api/v1/actions/{pack}.restart"))[0] == 404
    # deleting the pack takes its workflows along
    (folder / "workflows" / "restart.yaml").write_text(GOOD.format(pack=pack))
    status, got = await call(
        api, "POST", "/api/v1/packs/register", {"path": str(folder), "force": True}
    )
    assert (await call(api, "GET", f"/api/v1/workflows/{pack}.restart"))[0] == 200
    assert (await call(api, "DELETE", f"/api/v1/packs/{pack}"))[0] == 200
    status, got = await call(api, "GET", f"/api/v1/workflows?pack_ref={pack}")
    assert got["items"] == []


async def test_the_example_runbooks_are_loaded_at_start(
    server: Server, api: aiohttp.ClientSession
) -> None:
    status, got = await call(api, "GET", "/api/v1/packs/examples/workflows")
    assert status == 200, got
    assert [w["ref"] for w in got["items"]] == [
        "examples.ask_before_restart",
        "examples.restart_with_rollback",
    ]
    status, got = await call(api, "GET", "/api/v1/workflows/examples.ask_before_restart")
    assert status == 200, got
    assert [t["action"] for t in got["data"]["definition"]["tasks"]] == [
        "core.http_request",
        "core.ask",
        "examples.restart_service",
        "core.noop",
    ]
    assert "examples/workflows" not in server.logs()  # no workflow file was refused


async def test_saving_a_workflow_needs_run_on_every_action_it_runs(
    server: Server, tokens: dict[str, str], api: aiohttp.ClientSession
) -> None:
    """The operator here manages and runs ``core.*`` only: a workflow of theirs may not run
    ``examples.fail`` for them (whoever may run the workflow runs its tasks)."""
    async with client(server.base_url, tokens["operator"]) as wendy:
        sneaky = {**DEFINITION, "tasks": [{"name": "boom", "action": "examples.fail"}]}
        status, got = await call(
            wendy, "POST", "/api/v1/workflows", body("core", f"sneaky{uniq()}", definition=sneaky)
        )
        assert status == 403, got
        assert "'run' permission on examples.fail" in got["error"]
        name = f"fine{uniq()}"
        status, got = await call(wendy, "POST", "/api/v1/workflows", body("core", name))
        assert status == 201, got
        status, got = await call(
            wendy, "PUT", f"/api/v1/workflows/core.{name}", {"definition": sneaky}
        )
        assert status == 403, got
        assert (await call(wendy, "DELETE", f"/api/v1/workflows/core.{name}"))[0] == 200
    # The admin may run everything: the same definition is saved.
    pack = await new_pack(api)
    status, got = await call(api, "POST", "/api/v1/workflows", body(pack, definition=sneaky))
    assert status == 201, got
