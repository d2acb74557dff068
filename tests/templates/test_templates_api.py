"""Execution templates over HTTP and through signed Slack requests, on SQLite and PostgreSQL.

One ``attune serve`` per database for the module (in-process broker), with operators narrowed
to running and viewing ``core.*``; olga holds an operator token. Slack users are operators.
Each test makes its own action and templates (fresh refs)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.automation.wire import DATABASES, call, finished, serving, uniq
from tests.e2e.conftest import Server, client
from tests.scenario.harness import login, slash
from tests.scenario.slack_standin import SlackStandIn
from tests.trust.support import register, token_for

pytestmark = pytest.mark.e2e

PERMISSIONS = {"operator": {"run": ["core.*"], "cancel": ["core.*"], "view": ["core.*"]}}
SECRET = "s3cret-v4lue"
SCHEMA = {
    "host": {"type": "string", "required": True},
    "count": {"type": "integer"},
    "token": {"type": "string", "secret": True},
}


@pytest.fixture(scope="module", params=DATABASES)
async def server(
    request: pytest.FixtureRequest, standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp(f"templates-{request.param}")
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
    await register(server.base_url, "olga", "olga-password-1")
    admin, operator = await asyncio.gather(
        login(server.base_url), token_for(server, "olga", "operator")
    )
    return {"admin": admin, "operator": operator}


@pytest.fixture
async def api(server: Server, tokens: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, tokens["admin"]) as session:
        yield session


@pytest.fixture
async def olga(server: Server, tokens: dict[str, str]) -> AsyncIterator[aiohttp.ClientSession]:
    async with client(server.base_url, tokens["operator"]) as session:
        yield session


async def action(api: aiohttp.ClientSession, pack: str = "core") -> str:
    """A fresh action that prints the parameters it is given (JSON on stdin)."""
    ref = f"{pack}.tpl_{uniq()}"
    body = {
        "ref": ref,
        "entrypoint": "#!/bin/sh\ncat\n",
        "runtime_ref": "core.shell",
        "param_schema": SCHEMA,
    }
    status, got = await call(api, "POST", "/api/v1/actions", body)
    assert status == 201, got
    return ref


def error(got: Any) -> str:
    assert isinstance(got, dict), got
    assert "error" in got, got
    return str(got["error"])


async def test_crud_masks_secrets_and_runs_with_overrides(api: aiohttp.ClientSession) -> None:
    act = await action(api)
    ref = f"ops.restart_{uniq()}"
    body = {
        "ref": ref,
        "action_ref": act,
        "parameters": {"count": "3", "token": SECRET},
        "description": "restart one web host",
    }
    status, got = await call(api, "POST", "/api/v1/templates", body)
    assert status == 201, got
    made = got["data"]
    # Coerced as the action declares; the secret masked; host left for the runs.
    assert made["parameters"] == {"count": 3, "token": "********"}, made
    assert made["action_ref"] == act
    assert made["description"] == "restart one web host"
    assert SECRET not in json.dumps(got)

    status, got = await call(api, "POST", "/api/v1/templates", body)
    assert status == 409, got
    assert ref in error(got)

    status, got = await call(api, "GET", f"/api/v1/templates/{ref}")
    assert status == 200, got
    assert got["data"]["parameters"]["token"] == "********", got
    status, got = await call(api, "GET", "/api/v1/templates", params={"per_page": "100"})
    assert status == 200, got
    assert ref in [t["ref"] for t in got["items"]], got
    assert SECRET not in json.dumps(got)

    path = f"/api/v1/templates/{ref}/execute"
    status, got = await call(api, "POST", path, {"parameters": {"host": "web2"}})
    assert status == 201, got
    run = got["data"]
    assert run["action_ref"] == act
    assert run["config"] == {"host": "web2", "count": 3, "token": "********"}, run
    done = await finished(api, run["id"])
    assert done["status"] == "completed", done
    given = json.loads(done["result"]["stdout"])
    assert given == {"host": "web2", "count": 3, "token": SECRET}, given  # the real value ran

    # A required parameter neither saved nor given: the run is refused, naming it.
    status, got = await call(api, "POST", path, {"parameters": {}})
    assert status == 400, got
    assert "host" in error(got), got

    # An update that sends the marker back keeps the secret; an override replaces a value.
    status, got = await call(
        api, "PUT", f"/api/v1/templates/{ref}", {"parameters": {"count": 5, "token": "********"}}
    )
    assert status == 200, got
    assert got["data"]["parameters"] == {"count": 5, "token": "********"}, got
    assert got["data"]["description"] == "restart one web host"  # not sent: kept
    status, got = await call(api, "POST", path, {"parameters": {"host": "web3", "count": 7}})
    assert status == 201, got
    given = json.loads((await finished(api, got["data"]["id"]))["result"]["stdout"])
    assert given == {"host": "web3", "count": 7, "token": SECRET}, given

    status, got = await call(api, "DELETE", f"/api/v1/templates/{ref}")
    assert status == 200, got
    assert got["success"] is True, got
    for method, url in (("GET", f"/api/v1/templates/{ref}"), ("POST", path)):
        status, got = await call(api, method, url, {"parameters": {}})
        assert status == 404, got
        assert f"template '{ref}' not found" in error(got), got
    status, got = await call(api, "DELETE", f"/api/v1/templates/{ref}")
    assert status == 404, got


async def test_bad_input_is_a_400_naming_the_problem(api: aiohttp.ClientSession) -> None:
    act = await action(api)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"ref": "bad ref!", "action_ref": act}, 400, "1 to 256 letters"),
        ({"ref": "x" * 257, "action_ref": act}, 400, "ref"),
        ({"ref": f"t_{uniq()}", "action_ref": "core.nope_nothing"}, 404, "core.nope_nothing"),
        (
            {"ref": f"t_{uniq()}", "action_ref": act, "parameters": {"count": "many"}},
            400,
            "count",
        ),
        ({"ref": f"t_{uniq()}", "action_ref": act, "parameters": {"colour": "red"}}, 400, "colour"),
        ({"action_ref": act}, 400, "ref"),
    ]
    for body, want, word in cases:
        status, got = await call(api, "POST", "/api/v1/templates", body)
        assert status == want, (body, got)
        assert word in error(got), (body, got)
    status, got = await call(api, "GET", "/api/v1/templates/bad%20ref")
    assert status == 400, got
    assert "template ref" in error(got), got
    ref = f"t_{uniq()}"
    status, got = await call(api, "POST", "/api/v1/templates", {"ref": ref, "action_ref": act})
    assert status == 201, got
    status, got = await call(
        api, "POST", f"/api/v1/templates/{ref}/execute", {"parameters": {"host": "h", "count": "x"}}
    )
    assert status == 400, got
    assert "count" in error(got), got
    status, got = await call(api, "PUT", f"/api/v1/templates/{ref}", {"parameters": {"count": "x"}})
    assert status == 400, got
    assert "count" in error(got), got


async def test_permissions_are_the_actions(
    api: aiohttp.ClientSession, olga: aiohttp.ClientSession
) -> None:
    """olga may run core.* only: she may not save, see or run a template of another pack's
    action; she may save and run one of core's."""
    examples = f"examples_tpl_{uniq()}"
    status, got = await call(
        api,
        "POST",
        "/api/v1/templates",
        {"ref": examples, "action_ref": "examples.greet", "parameters": {"name": "x"}},
    )
    assert status == 201, got
    status, got = await call(
        olga,
        "POST",
        "/api/v1/templates",
        {"ref": f"t_{uniq()}", "action_ref": "examples.greet", "parameters": {"name": "y"}},
    )
    assert status == 403, got
    assert "examples.greet" in error(got), got
    status, got = await call(olga, "POST", f"/api/v1/templates/{examples}/execute", {})
    assert status == 403, got
    assert "examples.greet" in error(got), got
    for method, body in (("PUT", {"description": "mine"}), ("DELETE", None), ("GET", None)):
        status, got = await call(olga, method, f"/api/v1/templates/{examples}", body)
        assert status == 403, (method, got)
    status, got = await call(olga, "GET", "/api/v1/templates", params={"per_page": "100"})
    assert status == 200, got
    assert examples not in [t["ref"] for t in got["items"]], got

    mine = f"core_tpl_{uniq()}"
    body = {"ref": mine, "action_ref": "core.echo", "parameters": {"message": "hi"}}
    status, got = await call(olga, "POST", "/api/v1/templates", body)
    assert status == 201, got
    assert got["data"]["owner"] == "olga", got
    status, got = await call(olga, "POST", f"/api/v1/templates/{mine}/execute", {})
    assert status == 201, got
    assert got["data"]["requester"]["identity"] == "olga", got
    # Moving a template to an action she may not run is refused too.
    status, got = await call(
        olga, "PUT", f"/api/v1/templates/{mine}", {"action_ref": "examples.greet"}
    )
    assert status == 403, got


