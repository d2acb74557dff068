"""Events and their enforcement: an event is recorded first; then every enabled rule of its
trigger (only the event's own rule, for a rule timer's tick) is considered: conditions checked,
``action_params`` rendered from the event, an enforcement recorded (one per rule and event, a
unique key), and an execution submitted that links it. The event is marked processed at the end;
the sweep finishes events whose processing was interrupted, and never creates a second execution
for an enforcement.

What conditions and templates see (``var`` paths of JSON-Logic, names in ``{{ ... }}``):
``event.id``, ``event.trigger`` (the trigger's ref), ``event.trigger_ref``, ``event.trigger_id``,
``event.payload``, ``event.config``, ``event.rule_ref``, ``event.created``, ``payload`` (the
event's payload again), ``trigger.ref``, ``trigger.id``, ``rule.ref`` and ``rule.id``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, insert, select, update

from engine.audit import AuditEntry
from engine.automation import STATUS_FILTER, enforcement_record, event_record
from engine.counts import Totals
from engine.crypto import SecretBox
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound
from engine.key_templates import Evaluator, InProcess, evaluate_rule
from engine.records import Executor
from engine.rule_secrets import opened, sealed_names
from engine.service import ExecutionService
from engine.storage import Store
from engine.storage.tables import enforcements, events, executions, now_utc, rules, triggers
from engine.templates import TemplateProblem

log = logging.getLogger("attune.rules")

#: An enforcement still ``creating`` after this long was interrupted; a later pass finishes it.
ENFORCEMENT_STALE_S = 30.0
MAX_PER_PAGE = 100


class _Busy(Exception):
    """Another pass is creating this enforcement right now."""


def _enforcement_query() -> Any:
    return select(*enforcements.c, events.c.payload.label("event_payload")).outerjoin(
        events, events.c.id == enforcements.c.event_id
    )


async def insert_event(
    conn: Any,
    trigger_ref: str,
    payload: Any,
    source: str,
    *,
    trigger_id: int | None = None,
    rule_id: int | None = None,
    rule_ref: str | None = None,
    config: dict[str, Any] | None = None,
) -> Row[Any]:
    """Record an event inside the caller's write transaction (a timer claims its tick and
    records the event in one)."""
    row: Row[Any] = (
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
    return row


def _context(rule: Row[Any], event: Row[Any], trigger: Row[Any] | None) -> dict[str, Any]:
    return {
        "event": {
            "id": event.id,
            "trigger": event.trigger_ref,
            "trigger_ref": event.trigger_ref,
            "trigger_id": event.trigger_id,
            "payload": event.payload,
            "config": event.config,
            "rule_ref": event.rule_ref,
            "created": event.received_at.isoformat(),
        },
        "payload": event.payload,
        "trigger": {"ref": event.trigger_ref, "id": trigger.id if trigger is not None else None},
        "rule": {"ref": rule.ref, "id": rule.id},
    }


class Enforcer:
    def __init__(
        self,
        store: Store,
        service: ExecutionService,
        secrets_box: SecretBox,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.store = store
        self.service = service
        self.secrets = secrets_box
        #: Where conditions and templates run: a TemplatePool (worker processes with a time
        #: limit) in a server, this process otherwise.
        self.evaluator: Evaluator = evaluator if evaluator is not None else InProcess()
        self.totals = Totals(store)
        self._background: set[asyncio.Task[Any]] = set()

    # -- recording ----------------------------------------------------------------------------

    async def record_event(
        self,
        trigger_ref: str,
        payload: Any,
        source: str,
        *,
        trigger_id: int | None = None,
        rule_id: int | None = None,
        rule_ref: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        async with self.store.write() as conn:
            if trigger_id is None:
                trigger_id = (
                    await conn.execute(select(triggers.c.id).where(triggers.c.ref == trigger_ref))
                ).scalar()
            row = await insert_event(
                conn,
                trigger_ref,
                payload,
                source,
                trigger_id=trigger_id,
                rule_id=rule_id,
                rule_ref=rule_ref,
                config=config,
            )
        return event_record(row)

    def process_soon(self, event_id: int) -> None:
        task = asyncio.get_running_loop().create_task(self._process_logged(event_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _process_logged(self, event_id: int) -> None:
        try:
            await self.process_event(event_id)
        except EngineError as exc:
            log.warning(
                "event %s not processed yet (%s); the sweep will retry", event_id, exc.message
            )
        except Exception:
            log.exception("event %s not processed yet; the sweep will retry", event_id)

    # -- processing ---------------------------------------------------------------------------

    async def process_event(self, event_id: int) -> list[dict[str, Any]]:
        """Fire every enabled rule of the event's trigger (or the event's own rule) whose
        conditions match, once each."""
        async with self.store.read() as conn:
            event = (await conn.execute(select(events).where(events.c.id == event_id))).first()
            if event is None:
                raise NotFound(f"event {event_id} not found")
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
        done = []
        busy = False
        if trigger is not None and trigger.enabled:
            for rule in candidates:
                try:
                    enforcement = await self._enforce(rule, event, trigger)
                except _Busy:
                    busy = True
                    continue
                if enforcement is not None:
                    done.append(enforcement)
        if busy:
            return done  # not finished here: the sweep looks at this event again
        async with self.store.write() as conn:
            await conn.execute(
                update(events).where(events.c.id == event_id).values(processed_at=now_utc())
            )
        return done

    async def _enforce(
        self, rule: Row[Any], event: Row[Any], trigger: Row[Any] | None
    ) -> dict[str, Any] | None:
        context = _context(rule, event, trigger)
        async with self.store.read() as conn:
            existing = (
                await conn.execute(
                    _enforcement_query().where(
                        enforcements.c.rule_ref == rule.ref, enforcements.c.event_id == event.id
                    )
                )
            ).first()
        if existing is not None and existing.status != "creating":
            return enforcement_record(existing)  # done on an earlier pass
        if existing is not None and not await self._take_over(existing):
            raise _Busy  # another pass is creating it right now
        # A condition or template that fails is the rule's problem, not a passing one: the
        # enforcement fails with the reason, once (the event is not looked at again).
        try:
            given = opened(rule.action_params, rule.action_params_sealed, self.secrets)
        except EngineError as exc:  # sealed with another secret key: a reason, not a retry
            return await self._settle(rule, event, existing, "failed", None, exc.message)
        try:
            verdict = await evaluate_rule(
                self.store,
                self.secrets,
                self.evaluator,
                rule.conditions,
                given,
                context,
            )
        except TemplateProblem as exc:
            return await self._settle(rule, event, existing, "failed", None, exc.message)
        except EngineError as exc:
            if exc.http_status >= 500:
                raise  # the database or the template workers: leave it to the sweep
            return await self._settle(rule, event, existing, "failed", None, exc.message)
        except Exception as exc:  # a bug: failing once beats failing on every sweep
            log.exception("rule %s on event %s", rule.ref, event.id)
            reason = f"internal error ({type(exc).__name__}) evaluating the rule; see the log"
            return await self._settle(rule, event, existing, "failed", None, reason)
        if verdict is None:
            return None
        params, kv_secrets = verdict
        # A value sealed in the rule stays secret in the run, whatever the schema says now.
        kv_secrets = kv_secrets | sealed_names(rule.action_params_sealed, self.secrets)
        if existing is None:
            try:
                async with self.store.write() as conn:
                    existing = (
                        await conn.execute(
                            insert(enforcements)
                            .values(**_new(rule, event), status="creating", config=None)
                            .returning(*enforcements.c)
                        )
                    ).one()
            except Conflict:
                return None  # another process is enforcing this rule for this event
        assert existing is not None
        # An execution may exist from an interrupted earlier pass: never make a second one.
        async with self.store.read() as conn:
            made = (
                await conn.execute(
                    select(executions.c.id).where(executions.c.enforcement == existing.id)
                )
            ).first()
        if made is not None:
            return await self._settle(rule, event, existing, "scheduled", made.id, None)
        chat = (
            {"sink": "slack", "channel": rule.chat_channel, "rule": rule.ref, "event": event.id}
            if rule.chat_channel
            else None
        )
        executor = Executor(
            identity=f"rule:{rule.ref}", source="rule", extra={"rule": rule.ref, "event": event.id}
        )
        try:
            record = await self.service.submit(
                rule.action_ref,
                params,
                executor,
                enforcement=existing.id,
                secret_params=kv_secrets,
                chat=chat,
                callback_url=rule.callback_url,
                audit_entry=AuditEntry(
                    actor=f"rule:{rule.ref}",
                    source="rule",
                    verb="run",
                    outcome="accepted",
                    target=rule.action_ref,
                    detail=f"event {event.id}",
                ),
            )
        except EngineError as exc:
            if exc.http_status >= 500:
                raise  # the database: leave it to the sweep
            return await self._settle(rule, event, existing, "failed", None, exc.message)
        return await self._settle(
            rule, event, existing, "scheduled", record["id"], None, config=record["config"]
        )

    async def _take_over(self, enforcement: Row[Any]) -> bool:
        """Continue an enforcement left ``creating`` by an interrupted pass, if it is old
        enough to be abandoned; the conditional UPDATE lets exactly one pass win."""
        if enforcement.created > now_utc() - timedelta(seconds=ENFORCEMENT_STALE_S):
            return False
        async with self.store.write() as conn:
            won = (
                await conn.execute(
                    update(enforcements)
                    .where(
                        enforcements.c.id == enforcement.id,
                        enforcements.c.status == "creating",
                        enforcements.c.created == enforcement.created,
                    )
                    .values(created=now_utc())
                )
            ).rowcount
        return bool(won)

    async def _settle(
        self,
        rule: Row[Any],
        event: Row[Any],
        existing: Row[Any] | None,
        status: str,
        execution_id: int | None,
        error: str | None,
        config: Any = None,
    ) -> dict[str, Any]:
        values = {
            "status": status,
            "execution_id": execution_id,
            "error": error,
            "config": config,
            "resolved_at": now_utc(),
        }
        async with self.store.write() as conn:
            if existing is None:  # a unique (rule, event) key: a racing pass gets Conflict
                row = (
                    await conn.execute(
                        insert(enforcements)
                        .values(**_new(rule, event), **values)
                        .returning(*enforcements.c)
                    )
                ).one()
            else:
                row = (
                    await conn.execute(
                        update(enforcements)
                        .where(enforcements.c.id == existing.id)
                        .values(**values)
                        .returning(*enforcements.c)
                    )
                ).one()
        if error:
            log.warning("rule %s on event %s failed: %s", rule.ref, event.id, error)
        return enforcement_record(_with_payload(row, event.payload))

    async def finish_unprocessed(self, older_than_s: float) -> int:
        """Sweep: process events whose processing was interrupted."""
        cutoff = now_utc() - timedelta(seconds=older_than_s)
        async with self.store.read() as conn:
            ids = (
                (
                    await conn.execute(
                        select(events.c.id)
                        .where(events.c.processed_at.is_(None), events.c.received_at < cutoff)
                        .order_by(events.c.id)
                        .limit(200)
                    )
                )
                .scalars()
                .all()
            )
        for event_id in ids:  # one event that cannot be finished now does not hold up the rest
            try:
                await self.process_event(event_id)
            except EngineError as exc:
                log.warning("event %s not processed yet: %s", event_id, exc.message)
        return len(ids)

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)

    # -- listings -----------------------------------------------------------------------------

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
    ) -> tuple[list[dict[str, Any]], int]:
        where = _equal(
            (events.c.trigger_id, trigger_id),
            (events.c.trigger_ref, trigger_ref),
            (events.c.rule_id, rule_id),
            (events.c.rule_ref, rule_ref),
            (events.c.source, source),
        )
        if since is not None:
            where.append(events.c.received_at >= since)
        if until is not None:
            where.append(events.c.received_at < until)
        rows = await self._page(select(events), events, where, events.c.id, page, per_page)
        return [event_record(r) for r in rows], await self.totals.count(events, where)

    async def get_event(self, event_id: int) -> dict[str, Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        if row is None:
            raise NotFound(f"event {event_id} not found")
        return event_record(row)

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
    ) -> tuple[list[dict[str, Any]], int]:
        where = _equal(
            (enforcements.c.rule_id, rule_id),
            (enforcements.c.rule_ref, rule_ref),
            (enforcements.c.trigger_ref, trigger_ref),
            (enforcements.c.event_id, event_id),
        )
        if status is not None:
            if status not in STATUS_FILTER:
                raise InvalidRequest(
                    f"status must be one of {', '.join(STATUS_FILTER)}, got '{status[:40]}'"
                )
            where.append(enforcements.c.status.in_(STATUS_FILTER[status]))
        if since is not None:
            where.append(enforcements.c.created >= since)
        rows = await self._page(
            _enforcement_query(), enforcements, where, enforcements.c.id, page, per_page
        )
        return [enforcement_record(r) for r in rows], await self.totals.count(enforcements, where)

    async def get_enforcement(self, enforcement_id: int) -> dict[str, Any]:
        async with self.store.read() as conn:
            row = (
                await conn.execute(_enforcement_query().where(enforcements.c.id == enforcement_id))
            ).first()
        if row is None:
            raise NotFound(f"enforcement {enforcement_id} not found")
        return enforcement_record(row)

    async def _page(
        self, query: Any, table: Any, where: list[Any], order: Any, page: int, per_page: int
    ) -> list[Row[Any]]:
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
        async with self.store.read(offload=True) as conn:
            return list(
                (
                    await conn.execute(
                        query.where(*where)
                        .order_by(order.desc())
                        .limit(per_page)
                        .offset((page - 1) * per_page)
                    )
                ).all()
            )


def _new(rule: Row[Any], event: Row[Any]) -> dict[str, Any]:
    """The columns an enforcement takes from its rule and event when it is made."""
    return {
        "rule_id": rule.id,
        "rule_ref": rule.ref,
        "trigger_ref": event.trigger_ref,
        "event_id": event.id,
        "conditions": rule.conditions,
        "created": now_utc(),
    }


def _with_payload(row: Row[Any], payload: Any) -> dict[str, Any]:
    return {**row._mapping, "event_payload": payload}


def _equal(*filters: tuple[Any, Any]) -> list[Any]:
    """``column == value`` for each filter given a value (a list's optional query filters)."""
    return [column == value for column, value in filters if value is not None]
