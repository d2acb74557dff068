"""`attune purge` deletes what ended before the cutoff, and nothing else."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select, update

from config import Settings
from engine.automation import RuleSpec, TriggerSpec
from engine.clock import now_utc
from engine.purge import purge
from engine.records import Executor
from engine.runtime import build_runtime
from engine.status import ExecutionStatus
from engine.storage.tables import audit, deliveries, enforcements, events, executions


async def _count(rt: object, table: object) -> int:
    async with rt.store.read() as conn:  # type: ignore[attr-defined]
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_purge_keeps_recent_and_unfinished_work(tmp_path: Path) -> None:
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/p.db",
            data_dir=tmp_path,
            packs_path=str(tmp_path),
            admin_password="x" * 12,
        )
    )
    try:
        who = Executor(identity="t", source="api")
        old_done = await rt.service.submit("core.noop", {}, who, callback_url="http://h/x")
        old_waiting = await rt.service.submit("core.noop", {}, who)
        recent_done = await rt.service.submit("core.noop", {}, who)
        for record in (old_done, recent_done):
            claimed = await rt.service.claim(record.id, "w")
            assert claimed is not None
            await rt.service.finish(record.id, ExecutionStatus.COMPLETED, {"succeeded": True})
        await rt.automation.create_trigger(TriggerSpec(ref="ops.alert"))
        await rt.automation.create_rule(
            RuleSpec(ref="ops.r", trigger_ref="ops.alert", action_ref="core.noop")
        )
        event = await rt.automation.record_event("ops.alert", {}, "api")
        await rt.automation.process_event(event.id)
        long_ago = now_utc() - timedelta(days=40)
        async with rt.store.write() as conn:
            await conn.execute(
                update(executions)
                .where(executions.c.id.in_([old_done.id, old_waiting.id]))
                .values(created=long_ago, finished_at=long_ago)
            )
            await conn.execute(
                update(executions).where(executions.c.id == old_waiting.id).values(finished_at=None)
            )
            await conn.execute(update(events).values(received_at=long_ago))
            await conn.execute(update(audit).values(at=long_ago))
        assert await _count(rt, deliveries) == 1

        counts = await purge(rt.store, 30)

        assert counts == {"executions": 1, "events": 1}
        async with rt.store.read() as conn:
            left = set((await conn.execute(select(executions.c.id))).scalars())
        # The rule's execution is recent; the waiting one has not ended.
        assert old_done.id not in left
        assert {old_waiting.id, recent_done.id} <= left
        assert await _count(rt, deliveries) == 0  # went with its execution
        assert await _count(rt, events) == 0
        assert await _count(rt, enforcements) == 0
        assert await _count(rt, audit) > 0  # kept unless asked
        assert (await purge(rt.store, 30, include_audit=True))["audit"] > 0
        assert await _count(rt, audit) == 0
    finally:
        await rt.close()
