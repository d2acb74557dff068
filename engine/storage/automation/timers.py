"""Due timers in SQL, and the keys a rule's templates read (live, not an identity's)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select, update

from engine.automation.records import DueRule, StoredKey, Trigger
from engine.storage.automation.rows import SqlBase, to_trigger
from engine.storage.keys import live_clause
from engine.storage.store import Conn
from engine.storage.tables import keys, rules, triggers


class SqlTimers(SqlBase):
    async def due_trigger_timers(self, types: Sequence[str], now: datetime) -> list[Trigger]:
        async with self.store.read() as conn:
            due = (
                await conn.execute(
                    select(triggers).where(
                        triggers.c.type.in_(list(types)),
                        triggers.c.enabled.is_(True),
                        triggers.c.next_fire_at <= now,
                    )
                )
            ).all()
        return [to_trigger(r._mapping) for r in due]

    async def due_rule_timers(self, now: datetime, limit: int) -> list[DueRule]:
        async with self.store.read() as conn:
            due = (
                await conn.execute(
                    select(
                        rules.c.id,
                        rules.c.ref,
                        rules.c.trigger_ref,
                        rules.c.trigger_params,
                        rules.c.next_fire_at,
                        rules.c.fire_count,
                        triggers.c.id.label("trigger_id"),
                        triggers.c.type.label("trigger_type"),
                    )
                    .join(triggers, triggers.c.ref == rules.c.trigger_ref)
                    .where(
                        rules.c.enabled.is_(True),
                        triggers.c.enabled.is_(True),
                        rules.c.next_fire_at <= now,
                    )
                    .order_by(rules.c.next_fire_at)
                    .limit(limit)
                )
            ).all()
        return [
            DueRule(
                id=r.id,
                ref=r.ref,
                trigger_ref=r.trigger_ref,
                trigger_params=r.trigger_params,
                next_fire_at=r.next_fire_at,
                fire_count=r.fire_count,
                trigger_id=r.trigger_id,
                trigger_type=r.trigger_type,
            )
            for r in due
        ]

    async def move_trigger_timer(
        self, conn: Conn, trigger_id: int, scheduled: datetime, nxt: datetime | None
    ) -> bool:
        won = (
            await conn.execute(
                update(triggers)
                .where(triggers.c.id == trigger_id, triggers.c.next_fire_at == scheduled)
                .values(next_fire_at=nxt)
            )
        ).rowcount
        return bool(won)

    async def move_rule_timer(
        self, conn: Conn, rule_id: int, scheduled: datetime, nxt: datetime | None
    ) -> bool:
        won = (
            await conn.execute(
                update(rules)
                .where(rules.c.id == rule_id, rules.c.next_fire_at == scheduled)
                .values(next_fire_at=nxt, fire_count=rules.c.fire_count + 1)
            )
        ).rowcount
        return bool(won)

    async def template_keys(self, refs: Sequence[str]) -> list[StoredKey]:
        query = select(keys.c.ref, keys.c.encrypted, keys.c.value, keys.c.sealed).where(
            keys.c.ref.in_(sorted(refs)),
            keys.c.owner_type != "identity",
            live_clause(),
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            StoredKey(
                ref=r.ref,
                encrypted=bool(r.encrypted),
                value=r.value,
                sealed=r.sealed,
            )
            for r in rows
        ]
