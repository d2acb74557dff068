"""The ``schedules`` rows (:mod:`engine.schedule_records`). A tick is taken by a conditional
UPDATE of ``next_fire_at`` (as rule timers are): one process wins it, however many try."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from engine.clock import now_utc
from engine.schedule_records import Schedule, ScheduleFields
from engine.storage.store import Store
from engine.storage.tables import schedules as t

_SELECT = select(t)
_FIELDS = (
    "action_ref",
    "template_ref",
    "parameters",
    "parameters_sealed",
    "kind",
    "at",
    "every_s",
    "cron",
    "timezone",
    "next_fire_at",
    "missed",
    "requester",
    "chat",
    "description",
    "idempotency_key",
)


def _record(row: Any) -> Schedule:
    return Schedule(
        id=int(row.id),
        fields=ScheduleFields(
            action_ref=row.action_ref,
            template_ref=row.template_ref,
            parameters=dict(row.parameters or {}),
            parameters_sealed=row.parameters_sealed,
            kind=row.kind,
            at=row.at,
            every_s=row.every_s,
            cron=row.cron,
            timezone=row.timezone,
            next_fire_at=row.next_fire_at,
            missed=row.missed,
            requester=dict(row.requester or {}),
            chat=row.chat,
            description=row.description or "",
            idempotency_key=row.idempotency_key,
        ),
        paused=bool(row.paused),
        fire_count=int(row.fire_count or 0),
        last_fired_at=row.last_fired_at,
        last_execution=row.last_execution,
        created=row.created,
        updated=row.updated,
    )


class SqlSchedules:
    """:class:`engine.schedule_records.ScheduleRepository` on either dialect."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, fields: ScheduleFields) -> Schedule:
        now = now_utc()
        values = {name: getattr(fields, name) for name in _FIELDS}
        async with self.store.write() as conn:
            result = await conn.execute(
                insert(t).values(**values, created=now, updated=now).returning(t.c.id)
            )
            new_id = int(result.scalar_one())
        found = await self.get(new_id)
        assert found is not None
        return found

    async def get(self, schedule_id: int) -> Schedule | None:
        async with self.store.read() as conn:
            row = (await conn.execute(_SELECT.where(t.c.id == schedule_id))).first()
        return None if row is None else _record(row)

    async def find_by_key(self, idempotency_key: str) -> Schedule | None:
        async with self.store.read() as conn:
            query = _SELECT.where(t.c.idempotency_key == idempotency_key)
            row = (await conn.execute(query)).first()
        return None if row is None else _record(row)

    async def every_schedule(self) -> list[Schedule]:
        async with self.store.read() as conn:
            rows = (await conn.execute(_SELECT.order_by(t.c.id))).all()
        return [_record(r) for r in rows]

    async def delete(self, schedule_id: int) -> bool:
        async with self.store.write() as conn:
            done = await conn.execute(delete(t).where(t.c.id == schedule_id))
        return bool(done.rowcount)

    async def set_paused(
        self, schedule_id: int, paused: bool, next_fire_at: datetime | None
    ) -> Schedule | None:
        async with self.store.write() as conn:
            done = await conn.execute(
                update(t)
                .where(t.c.id == schedule_id)
                .values(paused=paused, next_fire_at=next_fire_at, updated=now_utc())
            )
        if not done.rowcount:
            return None
        return await self.get(schedule_id)

    async def due(self, now: datetime, limit: int) -> list[Schedule]:
        query = (
            _SELECT.where(t.c.paused.is_(False), t.c.next_fire_at <= now)
            .order_by(t.c.next_fire_at)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def earliest(self) -> datetime | None:
        query = select(func.min(t.c.next_fire_at)).where(t.c.paused.is_(False))
        async with self.store.read() as conn:
            found: datetime | None = (await conn.execute(query)).scalar()
        return found

    async def claim(
        self, schedule_id: int, scheduled: datetime, nxt: datetime | None, fired_at: datetime | None
    ) -> bool:
        values: dict[str, Any] = {"next_fire_at": nxt, "updated": now_utc()}
        if fired_at is not None:
            values.update(fire_count=t.c.fire_count + 1, last_fired_at=fired_at)
        async with self.store.write(single=True) as conn:
            won = await conn.execute(
                update(t)
                .where(
                    t.c.id == schedule_id,
                    t.c.next_fire_at == scheduled,
                    t.c.paused.is_(False),
                )
                .values(**values)
            )
        return bool(won.rowcount)

    async def ran(self, schedule_id: int, execution_id: int) -> None:
        async with self.store.write(single=True) as conn:
            await conn.execute(
                update(t).where(t.c.id == schedule_id).values(last_execution=execution_id)
            )


def schedule_repository(store: Store) -> SqlSchedules:
    return SqlSchedules(store)
