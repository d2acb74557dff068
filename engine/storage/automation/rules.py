"""Rules in SQL (and a pack's stale rules and triggers)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from engine.automation.records import Rule, RuleFields, RuleSecrets
from engine.storage.automation.rows import SqlBase, columns_of, rule_query, to_rule
from engine.storage.tables import actions, enforcements, rules, triggers


class SqlRules(SqlBase):
    async def get_rule(self, ref: str) -> Rule | None:
        async with self.store.read() as conn:
            row = (await conn.execute(rule_query().where(rules.c.ref == ref))).first()
        return None if row is None else to_rule(row._mapping)

    async def owners_of_enforcement(self, enforcement_id: int) -> list[str]:
        query = (
            select(rules.c.owners)
            .select_from(enforcements)
            .join(rules, rules.c.id == enforcements.c.rule_id)
            .where(enforcements.c.id == enforcement_id)
        )
        async with self.store.read() as conn:
            owners = (await conn.execute(query)).scalar()
        return [str(o) for o in owners] if isinstance(owners, list) else []

    async def list_rules(
        self,
        *,
        trigger_ref: str | None = None,
        action_ref: str | None = None,
        pack_ref: str | None = None,
        enabled: bool | None = None,
    ) -> list[Rule]:
        query = rule_query().order_by(rules.c.ref)
        for column, value in (
            (rules.c.trigger_ref, trigger_ref),
            (rules.c.action_ref, action_ref),
            (rules.c.pack_ref, pack_ref),
        ):
            if value:
                query = query.where(column == value)
        if enabled is not None:
            query = query.where(rules.c.enabled.is_(enabled))
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [to_rule(r._mapping) for r in rows]

    async def insert_rule(self, fields: RuleFields, *, from_pack: bool, created: datetime) -> bool:
        async with self.store.write() as conn:
            if (await conn.execute(select(rules.c.id).where(rules.c.ref == fields.ref))).first():
                return False
            await conn.execute(
                insert(rules).values(**columns_of(fields), from_pack=from_pack, created=created)
            )
        return True

    async def update_rule(self, fields: RuleFields) -> bool:
        async with self.store.write() as conn:
            result = await conn.execute(
                update(rules).where(rules.c.ref == fields.ref).values(**columns_of(fields))
            )
        return bool(result.rowcount)

    async def set_rule_enabled(
        self,
        ref: str,
        enabled: bool,
        updated: datetime,
        *,
        move_timer: bool = False,
        next_fire_at: datetime | None = None,
    ) -> bool:
        values: dict[str, Any] = {"enabled": enabled, "updated": updated}
        if move_timer:
            values["next_fire_at"] = next_fire_at
        async with self.store.write() as conn:
            result = await conn.execute(update(rules).where(rules.c.ref == ref).values(**values))
        return bool(result.rowcount)

    async def delete_rule(self, ref: str) -> bool:
        async with self.store.write() as conn:
            result = await conn.execute(delete(rules).where(rules.c.ref == ref))
        return bool(result.rowcount)

    async def rule_secrets(
        self, *, action_ref: str | None = None, pack_ref: str | None = None
    ) -> list[RuleSecrets]:
        query = select(
            rules.c.id,
            rules.c.ref,
            rules.c.action_params,
            rules.c.action_params_sealed,
            rules.c.updated,
            actions.c.param_schema,
        ).join(actions, actions.c.ref == rules.c.action_ref)
        if action_ref is not None:
            query = query.where(rules.c.action_ref == action_ref)
        if pack_ref is not None:
            query = query.where(actions.c.pack_ref == pack_ref)
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            RuleSecrets(
                id=r.id,
                ref=r.ref,
                action_params=r.action_params,
                action_params_sealed=r.action_params_sealed,
                updated=r.updated,
                param_schema=r.param_schema,
            )
            for r in rows
        ]

    async def store_rule_secrets(
        self, rule_id: int, updated: datetime, stored: dict[str, Any], sealed: str | None
    ) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                update(rules)
                .where(rules.c.id == rule_id, rules.c.updated == updated)
                .values(action_params=stored, action_params_sealed=sealed)
            )

    async def forget_stale(
        self, pack_ref: str, kept_rules: Sequence[str], kept_triggers: Sequence[str]
    ) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                delete(rules).where(
                    rules.c.pack_ref == pack_ref,
                    rules.c.from_pack.is_(True),
                    rules.c.ref.not_in(list(kept_rules)),
                )
            )
            await conn.execute(
                delete(triggers).where(
                    triggers.c.pack_ref == pack_ref,
                    triggers.c.from_pack.is_(True),
                    triggers.c.ref.not_in(list(kept_triggers)),
                    triggers.c.ref.not_in(select(rules.c.trigger_ref)),
                )
            )
