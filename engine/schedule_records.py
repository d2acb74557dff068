"""Schedules: a run of an action or a template later, once (``at``) or again and again
(``every`` N seconds, ``cron``), in an IANA time zone. Pure records and the repository's
Protocol; the service is :mod:`engine.exec_schedules`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

Kind = Literal["at", "every", "cron"]
Missed = Literal["once", "skip"]


@dataclass(frozen=True)
class ScheduleFields:
    """What is stored when a schedule is made. ``parameters`` hold the marker in place of each
    secret value (sealed in ``parameters_sealed``); for a template they are its overrides.
    ``requester``: who asked, as :class:`engine.gate.Requester` fields; the runs are theirs."""

    action_ref: str | None
    template_ref: str | None
    parameters: dict[str, Any]
    parameters_sealed: str | None
    kind: Kind
    at: datetime | None
    every_s: float | None
    cron: str | None
    timezone: str
    next_fire_at: datetime | None
    missed: Missed
    requester: dict[str, Any]
    chat: dict[str, Any] | None
    description: str
    #: Of the request that made it: the same request again finds this schedule.
    idempotency_key: str | None = None


@dataclass(frozen=True)
class Schedule:
    id: int
    fields: ScheduleFields
    paused: bool
    fire_count: int
    last_fired_at: datetime | None
    last_execution: int | None
    created: datetime
    updated: datetime

    @property
    def next_fire_at(self) -> datetime | None:
        return self.fields.next_fire_at


class ScheduleRepository(Protocol):
    async def add(self, fields: ScheduleFields) -> Schedule: ...

    async def get(self, schedule_id: int) -> Schedule | None: ...

    async def find_by_key(self, idempotency_key: str) -> Schedule | None:
        """The schedule made by the request with this idempotency key, if any."""
        ...

    async def every_schedule(self) -> list[Schedule]:
        """Every schedule, by id."""
        ...

    async def delete(self, schedule_id: int) -> bool: ...

    async def set_paused(
        self, schedule_id: int, paused: bool, next_fire_at: datetime | None
    ) -> Schedule | None: ...

    async def due(self, now: datetime, limit: int) -> list[Schedule]:
        """Schedules not paused whose next tick is at ``now`` or before, soonest first."""
        ...

    async def earliest(self) -> datetime | None:
        """The soonest next tick of the schedules not paused."""
        ...

    async def claim(
        self, schedule_id: int, scheduled: datetime, nxt: datetime | None, fired_at: datetime | None
    ) -> bool:
        """Move the next tick from ``scheduled`` to ``nxt`` if no one has (True: this caller
        has the tick); ``fired_at`` (None: the tick is skipped) counts a run."""
        ...

    async def ran(self, schedule_id: int, execution_id: int) -> None:
        """Record the execution a tick started."""
        ...
