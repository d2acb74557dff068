"""The automation aggregate's tables (triggers, rules, events, enforcements) in SQL: the
implementation of :class:`engine.automation.records.AutomationRepository`. The statements are
the same on SQLite and PostgreSQL.

Two reads reach outside the aggregate: the execution made for an enforcement (``executions``,
so that an interrupted pass never makes a second one) and the keys a rule's templates read
(``keys``, live and not owned by an identity)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Select, delete, insert, or_, select, update

from engine.automation.records import (
    AutomationRepository,
    DueRule,
    Enforcement,
    EnforcementFilter,
    Event,
    EventFilter,
    NewEnforcement,
    Rule,
    RuleFields,
    RuleSecrets,
    Settlement,
    StoredKey,
    Trigger,
    TriggerFields,
)
from engine.counts import Totals
from engine.storage.store import Conn, Store
from engine.storage.tables import (
    actions,
    enforcements,
    events,
    executions,
    keys,
    now_utc,
    packs,
    rules,
    triggers,
)


def automation_repository(store: Store) -> AutomationRepository:
    """The automation repository of ``store`` (one implementation for both dialects)."""
    return SqlAutomation(store)


# -- rows to records ------------------------------------------------------------------------


def _trigger(m: RowMapping) -> Trigger:
    return Trigger(
        id=m["id"],
        ref=m["ref"],
        pack_ref=m["pack_ref"],
        pack_id=m.get("pack_id"),
        label=m["label"],
        description=m["description"],
        type=m["type"],
        parameters=m["parameters"],
        param_schema=m["param_schema"],
        out_schema=m["out_schema"],
        enabled=m["enabled"],
        from_pack=m["from_pack"],
        webhook_enabled=m["webhook_enabled"],
        webhook_key_hash=m["webhook_key_hash"],
        webhook_key_sealed=m["webhook_key_sealed"],
        webhook_secret=m["webhook_secret"],
        next_fire_at=m["next_fire_at"],
        created=m["created"],
        updated=m["updated"],
    )


def _rule(m: RowMapping) -> Rule:
    return Rule(
        id=m["id"],
        ref=m["ref"],
        pack_ref=m["pack_ref"],
        label=m["label"],
        description=m["description"],
        trigger_ref=m["trigger_ref"],
        action_ref=m["action_ref"],
        conditions=m["conditions"],
        action_params=m["action_params"],
        action_params_sealed=m["action_params_sealed"],
        trigger_params=m["trigger_params"],
        next_fire_at=m["next_fire_at"],
        fire_count=m["fire_count"],
        enabled=m["enabled"],
        chat_channel=m["chat_channel"],
        callback_url=m["callback_url"],
        from_pack=m["from_pack"],
        created=m["created"],
        updated=m["updated"],
        pack_id=m.get("pack_id"),
        action_id=m.get("action_id"),
        trigger_id=m.get("trigger_id"),
        trigger_type=m.get("trigger_type"),
        action_param_schema=m.get("action_param_schema"),
    )


def _event(m: RowMapping) -> Event:
    return Event(
        id=m["id"],
        trigger_ref=m["trigger_ref"],
        trigger_id=m["trigger_id"],
        rule_id=m["rule_id"],
        rule_ref=m["rule_ref"],
        config=m["config"],
        payload=m["payload"],
        source=m["source"],
        received_at=m["received_at"],
        processed_at=m["processed_at"],
    )


def _enforcement(m: RowMapping, payload: Any = None) -> Enforcement:
    return Enforcement(
        id=m["id"],
        rule_id=m["rule_id"],
        rule_ref=m["rule_ref"],
        trigger_ref=m["trigger_ref"],
        event_id=m["event_id"],
        status=m["status"],
        conditions=m["conditions"],
        resolved_at=m["resolved_at"],
        config=m["config"],
        execution_id=m["execution_id"],
        error=m["error"],
        created=m["created"],
        event_payload=m.get("event_payload", payload),
    )


# -- queries --------------------------------------------------------------------------------


def _trigger_query() -> Select[Any]:
    return select(*triggers.c, packs.c.id.label("pack_id")).outerjoin(
        packs, packs.c.ref == triggers.c.pack_ref
    )


def _rule_query() -> Select[Any]:
    return (
        select(
            *rules.c,
            packs.c.id.label("pack_id"),
            actions.c.id.label("action_id"),
            actions.c.param_schema.label("action_param_schema"),
            triggers.c.id.label("trigger_id"),
            triggers.c.type.label("trigger_type"),
        )
        .outerjoin(packs, packs.c.ref == rules.c.pack_ref)
        .outerjoin(actions, actions.c.ref == rules.c.action_ref)
        .outerjoin(triggers, triggers.c.ref == rules.c.trigger_ref)
    )


def _enforcement_query() -> Select[Any]:
    return select(*enforcements.c, events.c.payload.label("event_payload")).outerjoin(
        events, events.c.id == enforcements.c.event_id
    )


def _equal(*filters: tuple[Any, Any]) -> list[ColumnElement[bool]]:
    """``column == value`` for each filter given a value (a list's optional query filters)."""
    return [column == value for column, value in filters if value is not None]


def _trigger_columns(fields: TriggerFields) -> dict[str, Any]:
    return {
        "ref": fields.ref,
        "pack_ref": fields.pack_ref,
        "label": fields.label,
        "description": fields.description,
        "type": fields.type,
        "parameters": fields.parameters,
        "param_schema": fields.param_schema,
        "out_schema": fields.out_schema,
        "enabled": fields.enabled,
        "webhook_secret": fields.webhook_secret,
        "next_fire_at": fields.next_fire_at,
        "updated": fields.updated,
    }


def _rule_columns(fields: RuleFields) -> dict[str, Any]:
    return {
        "ref": fields.ref,
        "pack_ref": fields.pack_ref,
        "label": fields.label,
        "description": fields.description,
        "trigger_ref": fields.trigger_ref,
        "action_ref": fields.action_ref,
        "conditions": fields.conditions,
        "action_params": fields.action_params,
        "action_params_sealed": fields.action_params_sealed,
        "trigger_params": fields.trigger_params,
        "enabled": fields.enabled,
        "chat_channel": fields.chat_channel,
        "callback_url": fields.callback_url,
        "next_fire_at": fields.next_fire_at,
        "updated": fields.updated,
    }


def _settlement_columns(settlement: Settlement) -> dict[str, Any]:
    return {
        "status": settlement.status,
        "execution_id": settlement.execution_id,
        "error": settlement.error,
        "config": settlement.config,
        "resolved_at": settlement.resolved_at,
    }


class SqlAutomation:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.totals = Totals(store)

    # -- packs ---------------------------------------------------------------------------------

    async def pack_exists(self, pack_ref: str) -> bool:
        async with self.store.read() as conn:
            found = (await conn.execute(select(packs.c.id).where(packs.c.ref == pack_ref))).first()
        return found is not None

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

    # -- triggers ------------------------------------------------------------------------------

    async def get_trigger(self, ref: str) -> Trigger | None:
        async with self.store.read() as conn:
            row = (await conn.execute(_trigger_query().where(triggers.c.ref == ref))).first()
        return None if row is None else _trigger(row._mapping)

    async def trigger_by_key_hash(self, key_hash: str) -> Trigger | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(select(triggers).where(triggers.c.webhook_key_hash == key_hash))
            ).first()
        return None if row is None else _trigger(row._mapping)

    async def trigger_id(self, conn: Conn, ref: str) -> int | None:
        found = (await conn.execute(select(triggers.c.id).where(triggers.c.ref == ref))).scalar()
        return None if found is None else int(found)

    async def list_triggers(
        self, *, pack_ref: str | None = None, enabled: bool | None = None
    ) -> list[Trigger]:
        query = _trigger_query().order_by(triggers.c.ref)
        if pack_ref is not None:
            query = query.where(triggers.c.pack_ref == pack_ref)
        if enabled is not None:
            query = query.where(triggers.c.enabled.is_(enabled))
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_trigger(r._mapping) for r in rows]

    async def insert_trigger(
        self, fields: TriggerFields, *, from_pack: bool, created: datetime
    ) -> bool:
        async with self.store.write() as conn:
            if (
                await conn.execute(select(triggers.c.id).where(triggers.c.ref == fields.ref))
            ).first():
                return False
            await conn.execute(
                insert(triggers).values(
                    **_trigger_columns(fields), from_pack=from_pack, created=created
                )
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
                update(triggers)
                .where(triggers.c.id == trigger_id)
                .values(**_trigger_columns(fields))
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

    # -- rules ---------------------------------------------------------------------------------

    async def get_rule(self, ref: str) -> Rule | None:
        async with self.store.read() as conn:
            row = (await conn.execute(_rule_query().where(rules.c.ref == ref))).first()
        return None if row is None else _rule(row._mapping)

    async def list_rules(
        self,
        *,
        trigger_ref: str | None = None,
        action_ref: str | None = None,
        pack_ref: str | None = None,
        enabled: bool | None = None,
    ) -> list[Rule]:
        query = _rule_query().order_by(rules.c.ref)
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
        return [_rule(r._mapping) for r in rows]

    async def insert_rule(self, fields: RuleFields, *, from_pack: bool, created: datetime) -> bool:
        async with self.store.write() as conn:
            if (await conn.execute(select(rules.c.id).where(rules.c.ref == fields.ref))).first():
                return False
            await conn.execute(
                insert(rules).values(**_rule_columns(fields), from_pack=from_pack, created=created)
            )
        return True

    async def update_rule(self, fields: RuleFields) -> bool:
        async with self.store.write() as conn:
            result = await conn.execute(
                update(rules).where(rules.c.ref == fields.ref).values(**_rule_columns(fields))
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

    async def event_for_processing(
        self, event_id: int
    ) -> tuple[Event, Trigger | None, list[Rule]] | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
            if row is None:
                return None
            event = _event(row._mapping)
            trigger = (
                await conn.execute(select(triggers).where(triggers.c.ref == event.trigger_ref))
            ).first()
            own = (
                rules.c.id == event.rule_id
                if event.rule_id is not None
                else rules.c.trigger_ref == event.trigger_ref
            )
            candidates = (
                await conn.execute(
                    select(rules).where(own, rules.c.enabled.is_(True)).order_by(rules.c.id)
                )
            ).all()
        return (
            event,
            None if trigger is None else _trigger(trigger._mapping),
            [_rule(r._mapping) for r in candidates],
        )

    # -- events --------------------------------------------------------------------------------

    async def insert_event(
        self,
        conn: Conn,
        trigger_ref: str,
        payload: Any,
        source: str,
        *,
        trigger_id: int | None = None,
        rule_id: int | None = None,
        rule_ref: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Event:
        row = (
            await conn.execute(
                insert(events)
                .values(
                    trigger_ref=trigger_ref,
                    trigger_id=trigger_id,
                    rule_id=rule_id,
                    rule_ref=rule_ref,
                    config=config,
                    payload=payload,
                    source=source,
                    received_at=now_utc(),
                )
                .returning(*events.c)
            )
        ).one()
        return _event(row._mapping)

    async def get_event(self, event_id: int) -> Event | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        return None if row is None else _event(row._mapping)

    async def mark_processed(self, event_id: int, at: datetime) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                update(events).where(events.c.id == event_id).values(processed_at=at)
            )

    async def unprocessed_events(self, received_before: datetime, limit: int) -> list[int]:
        async with self.store.read() as conn:
            ids = (
                (
                    await conn.execute(
                        select(events.c.id)
                        .where(
                            events.c.processed_at.is_(None), events.c.received_at < received_before
                        )
                        .order_by(events.c.id)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
        return [int(i) for i in ids]

    async def list_events(
        self, where: EventFilter, page: int, per_page: int
    ) -> tuple[list[Event], int]:
        clauses = _equal(
            (events.c.trigger_id, where.trigger_id),
            (events.c.trigger_ref, where.trigger_ref),
            (events.c.rule_id, where.rule_id),
            (events.c.rule_ref, where.rule_ref),
            (events.c.source, where.source),
        )
        if where.since is not None:
            clauses.append(events.c.received_at >= where.since)
        if where.until is not None:
            clauses.append(events.c.received_at < where.until)
        rows = await self._page(select(events), clauses, events.c.id, page, per_page)
        return [_event(r) for r in rows], await self.totals.count(events, clauses)

    # -- enforcements --------------------------------------------------------------------------

    async def find_enforcement(self, rule_ref: str, event_id: int) -> Enforcement | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    _enforcement_query().where(
                        enforcements.c.rule_ref == rule_ref, enforcements.c.event_id == event_id
                    )
                )
            ).first()
        return None if row is None else _enforcement(row._mapping)

    async def get_enforcement(self, enforcement_id: int) -> Enforcement | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(_enforcement_query().where(enforcements.c.id == enforcement_id))
            ).first()
        return None if row is None else _enforcement(row._mapping)

    async def take_over_enforcement(self, enforcement: Enforcement, now: datetime) -> bool:
        async with self.store.write() as conn:
            won = (
                await conn.execute(
                    update(enforcements)
                    .where(
                        enforcements.c.id == enforcement.id,
                        enforcements.c.status == "creating",
                        enforcements.c.created == enforcement.created,
                    )
                    .values(created=now)
                )
            ).rowcount
        return bool(won)

    async def insert_enforcement(
        self, new: NewEnforcement, settlement: Settlement | None = None
    ) -> Enforcement:
        values: dict[str, Any] = {
            "rule_id": new.rule_id,
            "rule_ref": new.rule_ref,
            "trigger_ref": new.trigger_ref,
            "event_id": new.event_id,
            "conditions": new.conditions,
            "created": new.created,
        }
        if settlement is None:
            values |= {"status": "creating", "config": None}
        else:
            values |= _settlement_columns(settlement)
        async with self.store.write() as conn:  # a unique (rule, event) key: Conflict
            row = (
                await conn.execute(insert(enforcements).values(**values).returning(*enforcements.c))
            ).one()
        return _enforcement(row._mapping)

    async def settle_enforcement(self, enforcement_id: int, settlement: Settlement) -> Enforcement:
        async with self.store.write() as conn:
            row = (
                await conn.execute(
                    update(enforcements)
                    .where(enforcements.c.id == enforcement_id)
                    .values(**_settlement_columns(settlement))
                    .returning(*enforcements.c)
                )
            ).one()
        return _enforcement(row._mapping)

    async def execution_of_enforcement(self, enforcement_id: int) -> int | None:
        async with self.store.read() as conn:
            made = (
                await conn.execute(
                    select(executions.c.id).where(executions.c.enforcement == enforcement_id)
                )
            ).first()
        return None if made is None else int(made.id)

    async def list_enforcements(
        self, where: EnforcementFilter, page: int, per_page: int
    ) -> tuple[list[Enforcement], int]:
        clauses = _equal(
            (enforcements.c.rule_id, where.rule_id),
            (enforcements.c.rule_ref, where.rule_ref),
            (enforcements.c.trigger_ref, where.trigger_ref),
            (enforcements.c.event_id, where.event_id),
        )
        if where.statuses is not None:
            clauses.append(enforcements.c.status.in_(where.statuses))
        if where.since is not None:
            clauses.append(enforcements.c.created >= where.since)
        rows = await self._page(_enforcement_query(), clauses, enforcements.c.id, page, per_page)
        return [_enforcement(r) for r in rows], await self.totals.count(enforcements, clauses)

    async def _page(
        self,
        query: Select[Any],
        where: list[ColumnElement[bool]],
        order: Any,
        page: int,
        per_page: int,
    ) -> list[RowMapping]:
        async with self.store.read(offload=True) as conn:
            rows = (
                await conn.execute(
                    query.where(*where)
                    .order_by(order.desc())
                    .limit(per_page)
                    .offset((page - 1) * per_page)
                )
            ).all()
        return [r._mapping for r in rows]

    # -- timers --------------------------------------------------------------------------------

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
        return [_trigger(r._mapping) for r in due]

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

    # -- keys for templates --------------------------------------------------------------------

    async def template_keys(self, refs: Sequence[str]) -> list[StoredKey]:
        query = select(keys.c.ref, keys.c.encrypted, keys.c.value, keys.c.sealed).where(
            keys.c.ref.in_(sorted(refs)),
            keys.c.owner_type != "identity",
            or_(keys.c.expires_at.is_(None), keys.c.expires_at > now_utc()),
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            StoredKey(
                ref=r.ref,
                encrypted=bool(r.encrypted),
                # A key that is not encrypted holds ``{"v": value}`` (see engine.keys).
                value=r.value.get("v") if isinstance(r.value, dict) else None,
                sealed=r.sealed,
            )
            for r in rows
        ]
