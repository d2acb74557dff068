"""Events and enforcements in SQL; the execution an enforcement made is read from
``executions``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Select, insert, select, update

from engine.automation.records import (
    Enforcement,
    EnforcementFilter,
    Event,
    EventFilter,
    NewEnforcement,
    Rule,
    Settlement,
    Trigger,
)
from engine.clock import now_utc
from engine.storage.automation.rows import (
    SqlBase,
    columns_of,
    enforcement_query,
    equal,
    to_enforcement,
    to_event,
    to_rule,
    to_trigger,
)
from engine.storage.store import Conn
from engine.storage.tables import enforcements, events, executions, rules, triggers


class SqlEvents(SqlBase):
    async def trigger_id(self, conn: Conn, ref: str) -> int | None:
        found = (await conn.execute(select(triggers.c.id).where(triggers.c.ref == ref))).scalar()
        return None if found is None else int(found)

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
        return to_event(row._mapping)

    async def get_event(self, event_id: int) -> Event | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        return None if row is None else to_event(row._mapping)

    async def list_events(
        self, where: EventFilter, page: int, per_page: int
    ) -> tuple[list[Event], int]:
        clauses = equal(
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
        return [to_event(r) for r in rows], await self.totals.count(events, clauses)

    async def event_for_processing(
        self, event_id: int
    ) -> tuple[Event, Trigger | None, list[Rule]] | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
            if row is None:
                return None
            event = to_event(row._mapping)
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
            None if trigger is None else to_trigger(trigger._mapping),
            [to_rule(r._mapping) for r in candidates],
        )

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

    async def find_enforcement(self, rule_ref: str, event_id: int) -> Enforcement | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    enforcement_query().where(
                        enforcements.c.rule_ref == rule_ref, enforcements.c.event_id == event_id
                    )
                )
            ).first()
        return None if row is None else to_enforcement(row._mapping)

    async def get_enforcement(self, enforcement_id: int) -> Enforcement | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(enforcement_query().where(enforcements.c.id == enforcement_id))
            ).first()
        return None if row is None else to_enforcement(row._mapping)

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
            values |= columns_of(settlement)
        async with self.store.write() as conn:  # a unique (rule, event) key: Conflict
            row = (
                await conn.execute(insert(enforcements).values(**values).returning(*enforcements.c))
            ).one()
        return to_enforcement(row._mapping)

    async def settle_enforcement(self, enforcement_id: int, settlement: Settlement) -> Enforcement:
        async with self.store.write() as conn:
            row = (
                await conn.execute(
                    update(enforcements)
                    .where(enforcements.c.id == enforcement_id)
                    .values(**columns_of(settlement))
                    .returning(*enforcements.c)
                )
            ).one()
        return to_enforcement(row._mapping)

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
        clauses = equal(
            (enforcements.c.rule_id, where.rule_id),
            (enforcements.c.rule_ref, where.rule_ref),
            (enforcements.c.trigger_ref, where.trigger_ref),
            (enforcements.c.event_id, where.event_id),
        )
        if where.statuses is not None:
            clauses.append(enforcements.c.status.in_(where.statuses))
        if where.since is not None:
            clauses.append(enforcements.c.created >= where.since)
        rows = await self._page(enforcement_query(), clauses, enforcements.c.id, page, per_page)
        return [to_enforcement(r) for r in rows], await self.totals.count(enforcements, clauses)

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
