"""Writes of actions and rules go through the permission policy (``manage``), audited.

One ``attune serve`` for the module with operators narrowed to ``core.*`` (so, by default,
they manage only ``core.*``), and a pack ``admin_only`` registered from a folder by the
admin: an action with a secret parameter and ``confirm: true``, and a second script in the
same folder an attacker would point its entry point at.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import Server, client, engine_env
from tests.scenario.harness import login, running_server
from tests.trust.support import (
    POLL_S,
    Answer,
    audit,
    call,
    executed,
    register,
    token_for,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

PERMISSIONS = {"operator": {"run": ["core.*", "shared.*"], "cancel": ["core.*"], "view": ["*"]}}
OPERATOR = "omar"
REF = "admin_only.job"

ACTION_YAML = """\
name: job
runner_type: shell
entry_point: job.sh
confirm: true
parameters:
  token:
    type: string
    secret: true
    required: true
"""


def _pack(root: Path, ref: str) -> Path:
    folder = root / ref
    (folder / "actions").mkdir(parents=True)
    (folder / "pack.yaml").write_text(f"ref: {ref}\nlabel: {ref}\nversion: 1.0.0\n")
    (folder / "actions" / "job.yaml").write_text(ACTION_YAML)
    for name, word in (("job.sh", "original"), ("evil.sh", "evil")):
        script = folder / "actions" / name
        script.write_text(f"#!/usr/bin/env bash\necho {word}\n")
        script.chmod(0o755)
    return folder


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-manage")
    env = engine_env(
        tmp,
        ATTUNE_PERMISSIONS=json.dumps(PERMISSIONS),
        ATTUNE_ALLOW_REGISTRATION="true",
        ATTUNE_REGISTRATION_ROLE="operator",
        ATTUNE_LOG_FORMAT="text",
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def tokens(server: Server) -> dict[str, str]:
    await register(server.base_url, OPERATOR, "omar-password-1")
    admin, operator = await asyncio.gather(
        login(server.base_url), token_for(server, OPERATOR, "operator")
    )
    async with client(server.base_url, admin) as session:
        for ref in ("admin_only", "shared"):
            folder = str(_pack(server.tmp, ref))
            registered = await call(
                session, "POST", "/api/v1/packs/register", json={"path": folder}
            )
            assert registered.status == 201, registered.body
    return {"admin": admin, "operator": operator}


@pytest.fixture
async def sessions(
    server: Server, tokens: dict[str, str]
) -> AsyncIterator[tuple[aiohttp.ClientSession, aiohttp.ClientSession]]:
    async with (
        client(server.base_url, tokens["admin"]) as admin,
        client(server.base_url, tokens["operator"]) as operator,
    ):
        yield admin, operator


def refused(answer: Answer) -> None:
    assert answer.status == 403, answer.body
    assert "'manage'" in answer.error, answer.error
    assert REF in answer.error, answer.error


async def test_operator_cannot_rewrite_or_delete_an_action_outside_its_patterns(
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    admin, operator = sessions
    path = f"/api/v1/actions/{REF}"
    refused(await call(operator, "PUT", path, json={"entrypoint": "evil.sh"}))
    refused(await call(operator, "PUT", path, json={"parameters": {"token": {"type": "string"}}}))
    refused(await call(operator, "PUT", path, json={"confirm": False}))
    refused(await call(operator, "DELETE", path))
    created = await call(
        operator,
        "POST",
        "/api/v1/actions",
        json={"ref": "admin_only.other", "entrypoint": "evil.sh"},
    )
    assert created.status == 403, created.body
    assert "'manage'" in created.error, created.error
    assert "admin_only.other" in created.error, created.error

    action = (await call(admin, "GET", path)).data
    assert action["confirm"] is True
    assert action["entrypoint"].endswith("job.sh")
    assert action["param_json_schema"]["properties"]["token"].get("secret") is True

    record = await executed(admin, REF, {"token": "s3cret-value"})
    done = await eventually(
        lambda: call(admin, "GET", f"/api/v1/executions/{record['id']}"),
        f"execution #{record['id']} to end",
        interval_s=POLL_S,
        done=lambda a: a.data["status"] in {"completed", "failed"},
    )
    assert done.data["status"] == "completed", done.data
    assert done.data["result"]["stdout"].strip() == "original"
    assert done.data["config"]["token"] != "s3cret-value"

    denied = [
        e
        for e in await audit(admin, actor=OPERATOR)
        if e["outcome"] == "denied" and e["target"] == REF
    ]
    verbs = sorted(e["verb"] for e in denied)
    assert verbs == ["delete_action", "update_action", "update_action", "update_action"], denied


async def test_operator_still_manages_what_it_may_run(
    sessions: tuple[aiohttp.ClientSession, aiohttp.ClientSession],
) -> None:
    admin, operator = sessions
    changed = await call(operator, "PUT", "/api/v1/actions/shared.job", json={"label": "Job"})
    assert changed.status == 200, changed.body
    assert changed.data["label"] == "Job"
    assert (await call(admin, "GET", "/api/v1/actions/shared.job")).data["label"] == "Job"
