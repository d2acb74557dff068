"""A rule's owners (who is mentioned when a run it started fails): from a pack's rule file or
the API, kept by an update that does not name them, cleared by null, and found from an
enforcement the rule made."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import insert

from config import Settings
from engine.api.automation_views import rule_view
from engine.automation import RuleSpec, TriggerSpec
from engine.automation.models import RuleUpdate
from engine.clock import now_utc
from engine.packs import PackSpec
from engine.runtime import Runtime, build_runtime
from engine.storage.tables import enforcements, events
from tests.e2e.conftest import _fresh_postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    async def build(url: str) -> Runtime:
        settings = Settings(
            database_url=url, data_dir=tmp_path, packs_path=str(tmp_path), admin_password="x" * 12
        )
        return await build_runtime(settings)

    if request.param == "sqlite":
        rt = await build(f"sqlite+aiosqlite:///{tmp_path}/t.db")
        try:
            yield rt
        finally:
            await rt.close()
        return
    async with _fresh_postgres_database() as url:
        rt = await build(url)
        try:
            yield rt
        finally:
            await rt.close()


async def test_a_pack_rule_file_names_its_owners(runtime: Runtime) -> None:
    trigger = {"ref": "ops.alert", "type": "webhook", "_source": "triggers/alert.yaml"}
    rule = {
        "ref": "ops.on_alert",
        "trigger_ref": "alert",
        "action_ref": "core.noop",
        "owners": ["U012AB3CD", "alice"],
        "_source": "rules/on_alert.yaml",
    }
    bad = {
        **rule,
        "ref": "ops.bad",
        "owners": ["has space"],
        "_source": "rules/bad.yaml",
    }
    problems = await runtime.automation.register_pack(
        PackSpec(ref="ops", triggers=(trigger,), rules=(rule, bad))
    )
    assert len(problems) == 1, problems
    assert problems[0].startswith("rules/bad.yaml: owners"), problems
    got = await runtime.automation.get_rule("ops.on_alert")
    assert got.owners == ["U012AB3CD", "alice"]
    assert rule_view(got)["owners"] == ["U012AB3CD", "alice"]


async def test_owners_survive_an_update_that_does_not_name_them_and_null_clears(
    runtime: Runtime,
) -> None:
    automation = runtime.automation
    await automation.create_trigger(TriggerSpec(ref="core.owners_hook"))
    spec = RuleSpec(
        ref="core.owners_r",
        trigger_ref="core.owners_hook",
        action_ref="core.noop",
        owners=["U1ABC", "bob"],
    )
    assert (await automation.create_rule(spec)).owners == ["U1ABC", "bob"]

    current = rule_view(await automation.get_rule("core.owners_r"))
    relabelled = RuleUpdate.model_validate({"label": "R"}).merged(current)
    assert (await automation.update_rule("core.owners_r", relabelled)).owners == ["U1ABC", "bob"]

    current = rule_view(await automation.get_rule("core.owners_r"))
    cleared = RuleUpdate.model_validate({"owners": None}).merged(current)
    assert (await automation.update_rule("core.owners_r", cleared)).owners is None
    current = rule_view(await automation.get_rule("core.owners_r"))
    empty = RuleUpdate.model_validate({"owners": []}).merged(current)
    assert (await automation.update_rule("core.owners_r", empty)).owners is None


async def test_owners_are_found_from_an_enforcement(runtime: Runtime) -> None:
    automation = runtime.automation
    await automation.create_trigger(TriggerSpec(ref="ops.hook2"))
    rule = await automation.create_rule(
        RuleSpec(ref="ops.r2", trigger_ref="ops.hook2", action_ref="core.noop", owners=["U9Z"])
    )
    plain = await automation.create_rule(
        RuleSpec(ref="ops.r3", trigger_ref="ops.hook2", action_ref="core.noop")
    )
    now = now_utc()
    async with runtime.store.write() as conn:
        event_id = (
            await conn.execute(
                insert(events)
                .values(trigger_ref="ops.hook2", payload={}, source="test", received_at=now)
                .returning(events.c.id)
            )
        ).scalar_one()
        ids = []
        for r in (rule, plain):
            ids.append(
                (
                    await conn.execute(
                        insert(enforcements)
                        .values(
                            rule_id=r.id,
                            rule_ref=r.ref,
                            trigger_ref="ops.hook2",
                            event_id=event_id,
                            status="scheduled",
                            created=now,
                        )
                        .returning(enforcements.c.id)
                    )
                ).scalar_one()
            )
    assert await automation.rules.owners_of_enforcement(ids[0]) == ["U9Z"]
    assert await automation.rules.owners_of_enforcement(ids[1]) == []
    assert await automation.rules.owners_of_enforcement(999_999) == []
