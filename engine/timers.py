"""The firing of due timers: each tick once, however many processes look for due timers at
the same time (schedules: :mod:`engine.schedules`).

The process whose conditional UPDATE moves a timer's ``next_fire_at`` on records the tick's
event in the same transaction, then processes it like any event. A trigger timer's event runs
every rule of the trigger; a rule timer's event names its rule (``rule``, ``rule_ref``) and runs
only that rule. A timer far behind (the server was down) fires once, then on schedule.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from engine.enforcement import Enforcer, insert_event
from engine.errors import InvalidRequest
from engine.schedules import TRIGGER_TIMERS, next_fire, rule_schedule
from engine.storage import Store
from engine.storage.tables import now_utc, rules, triggers

log = logging.getLogger("attune.timers")


def rule_first_fire(trigger_type: str, params: Mapping[str, Any] | None) -> datetime | None:
    """A rule timer's first tick, counted from now (None: no timer, or a date already past)."""
    schedule = rule_schedule(trigger_type, params)
    return schedule.next_after(now_utc()) if schedule is not None else None


# -- firing -------------------------------------------------------------------------------------

#: Rule timers fired per pass at most (the rest fire on the next pass, a poll later).
MAX_DUE_PER_PASS = 500


async def fire_due_timers(store: Store, enforcer: Enforcer) -> int:
    """Fire every timer that is due; each tick once, whatever the number of processes: the
    process whose conditional UPDATE moves ``next_fire_at`` on records the tick's event, in the
    same transaction."""
    now = now_utc()
    return await _fire_triggers(store, enforcer, now) + await _fire_rules(store, enforcer, now)


async def _fire_triggers(store: Store, enforcer: Enforcer, now: datetime) -> int:
    async with store.read() as conn:
        due = (
            await conn.execute(
                select(triggers).where(
                    triggers.c.type.in_(TRIGGER_TIMERS),
                    triggers.c.enabled.is_(True),
                    triggers.c.next_fire_at <= now,
                )
            )
        ).all()
    fired = 0
    for trigger in due:
        nxt = next_fire(trigger.type, trigger.parameters, trigger.next_fire_at)
        if nxt is not None and nxt <= now:  # far behind: one firing, then on schedule
            nxt = next_fire(trigger.type, trigger.parameters, now)
        async with store.write() as conn:
            won = (
                await conn.execute(
                    update(triggers)
                    .where(
                        triggers.c.id == trigger.id,
                        triggers.c.next_fire_at == trigger.next_fire_at,
                    )
                    .values(next_fire_at=nxt)
                )
            ).rowcount
            if not won:
                continue  # another process fired this tick
            payload = {
                "scheduled_at": trigger.next_fire_at.isoformat(),
                "fired_at": now.isoformat(),
            }
            event = await insert_event(conn, trigger.ref, payload, "timer", trigger_id=trigger.id)
        enforcer.process_soon(event.id)
        fired += 1
    return fired


async def _fire_rules(store: Store, enforcer: Enforcer, now: datetime) -> int:
    async with store.read() as conn:
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
                .limit(MAX_DUE_PER_PASS)
            )
        ).all()
    fired = 0
    for rule in due:
        try:
            schedule = rule_schedule(rule.trigger_type, rule.trigger_params)
        except InvalidRequest as exc:  # changed underneath (e.g. its trigger's type)
            log.warning("rule %s: timer stopped: %s", rule.ref, exc.message)
            schedule = None
        scheduled: datetime = rule.next_fire_at
        nxt = schedule.next_after(scheduled) if schedule is not None else None
        if schedule is not None and nxt is not None and nxt <= now:
            nxt = schedule.next_after(now)  # far behind: one firing, then on schedule
        async with store.write() as conn:
            won = (
                await conn.execute(
                    update(rules)
                    .where(rules.c.id == rule.id, rules.c.next_fire_at == scheduled)
                    .values(next_fire_at=nxt, fire_count=rules.c.fire_count + 1)
                )
            ).rowcount
            if not won or schedule is None:
                continue  # another process fired this tick (or the timer cannot run)
            event = await insert_event(
                conn,
                rule.trigger_ref,
                schedule.payload(scheduled, now, rule.fire_count + 1, nxt),
                "timer",
                trigger_id=rule.trigger_id,
                rule_id=rule.id,
                rule_ref=rule.ref,
                config=rule.trigger_params,
            )
        enforcer.process_soon(event.id)
        fired += 1
    return fired
