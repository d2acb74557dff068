"""The firing of due timers: each tick once, however many processes look for due timers at
the same time (schedules: :mod:`engine.automation.schedules`).

The process whose conditional UPDATE moves a timer's ``next_fire_at`` on records the tick's
event in the same transaction, then processes it like any event. A trigger timer's event runs
every rule of the trigger; a rule timer's event names its rule (``rule``, ``rule_ref``) and runs
only that rule. A timer far behind (the server was down) fires once, then on schedule.
"""

from __future__ import annotations

import logging
from datetime import datetime

from engine.automation.enforcement import Enforcer
from engine.automation.records import TimerRepository
from engine.automation.schedules import TRIGGER_TIMERS, next_fire, rule_schedule
from engine.clock import now_utc
from engine.errors import InvalidRequest
from engine.storage import Store

log = logging.getLogger(f"attune.{__name__}")


#: Rule timers fired per pass at most (the rest fire on the next pass, a poll later).
MAX_DUE_PER_PASS = 500


class Timers:
    def __init__(self, store: Store, repo: TimerRepository, enforcer: Enforcer) -> None:
        self.store = store
        self.repo = repo
        self.enforcer = enforcer

    async def fire_due(self) -> int:
        """Fire every timer that is due; each tick once, whatever the number of processes:
        the process whose conditional UPDATE moves ``next_fire_at`` on records the tick's
        event, in the same transaction."""
        now = now_utc()
        return await self._fire_triggers(now) + await self._fire_rules(now)

    async def _fire_triggers(self, now: datetime) -> int:
        fired = 0
        for trigger in await self.repo.due_trigger_timers(TRIGGER_TIMERS, now):
            scheduled = trigger.next_fire_at
            assert scheduled is not None  # due: it has a next tick
            nxt = next_fire(trigger.type, trigger.parameters, scheduled)
            if nxt is not None and nxt <= now:  # far behind: one firing, then on schedule
                nxt = next_fire(trigger.type, trigger.parameters, now)
            async with self.store.write() as conn:
                if not await self.repo.move_trigger_timer(conn, trigger.id, scheduled, nxt):
                    continue  # another process fired this tick
                payload = {"scheduled_at": scheduled.isoformat(), "fired_at": now.isoformat()}
                event = await self.repo.insert_event(
                    conn, trigger.ref, payload, "timer", trigger_id=trigger.id
                )
            self.enforcer.process_soon(event.id)
            fired += 1
        return fired

    async def _fire_rules(self, now: datetime) -> int:
        fired = 0
        for rule in await self.repo.due_rule_timers(now, MAX_DUE_PER_PASS):
            try:
                schedule = rule_schedule(rule.trigger_type, rule.trigger_params)
            except InvalidRequest as exc:  # changed underneath (e.g. its trigger's type)
                log.warning("rule %s: timer stopped: %s", rule.ref, exc.message)
                schedule = None
            scheduled = rule.next_fire_at
            nxt = schedule.next_after(scheduled) if schedule is not None else None
            if schedule is not None and nxt is not None and nxt <= now:
                nxt = schedule.next_after(now)  # far behind: one firing, then on schedule
            async with self.store.write() as conn:
                won = await self.repo.move_rule_timer(conn, rule.id, scheduled, nxt)
                if not won or schedule is None:
                    continue  # another process fired this tick (or the timer cannot run)
                event = await self.repo.insert_event(
                    conn,
                    rule.trigger_ref,
                    schedule.payload(scheduled, now, rule.fire_count + 1, nxt),
                    "timer",
                    trigger_id=rule.trigger_id,
                    rule_id=rule.id,
                    rule_ref=rule.ref,
                    config=rule.trigger_params,
                )
            self.enforcer.process_soon(event.id)
            fired += 1
        return fired
