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
from dataclasses import replace
from datetime import timedelta
from typing import Any

from engine.audit import AuditEntry
from engine.automation.key_templates import Evaluator, InProcess, evaluate_rule
from engine.automation.records import (
    Enforcement,
    EnforcementRepository,
    Event,
    NewEnforcement,
    Rule,
    Settlement,
    Trigger,
)
from engine.automation.rule_secrets import opened
from engine.clock import now_utc
from engine.crypto import SecretBox
from engine.errors import Conflict, EngineError, NotFound
from engine.records import Executor
from engine.service import ExecutionService
from engine.templates import TemplateProblem

log = logging.getLogger(f"attune.{__name__}")

#: An enforcement still ``creating`` after this long was interrupted; a later pass finishes it.
ENFORCEMENT_STALE_S = 30.0
#: Events the sweep looks at per pass at most.
SWEEP_BATCH = 200


class _Busy(Exception):
    """Another pass is creating this enforcement right now."""


def _context(rule: Rule, event: Event, trigger: Trigger | None) -> dict[str, Any]:
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


def _new(rule: Rule, event: Event) -> NewEnforcement:
    """What an enforcement takes from its rule and event when it is made."""
    return NewEnforcement(
        rule_id=rule.id,
        rule_ref=rule.ref,
        trigger_ref=event.trigger_ref,
        event_id=event.id,
        conditions=rule.conditions,
        created=now_utc(),
    )


class Enforcer:
    def __init__(
        self,
        repo: EnforcementRepository,
        service: ExecutionService,
        secrets_box: SecretBox,
        evaluator: Evaluator | None = None,
    ) -> None:
        self.repo = repo
        self.service = service
        self.secrets = secrets_box
        #: Where conditions and templates run: a TemplatePool (worker processes with a time
        #: limit) in a server, this process otherwise.
        self.evaluator: Evaluator = evaluator if evaluator is not None else InProcess()
        self._background: set[asyncio.Task[Any]] = set()

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

    async def process_event(self, event_id: int) -> list[Enforcement]:
        """Fire every enabled rule of the event's trigger (or the event's own rule) whose
        conditions match, once each."""
        found = await self.repo.event_for_processing(event_id)
        if found is None:
            raise NotFound(f"event {event_id} not found")
        event, trigger, candidates = found
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
        await self.repo.mark_processed(event_id, now_utc())
        return done

    async def _enforce(
        self, rule: Rule, event: Event, trigger: Trigger | None
    ) -> Enforcement | None:
        context = _context(rule, event, trigger)
        existing = await self.repo.find_enforcement(rule.ref, event.id)
        if existing is not None and existing.status != "creating":
            return existing  # done on an earlier pass
        if existing is not None and not await self._take_over(existing):
            raise _Busy  # another pass is creating it right now
        # A condition or template that fails is the rule's problem, not a passing one: the
        # enforcement fails with the reason, once (the event is not looked at again).
        try:
            given, sealed = opened(rule.action_params, rule.action_params_sealed, self.secrets)
        except EngineError as exc:  # sealed with another secret key: a reason, not a retry
            return await self._settle(rule, event, existing, "failed", None, exc.message)
        try:
            verdict = await evaluate_rule(
                self.repo,
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
        kv_secrets = kv_secrets | sealed
        if existing is None:
            try:
                existing = await self.repo.insert_enforcement(_new(rule, event))
            except Conflict:
                return None  # another process is enforcing this rule for this event
        # An execution may exist from an interrupted earlier pass: never make a second one.
        made = await self.repo.execution_of_enforcement(existing.id)
        if made is not None:
            return await self._settle(rule, event, existing, "scheduled", made, None)
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
            rule, event, existing, "scheduled", record.id, None, config=record.config
        )

    async def _take_over(self, enforcement: Enforcement) -> bool:
        """Continue an enforcement left ``creating`` by an interrupted pass, if it is old
        enough to be abandoned; the conditional UPDATE lets exactly one pass win."""
        if enforcement.created > now_utc() - timedelta(seconds=ENFORCEMENT_STALE_S):
            return False
        return await self.repo.take_over_enforcement(enforcement, now_utc())

    async def _settle(
        self,
        rule: Rule,
        event: Event,
        existing: Enforcement | None,
        status: str,
        execution_id: int | None,
        error: str | None,
        config: Any = None,
    ) -> Enforcement:
        settlement = Settlement(
            status=status,
            execution_id=execution_id,
            error=error,
            config=config,
            resolved_at=now_utc(),
        )
        if existing is None:  # a unique (rule, event) key: a racing pass gets Conflict
            settled = await self.repo.insert_enforcement(_new(rule, event), settlement)
        else:
            settled = await self.repo.settle_enforcement(existing.id, settlement)
        if error:
            log.warning("rule %s on event %s failed: %s", rule.ref, event.id, error)
        return replace(settled, event_payload=event.payload)

    async def finish_unprocessed(self, older_than_s: float) -> int:
        """Sweep: process events whose processing was interrupted."""
        cutoff = now_utc() - timedelta(seconds=older_than_s)
        ids = await self.repo.unprocessed_events(cutoff, SWEEP_BATCH)
        for event_id in ids:  # one event that cannot be finished now does not hold up the rest
            try:
                await self.process_event(event_id)
            except EngineError as exc:
                log.warning("event %s not processed yet: %s", event_id, exc.message)
        return len(ids)

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)
