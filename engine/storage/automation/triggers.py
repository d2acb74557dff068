"""Triggers in SQL."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from engine.automation.records import Trigger, TriggerFields
from engine.storage.automation.rows import SqlBase, columns_of, to_trigger, trigger_query
from engine.storage.tables import packs, rules, triggers


class SqlTriggers(SqlBase):
    async def pack_exists(self, pack_ref: str) -> bool:
        async with self.store.read() as conn:
            found = (await conn.execute(select(packs.c.id).where(packs.c.ref == pack_ref))).first()
        return found is not None

    async def get_trigger(self, ref: str) -> Trigger | None:
        async with self.store.read() as conn:
            row = (await conn.execute(trigger_query().where(triggers.c.ref == ref))).first()
        return None if row is None else to_trigger(row._mapping)

    async def trigger_by_key_hash(self, key_hash: str) -> Trigger | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(select(triggers).where(triggers.c.webhook_key_hash == key_hash))
            ).first()
        return None if row is None else to_trigger(row._mapping)

    async def list_triggers(
        self, *, pack_ref: str | None = None, enabled: bool | None = None
    ) -> list[Trigger]:
        query = trigger_query().order_by(triggers.c.ref)
        if pack_ref is not None:
            query = query.where(triggers.c.pack_ref == pack_ref)
        if enabled is not None:
            query = query.where(triggers.c.enabled.is_(enabled))
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [to_trigger(r._mapping) for r in rows]

    async def insert_trigger(
        self, fields: TriggerFields, *, from_pack: bool, created: datetime
    ) -> bool:
        async with self.store.write() as conn:
            if (
                await conn.execute(select(triggers.c.id).where(triggers.c.ref == fields.ref))
            ).first():
                return False
            await conn.execute(
                insert(triggers).values(**columns_of(fields), from_pack=from_pack, created=created)
            )
        return True

    async def update_trigger(
        self, trigger_id: int, fields: TriggerFields, *, unless_rules_of: str | None = None
    ) -> bool:
        async with self.store.write() as conn:
            if (
                unless_rules_of is not None
                and (
                    await conn.execute(
                        select(rules.c.id).where(rules.c.trigger_ref == unless_rules_of)
                    )
                ).first()
            ):
                return False
            await conn.execute(
                update(triggers).where(triggers.c.id == trigger_id).values(**columns_of(fields))
            )
        return True

    async def set_trigger(
        self,
        ref: str,
        updated: datetime,
        *,
        enabled: bool | None = None,
        webhook_enabled: bool | None = None,
        webhook_key: tuple[str, str] | None = None,
    ) -> bool:
        values: dict[str, Any] = {"updated": updated}
        if enabled is not None:
            values["enabled"] = enabled
        if webhook_enabled is not None:
            values["webhook_enabled"] = webhook_enabled
        if webhook_key is not None:
            values["webhook_key_hash"], values["webhook_key_sealed"] = webhook_key
        async with self.store.write() as conn:
            result = await conn.execute(
                update(triggers).where(triggers.c.ref == ref).values(**values)
            )
        return bool(result.rowcount)

    async def delete_trigger(self, ref: str) -> tuple[list[str], bool]:
        async with self.store.write() as conn:
            using = list(
                (await conn.execute(select(rules.c.ref).where(rules.c.trigger_ref == ref).limit(5)))
                .scalars()
                .all()
            )
            if using:
                return using, False
            result = await conn.execute(delete(triggers).where(triggers.c.ref == ref))
        return [], bool(result.rowcount)