async def test_openapi_documents_the_template_endpoints(api: aiohttp.ClientSession) -> None:
    status, doc = await call(api, "GET", "/api/v1/openapi.json")
    assert status == 200
    paths = doc["paths"]
    assert set(paths["/api/v1/templates"]) == {"get", "post"}
    assert set(paths["/api/v1/templates/{ref}"]) == {"get", "put", "delete"}
    assert set(paths["/api/v1/templates/{ref}/execute"]) == {"post"}


async def test_slack_runs_and_lists_templates(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    act = await action(api)
    ref = f"web_{uniq()}"
    body = {"ref": ref, "action_ref": act, "parameters": {"count": 2, "token": SECRET}}
    status, got = await call(api, "POST", "/api/v1/templates", body)
    assert status == 201, got
    hidden = f"greet_{uniq()}"
    body = {"ref": hidden, "action_ref": "examples.greet", "parameters": {"name": "z"}}
    status, got = await call(api, "POST", "/api/v1/templates", body)
    assert status == 201, got

    listed = await slash(server.base_url, standin, "templates")
    assert listed.status == 200, listed.body
    assert f"@{ref}" in listed.text, listed.text
    assert act in listed.text, listed.text
    assert hidden not in listed.text, listed.text  # the Slack operator may not run examples.*
    assert SECRET not in listed.text

    res = await slash(server.base_url, standin, f"run @{ref} host=web9")
    assert res.status == 200, res.body
    assert f"from template `{ref}`" in res.text, res.text
    done = await finished(api, res.execution_id)
    assert done["requester"]["user_id"] == res.user
    assert json.loads(done["result"]["stdout"]) == {"host": "web9", "count": 2, "token": SECRET}

    refused = await slash(server.base_url, standin, f"run @{hidden}")
    assert "Not allowed" in refused.text, refused.text
    assert "examples.greet" in refused.text, refused.text
    missing = await slash(server.base_url, standin, f"run @nothing_{uniq()}")
    assert "not found" in missing.text, missing.text
    bad = await slash(server.base_url, standin, "run @bad!ref")
    assert "not a template name" in bad.text, bad.text
