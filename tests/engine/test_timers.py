"""Timers fire each tick once, however many processes look for due timers at the same time;
rules fire once per event even when an event is processed twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from config import Settings
from engine.api.automation_views import rule_view, trigger_view
from engine.automation import RuleSpec, TriggerSpec
from engine.clock import now_utc
from engine.packs import PackSpec
from engine.runtime import Runtime, build_runtime
from engine.storage.tables import enforcements, events, executions, rules, triggers
from tests.e2e.conftest import _fresh_postgres_database


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/t.db"
        return
    async with _fresh_postgres_database() as url:
        yield url


async def _runtime(url: str, tmp_path: Path) -> Runtime:
    return await build_runtime(
        Settings(
            database_url=url, data_dir=tmp_path, packs_path=str(tmp_path), admin_password="x" * 12
        )
    )


async def test_a_due_tick_fires_once_across_processes(database_url: str, tmp_path: Path) -> None:
    runtimes = [await _runtime(database_url, tmp_path) for _ in range(3)]
    try:
        await runtimes[0].automation.create_trigger(
            TriggerSpec(ref="ops.tick", type="interval", parameters={"seconds": 60})
        )
        for _round in range(5):  # make the tick due, then let three "processes" race for it
            async with runtimes[0].store.write() as conn:
                await conn.execute(
                    update(triggers)
                    .where(triggers.c.ref == "ops.tick")
                    .values(next_fire_at=now_utc())
                )
            fired = await asyncio.gather(*(rt.automation.fire_due_timers() for rt in runtimes))
            assert sum(fired) == 1
        async with runtimes[0].store.read() as conn:
            count = (await conn.execute(select(func.count()).select_from(events))).scalar_one()
        assert count == 5
    finally:
        for rt in runtimes:
            await rt.close()


async def test_an_event_processed_twice_fires_each_rule_once(
    database_url: str, tmp_path: Path
) -> None:
    rt = await _runtime(database_url, tmp_path)
    try:
        await rt.automation.create_trigger(TriggerSpec(ref="ops.alert"))
        for name in ("one", "two"):
            await rt.automation.create_rule(
                RuleSpec(
                    ref=f"ops.{name}",
                    trigger_ref="ops.alert",
                    action_ref="core.echo",
                    action_params={"message": "{{ event.payload.m }}"},
                )
            )
        event = await rt.automation.record_event("ops.alert", {"m": "hi"}, "api")
        await asyncio.gather(*(rt.automation.process_event(event.id) for _ in range(4)))
        async with rt.store.read() as conn:
            enforced = (
                await conn.execute(select(func.count()).select_from(enforcements))
            ).scalar_one()
            runs = (
                await conn.execute(
                    select(func.count())
                    .select_from(executions)
                    .where(executions.c.enforcement.is_not(None))
                )
            ).scalar_one()
        assert enforced == 2
        assert runs == 2
    finally:
        await rt.close()


async def test_a_rule_timer_tick_fires_once_across_processes_and_runs_its_rule(
    database_url: str, tmp_path: Path
) -> None:
    runtimes = [await _runtime(database_url, tmp_path) for _ in range(3)]
    try:
        automation = runtimes[0].automation
        for name in ("mine", "other"):
            await automation.create_rule(
                RuleSpec(
                    ref=f"ops.{name}",
                    trigger_ref="core.intervaltimer",
                    action_ref="core.noop",
                    trigger_params={"unit": "minutes", "interval": 5},
                )
            )
        mine = await automation.get_rule("ops.mine")
        core = await automation.get_trigger("core.intervaltimer")
        for _round in range(4):  # make the rule's tick due, then let three "processes" race
            async with runtimes[0].store.write() as conn:
                await conn.execute(
                    update(rules).where(rules.c.ref == "ops.mine").values(next_fire_at=now_utc())
                )
            fired = await asyncio.gather(*(rt.automation.fire_due_timers() for rt in runtimes))
            assert sum(fired) == 1
        async with runtimes[0].store.read() as conn:
            ticks = (await conn.execute(select(events).order_by(events.c.id))).all()
            moved_on = (
                await conn.execute(select(rules.c.next_fire_at).where(rules.c.ref == "ops.mine"))
            ).scalar_one()
        assert len(ticks) == 4
        assert {(e.rule_id, e.rule_ref, e.trigger_id) for e in ticks} == {
            (mine.id, "ops.mine", core.id)
        }
        assert [e.payload["execution_count"] for e in ticks] == [1, 2, 3, 4]
        assert moved_on > now_utc()
        done = await automation.process_event(ticks[0].id)
        assert [d.rule_ref for d in done] == ["ops.mine"]  # the other rule is not run

        await automation.set_rule_enabled("ops.mine", False)
        async with runtimes[0].store.write() as conn:
            await conn.execute(update(rules).values(next_fire_at=now_utc()))
        fired = await asyncio.gather(*(rt.automation.fire_due_timers() for rt in runtimes))
        assert sum(fired) == 1  # only the enabled rule: "other"
    finally:
        for rt in runtimes:
            await rt.close()


async def test_a_pack_in_attunes_form_gets_a_rule_timer(database_url: str, tmp_path: Path) -> None:
    """Attune's trigger files name the parameter schema ``parameters`` and the payload schema
    ``output``; its rule files may name their own pack's trigger and action bare."""
    rt = await _runtime(database_url, tmp_path)
    try:
        trigger = {
            "ref": "ticks.every",
            "label": "Every",
            "type": "interval",
            "parameters": {"unit": {"type": "string"}, "interval": {"type": "integer"}},
            "output": {"type": {"type": "string"}},
            "_source": "triggers/every.yaml",
        }
        rule = {
            "ref": "ticks.often",
            "trigger_ref": "every",
            "action_ref": "core.noop",
            "trigger_params": {"unit": "seconds", "interval": 30},
            "_source": "rules/often.yaml",
        }
        bad = {
            **rule,
            "ref": "ticks.bad",
            "trigger_params": {"unit": "seconds"},
            "_source": "rules/bad.yaml",
        }
        problems = await rt.automation.register_pack(
            PackSpec(ref="ticks", triggers=(trigger,), rules=(rule, bad))
        )
        assert len(problems) == 1, problems
        assert problems[0].startswith("rules/bad.yaml: trigger_params.interval"), problems
        got = trigger_view(await rt.automation.get_trigger("ticks.every"))
        assert (got["type"], got["is_adhoc"]) == ("intervaltimer", False)
        assert got["param_schema"] == trigger["parameters"]
        assert got["out_schema"] == trigger["output"]
        often = rule_view(await rt.automation.get_rule("ticks.often"))
        assert often["trigger_ref"] == "ticks.every"
        assert often["next_fire_at"] is not None
    finally:
        await rt.close()
