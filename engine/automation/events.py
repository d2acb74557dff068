"""Events and enforcements as records: an event is recorded (a webhook call, a timer tick, a
test), and events and enforcements are listed and read. What an event sets off is
:mod:`engine.automation.enforcement`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.automation.models import STATUS_FILTER
from engine.automation.records import (
    Enforcement,
    EnforcementFilter,
    EnforcementRepository,
    Event,
    EventFilter,
)
from engine.errors import InvalidRequest, NotFound
from engine.storage import Store

MAX_PER_PAGE = 100


def _check_page(page: int, per_page: int) -> None:
    if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
        raise InvalidRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")


class Events:
    def __init__(self, store: Store, repo: EnforcementRepository) -> None:
        self.store = store
        self.repo = repo

    async def record(
        self,
        trigger_ref: str,
        payload: Any,
        source: str,
        *,
        trigger_id: int | None = None,
        rule_id: int | None = None,
        rule_ref: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Event:
        """Record an event of ``trigger_ref`` (its id looked up when not given)."""
        async with self.store.write() as conn:
            if trigger_id is None:
                trigger_id = await self.repo.trigger_id(conn, trigger_ref)
            return await self.repo.insert_event(
                conn,
                trigger_ref,
                payload,
                source,
                trigger_id=trigger_id,
                rule_id=rule_id,
                rule_ref=rule_ref,
                config=config,
            )

    async def list_events(
        self,
        *,
        trigger_id: int | None = None,
        trigger_ref: str | None = None,
        rule_id: int | None = None,
        rule_ref: str | None = None,
        source: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page: int = 1,
        per_page: int = 50,
    ) -> tuple[list[Event], int]:
        _check_page(page, per_page)
        where = EventFilter(trigger_id, trigger_ref, rule_id, rule_ref, source, since, until)
        return await self.repo.list_events(where, page, per_page)

    async def get_event(self, event_id: int) -> Event:
        event = await self.repo.get_event(event_id)
        if event is None:
            raise NotFound(f"event {event_id} not found")
        return event

    async def list_enforcements(
        self,
        *,
        rule_id: int | None = None,
        rule_ref: str | None = None,
        trigger_ref: str | None = None,
        event_id: int | None = None,
        status: str | None = None,
        since: datetime | None = None,
        page: int = 1,
        per_page: int = 50,
    ) -> tuple[list[Enforcement], int]:
        statuses = None
        if status is not None:
            if status not in STATUS_FILTER:
                raise InvalidRequest(
                    f"status must be one of {', '.join(STATUS_FILTER)}, got '{status[:40]}'"
                )
            statuses = STATUS_FILTER[status]
        _check_page(page, per_page)
        where = EnforcementFilter(rule_id, rule_ref, trigger_ref, event_id, statuses, since)
        return await self.repo.list_enforcements(where, page, per_page)

    async def get_enforcement(self, enforcement_id: int) -> Enforcement:
        enforcement = await self.repo.get_enforcement(enforcement_id)
        if enforcement is None:
            raise NotFound(f"enforcement {enforcement_id} not found")
        return enforcement
