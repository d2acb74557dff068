"""Rules read keys as Attune's templates do: ``kv.get`` in ``action_params`` gives the key's
JSON value, ``kv.get_secret`` an encrypted one, and a parameter that read a secret is kept
secret: redacted in the execution, the enforcement and the audit log, yet the action receives
it. A template that fails names the problem without showing the secret."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from config import Settings
from engine.api.automation_views import enforcement_view
from engine.auth import Principal
from engine.automation import RuleSpec, TriggerSpec
from engine.keys import KeyCreate
from engine.params import REDACTED
from engine.runtime import Runtime, build_runtime
from engine.storage.tables import audit, enforcements
from tests.e2e.conftest import _fresh_postgres_database
from tests.waiting import eventually

ADMIN = Principal(login="admin", role="admin", token_name="t")
SECRET = "pa55-w0rd-f0r-the-db"
RUN_TIMEOUT_S = 20.0


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def rt(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path}/r.db"
        runtime = await _runtime(url, tmp_path)
        yield runtime
        await runtime.close()
        return
    async with _fresh_postgres_database() as url:
        runtime = await _runtime(url, tmp_path)
        yield runtime
        await runtime.close()


async def _runtime(url: str, tmp_path: Path) -> Runtime:
    rt = await build_runtime(
        Settings(
            database_url=url, data_dir=tmp_path, packs_path=str(tmp_path), admin_password="x" * 12
        )
    )
    for ref, value, encrypted in (
        ("deploy.target", {"host": "web1", "port": 8443}, False),
        ("env.prod", "https://prod.example", False),
        ("db.password", SECRET, True),
    ):
        spec = KeyCreate(ref=ref, name=ref, owner_type="system", value=value, encrypted=encrypted)
        await rt.keys.create(ADMIN, spec)
    await rt.automation.create_trigger(TriggerSpec(ref="ops.alert"))
    return rt


async def _fire(rt: Runtime, rule: str, params: dict[str, Any], payload: Any) -> dict[str, Any]:
    await rt.automation.create_rule(
        RuleSpec(ref=rule, trigger_ref="ops.alert", action_ref="core.echo", action_params=params)
    )
    event = await rt.automation.record_event("ops.alert", payload, "api")
    done = [enforcement_view(e) for e in await rt.automation.process_event(event.id)]
    mine = [e for e in done if e["rule_ref"] == rule]
    assert len(mine) == 1
    return mine[0]


async def test_kv_get_renders_json_values_and_refs_from_the_event(rt: Runtime) -> None:
    enforcement = await _fire(
        rt,
        "ops.plain",
        {"message": "{{ kv.get('deploy.target').host }}:{{ kv.get('env.' ~ event.payload.env) }}"},
        {"env": "prod"},
    )
    execution = await rt.service.get(enforcement["execution_id"])
    assert execution.config == {"message": "web1:https://prod.example"}


async def test_kv_get_secret_reaches_the_action_but_no_record(rt: Runtime) -> None:
    await rt.start_worker()
    enforcement = await _fire(
        rt, "ops.secret", {"message": "{{ kv.get_secret('db.password') }}"}, {}
    )
    execution = await rt.service.get(enforcement["execution_id"])
    assert execution.config == {"message": REDACTED}
    # core.echo prints what it received: the action had the secret.
    execution = await eventually(
        lambda: rt.service.get(enforcement["execution_id"]),
        "the execution to complete",
        RUN_TIMEOUT_S,
        interval_s=0.05,
        done=lambda e: e.status == "completed",
    )
    assert execution.result["stdout"].strip() == SECRET
    async with rt.store.read() as conn:
        rows = (await conn.execute(select(audit.c.parameters, audit.c.detail))).all()
        config = (
            await conn.execute(
                select(enforcements.c.config).where(enforcements.c.id == enforcement["id"])
            )
        ).scalar_one()
    assert SECRET not in json.dumps([list(r) for r in rows], default=str)
    assert SECRET not in json.dumps(config)


async def test_a_failing_template_names_the_problem_not_the_secret(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_reader = await _fire(rt, "ops.wrong", {"message": "{{ kv.get('db.password') }}"}, {})
    assert wrong_reader["execution_id"] is None
    assert "kv.get_secret('db.password')" in wrong_reader["error"]
    leaking = await _fire(rt, "ops.leak", {"message": "{{ {}[kv.get_secret('db.password')] }}"}, {})
    assert leaking["execution_id"] is None
    assert SECRET not in leaking["error"]
    assert "********" in leaking["error"]
    assert SECRET not in caplog.text
