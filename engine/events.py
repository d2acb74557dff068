"""The Automation service: triggers, webhooks, timers, events, rules and enforcements."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Row, delete, insert, select, update

from engine.audit import AuditEntry, AuditLog
from engine.automation import (
    RateLimiter,
    RuleSpec,
    TriggerSpec,
    enforcement_record,
    event_record,
    next_fire,
    rule_record,
    trigger_record,
)
from engine.catalog import Catalog
from engine.counts import Totals
from engine.crypto import SecretBox
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound, Unauthorized
from engine.packs import PackSpec, first_error
from engine.records import Executor
from engine.service import ExecutionService
from engine.storage import Store
from engine.storage.tables import enforcements, events, executions, now_utc, rules, triggers
from engine.templates import TemplateProblem, check_conditions, check_templates, matches, render

log = logging.getLogger("attune.rules")

#: Webhook keys: a prefix and 32 random bytes.
WEBHOOK_PREFIX = "wh_"
MAX_PER_PAGE = 100
#: An enforcement still ``creating`` after this long was interrupted; a later pass finishes it.
ENFORCEMENT_STALE_S = 30.0


class _Busy(Exception):
    """Another pass is creating this enforcement right now."""


class Automation:
    def __init__(
        self,
        store: Store,
        service: ExecutionService,
        catalog: Catalog,
        secrets_box: SecretBox,
        audit: AuditLog,
        *,
        webhook_rate_per_s: float = 10.0,
        webhook_burst: int = 20,
    ) -> None:
        self.store = store
        self.totals = Totals(store)
        self.service = service
        self.catalog = catalog
        self.secrets = secrets_box
        self.audit = audit
        self.limiter = RateLimiter(webhook_rate_per_s, webhook_burst)
        self._background: set[asyncio.Task[Any]] = set()

    # -- packs ------------------------------------------------------------------------------

    async def register_pack(self, pack: PackSpec) -> list[str]:
        """Create or update a pack's triggers and rules; an operator's enable/disable and a
        trigger's webhook key survive. Returns the problems (one per file at fault)."""
        problems: list[str] = []
        for kind, items in (("trigger", pack.triggers), ("rule", pack.rules)):
            for raw in items:
                data = dict(raw)
                source = data.pop("_source", pack.ref)
                webhook = bool(data.pop("webhook", False))
                if kind == "rule":
                    action = data.pop("action", None)
                    if isinstance(action, dict):  # StackStorm style: action: {ref, parameters}
                        data.setdefault("action_ref", action.get("ref"))
                        data.setdefault("action_params", action.get("parameters") or {})
                    trigger = data.pop("trigger", None)
                    if isinstance(trigger, dict):
                        data.setdefault("trigger_ref", trigger.get("ref") or trigger.get("type"))
                try:
                    if kind == "trigger":
                        await self._upsert_trigger(TriggerSpec.model_validate(data), webhook)
                    else:
                        await self._upsert_rule(RuleSpec.model_validate(data))
                except ValidationError as exc:
                    problems.append(f"{source}: {first_error(exc)}")
                except EngineError as exc:
                    problems.append(f"{source}: {exc.message}")
        return problems

    async def _upsert_trigger(self, spec: TriggerSpec, webhook: bool) -> None:
        try:
            current = await self.get_trigger(spec.ref)
        except NotFound:
            await self.create_trigger(spec, from_pack=True)
            if webhook:
                await self.webhook(spec.ref, "enable")
            return
        await self.update_trigger(spec.ref, spec.model_copy(update={"enabled": current["enabled"]}))

    async def _upsert_rule(self, spec: RuleSpec) -> None:
        try:
            current = await self.get_rule(spec.ref)
        except NotFound:
            await self.create_rule(spec, from_pack=True)
            return
        await self.update_rule(spec.ref, spec.model_copy(update={"enabled": current["enabled"]}))

    # -- triggers ---------------------------------------------------------------------------

    async def create_trigger(self, spec: TriggerSpec, *, from_pack: bool = False) -> dict[str, Any]:
        now = now_utc()
        values = self._trigger_values(spec, now) | {"from_pack": from_pack, "created": now}
        async with self.store.write() as conn:
            if (
                await conn.execute(select(triggers.c.id).where(triggers.c.ref == spec.ref))
            ).first():
                raise Conflict(f"trigger '{spec.ref}' already exists")
            await conn.execute(insert(triggers).values(**values))
        return await self.get_trigger(spec.ref)

    def _trigger_values(self, spec: TriggerSpec, now: datetime) -> dict[str, Any]:
        return {
            **_named(spec),
            "type": spec.type,
            "parameters": spec.parameters,
            "enabled": spec.enabled,
            "webhook_secret": self.secrets.seal({"s": spec.webhook_secret})
            if spec.webhook_secret
            else None,
            "next_fire_at": next_fire(spec.type, spec.parameters, now)
            if spec.type != "webhook"
            else None,
            "updated": now,
        }

    async def update_trigger(self, ref: str, spec: TriggerSpec) -> dict[str, Any]:
        if spec.ref != ref:
            raise InvalidRequest(f"body ref '{spec.ref}' differs from the URL's '{ref}'")
        async with self.store.write() as conn:
            result = await conn.execute(
                update(triggers)
                .where(triggers.c.ref == ref)
                .values(**self._trigger_values(spec, now_utc()))
            )
        if not result.rowcount:
            raise NotFound(f"trigger '{ref}' not found")
        return await self.get_trigger(ref)

    async def delete_trigger(self, ref: str) -> None:
        async with self.store.write() as conn:
            if (await conn.execute(select(rules.c.ref).where(rules.c.trigger_ref == ref))).first():
                raise Conflict(f"trigger '{ref}' still has rules; delete them first")
            result = await conn.execute(delete(triggers).where(triggers.c.ref == ref))
        if not result.rowcount:
            raise NotFound(f"trigger '{ref}' not found")

    async def _trigger_row(self, ref: str) -> Row[Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(select(triggers).where(triggers.c.ref == ref))).first()
        if row is None:
            raise NotFound(f"trigger '{ref}' not found")
        return row

    async def get_trigger(self, ref: str) -> dict[str, Any]:
        return trigger_record(await self._trigger_row(ref))

    async def list_triggers(self) -> list[dict[str, Any]]:
        async with self.store.read() as conn:
            rows = (await conn.execute(select(triggers).order_by(triggers.c.ref))).all()
        return [trigger_record(r) for r in rows]

    async def set_trigger(self, ref: str, **values: Any) -> dict[str, Any]:
        async with self.store.write() as conn:
            result = await conn.execute(
                update(triggers).where(triggers.c.ref == ref).values(updated=now_utc(), **values)
            )
        if not result.rowcount:
            raise NotFound(f"trigger '{ref}' not found")
        return await self.get_trigger(ref)

    async def webhook(self, ref: str, action: str) -> dict[str, Any]:
        """``enable`` (a key is made if there is none), ``disable`` or ``regenerate``."""
        row = await self._trigger_row(ref)
        if row.type != "webhook":
            raise InvalidRequest(f"trigger '{ref}' is a {row.type} timer; it has no webhook")
        if action == "disable":
            return await self.set_trigger(ref, webhook_enabled=False)
        key = row.webhook_key
        if action == "regenerate" or key is None:
            key = WEBHOOK_PREFIX + secrets.token_urlsafe(32)
        return await self.set_trigger(ref, webhook_enabled=True, webhook_key=key)

    # -- events -----------------------------------------------------------------------------

    async def receive_webhook(
        self, key: str, body: bytes, signature: str | None, payload: Any
    ) -> dict[str, Any]:
        """Check a webhook call, record its event, and process the rules in the background."""
        async with self.store.read() as conn:
            row = (
                await conn.execute(select(triggers).where(triggers.c.webhook_key == key))
            ).first()
        if row is None:
            raise NotFound("unknown webhook key")
        if not row.webhook_enabled or not row.enabled:
            raise InvalidRequest(f"the webhook of trigger '{row.ref}' is disabled")
        self.limiter.take(key)
        if row.webhook_secret is not None:
            secret = str(self.secrets.open(row.webhook_secret)["s"]).encode()
            expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
            given = (signature or "").removeprefix("sha256=").strip()
            if not given or not hmac.compare_digest(expected, given):
                raise Unauthorized(
                    "missing or bad X-Webhook-Signature (sha256=<hex HMAC-SHA256 of the body>)"
                )
        event = await self.record_event(row.ref, payload, "webhook")
        self.process_soon(event["id"])
        return {
            "event_id": event["id"],
            "trigger_ref": row.ref,
            "received_at": event["received_at"],
        }

    async def record_event(self, trigger_ref: str, payload: Any, source: str) -> dict[str, Any]:
        async with self.store.write() as conn:
            row = (
                await conn.execute(
                    insert(events)
                    .values(
                        trigger_ref=trigger_ref,
                        payload=payload,
                        source=source,
                        received_at=now_utc(),
                    )
                    .returning(*events.c)
                )
            ).one()
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

    async def process_event(self, event_id: int) -> list[dict[str, Any]]:
        """Fire every enabled rule of the event's trigger whose conditions match, once each."""
        async with self.store.read() as conn:
            event = (await conn.execute(select(events).where(events.c.id == event_id))).first()
            if event is None:
                raise NotFound(f"event {event_id} not found")
            trigger = (
                await conn.execute(select(triggers).where(triggers.c.ref == event.trigger_ref))
            ).first()
            candidates = (
                await conn.execute(
                    select(rules)
                    .where(rules.c.trigger_ref == event.trigger_ref, rules.c.enabled.is_(True))
                    .order_by(rules.c.id)
                )
            ).all()
        done = []
        busy = False
        if trigger is not None and trigger.enabled:
            for rule in candidates:
                try:
                    enforcement = await self._enforce(rule, event)
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

    async def _enforce(self, rule: Row[Any], event: Row[Any]) -> dict[str, Any] | None:
        context = {
            "event": {"id": event.id, "trigger": event.trigger_ref, "payload": event.payload},
            "rule": {"ref": rule.ref},
        }
        async with self.store.read() as conn:
            existing = (
                await conn.execute(
                    select(enforcements).where(
                        enforcements.c.rule_ref == rule.ref, enforcements.c.event_id == event.id
                    )
                )
            ).first()
        if existing is not None and existing.status != "creating":
            return enforcement_record(existing)  # done on an earlier pass
        if existing is not None and not await self._take_over(existing):
            raise _Busy  # another pass is creating it right now
        try:
            if not matches(rule.conditions, context):
                return None
            params = render(rule.action_params, context)
        except TemplateProblem as exc:
            return await self._settle_enforcement(
                rule, event, existing, "failed", None, exc.message
            )
        if existing is None:
            try:
                async with self.store.write() as conn:
                    existing = (
                        await conn.execute(
                            insert(enforcements)
                            .values(
                                rule_ref=rule.ref,
                                trigger_ref=event.trigger_ref,
                                event_id=event.id,
                                status="creating",
                                config=None,
                                created=now_utc(),
                            )
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
            return await self._settle_enforcement(rule, event, existing, "scheduled", made.id, None)
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
            return await self._settle_enforcement(
                rule, event, existing, "failed", None, exc.message
            )
        return await self._settle_enforcement(
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

    async def _settle_enforcement(
        self,
        rule: Row[Any],
        event: Row[Any],
        existing: Row[Any] | None,
        status: str,
        execution_id: int | None,
        error: str | None,
        config: Any = None,
    ) -> dict[str, Any]:
        values = {"status": status, "execution_id": execution_id, "error": error, "config": config}
        async with self.store.write() as conn:
            if existing is None:  # a unique (rule, event) key: a racing pass gets Conflict
                row = (
                    await conn.execute(
                        insert(enforcements)
                        .values(
                            rule_ref=rule.ref,
                            trigger_ref=event.trigger_ref,
                            event_id=event.id,
                            created=now_utc(),
                            **values,
                        )
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
        return enforcement_record(row)

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
        for event_id in ids:
            await self.process_event(event_id)
        return len(ids)

    # -- timers -----------------------------------------------------------------------------

    async def fire_due_timers(self) -> int:
        """Fire every timer that is due; each tick once, whatever the number of processes."""
        now = now_utc()
        async with self.store.read() as conn:
            due = (
                await conn.execute(
                    select(triggers).where(
                        triggers.c.type != "webhook",
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
            async with self.store.write() as conn:
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
            event = await self.record_event(
                trigger.ref,
                {"scheduled_at": trigger.next_fire_at.isoformat(), "fired_at": now.isoformat()},
                "timer",
            )
            self.process_soon(event["id"])
            fired += 1
        return fired

    # -- rules ------------------------------------------------------------------------------

    async def _check_rule(self, spec: RuleSpec) -> None:
        await self._trigger_row(spec.trigger_ref)
        await self.catalog.get_action(spec.action_ref)
        check_conditions(spec.conditions)
        check_templates(spec.action_params)

    def _rule_values(self, spec: RuleSpec) -> dict[str, Any]:
        return {
            **_named(spec),
            "trigger_ref": spec.trigger_ref,
            "action_ref": spec.action_ref,
            "conditions": spec.conditions,
            "action_params": spec.action_params,
            "enabled": spec.enabled,
            "chat_channel": spec.chat_channel,
            "callback_url": spec.callback_url,
            "updated": now_utc(),
        }

    async def create_rule(self, spec: RuleSpec, *, from_pack: bool = False) -> dict[str, Any]:
        await self._check_rule(spec)
        async with self.store.write() as conn:
            if (await conn.execute(select(rules.c.id).where(rules.c.ref == spec.ref))).first():
                raise Conflict(f"rule '{spec.ref}' already exists")
            await conn.execute(
                insert(rules).values(
                    **self._rule_values(spec), from_pack=from_pack, created=now_utc()
                )
            )
        return await self.get_rule(spec.ref)

    async def update_rule(self, ref: str, spec: RuleSpec) -> dict[str, Any]:
        if spec.ref != ref:
            raise InvalidRequest(f"body ref '{spec.ref}' differs from the URL's '{ref}'")
        await self._check_rule(spec)
        async with self.store.write() as conn:
            result = await conn.execute(
                update(rules).where(rules.c.ref == ref).values(**self._rule_values(spec))
            )
        if not result.rowcount:
            raise NotFound(f"rule '{ref}' not found")
        return await self.get_rule(ref)

    async def delete_rule(self, ref: str) -> None:
        async with self.store.write() as conn:
            result = await conn.execute(delete(rules).where(rules.c.ref == ref))
        if not result.rowcount:
            raise NotFound(f"rule '{ref}' not found")

    async def get_rule(self, ref: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(select(rules).where(rules.c.ref == ref))).first()
        if row is None:
            raise NotFound(f"rule '{ref}' not found")
        return rule_record(row)

    async def list_rules(self, trigger_ref: str | None = None) -> list[dict[str, Any]]:
        query = select(rules).order_by(rules.c.ref)
        if trigger_ref:
            query = query.where(rules.c.trigger_ref == trigger_ref)
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [rule_record(r) for r in rows]

    async def set_rule_enabled(self, ref: str, enabled: bool) -> dict[str, Any]:
        async with self.store.write() as conn:
            result = await conn.execute(
                update(rules).where(rules.c.ref == ref).values(enabled=enabled, updated=now_utc())
            )
        if not result.rowcount:
            raise NotFound(f"rule '{ref}' not found")
        return await self.get_rule(ref)

    # -- listings ---------------------------------------------------------------------------

    async def list_events(
        self,
        *,
        trigger_ref: str | None,
        since: datetime | None,
        until: datetime | None,
        page: int,
        per_page: int,
    ) -> tuple[list[dict[str, Any]], int]:
        where = []
        if trigger_ref:
            where.append(events.c.trigger_ref == trigger_ref)
        if since is not None:
            where.append(events.c.received_at >= since)
        if until is not None:
            where.append(events.c.received_at < until)
        return await self._page(events, where, events.c.id, event_record, page, per_page)

    async def get_event(self, event_id: int) -> dict[str, Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(select(events).where(events.c.id == event_id))).first()
        if row is None:
            raise NotFound(f"event {event_id} not found")
        return event_record(row)

    async def list_enforcements(
        self,
        *,
        rule_ref: str | None,
        trigger_ref: str | None,
        event_id: int | None,
        since: datetime | None,
        page: int,
        per_page: int,
    ) -> tuple[list[dict[str, Any]], int]:
        where = []
        if rule_ref:
            where.append(enforcements.c.rule_ref == rule_ref)
        if trigger_ref:
            where.append(enforcements.c.trigger_ref == trigger_ref)
        if event_id is not None:
            where.append(enforcements.c.event_id == event_id)
        if since is not None:
            where.append(enforcements.c.created >= since)
        return await self._page(
            enforcements, where, enforcements.c.id, enforcement_record, page, per_page
        )

    async def get_enforcement(self, enforcement_id: int) -> dict[str, Any]:
        async with self.store.read() as conn:
            row = (
                await conn.execute(select(enforcements).where(enforcements.c.id == enforcement_id))
            ).first()
        if row is None:
            raise NotFound(f"enforcement {enforcement_id} not found")
        return enforcement_record(row)

    async def _page(
        self, table: Any, where: list[Any], order: Any, shape: Any, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
        async with self.store.read(offload=True) as conn:
            rows = (
                await conn.execute(
                    select(table)
                    .where(*where)
                    .order_by(order.desc())
                    .limit(per_page)
                    .offset((page - 1) * per_page)
                )
            ).all()
        return [shape(r) for r in rows], await self.totals.count(table, where)

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)


def _named(spec: TriggerSpec | RuleSpec) -> dict[str, Any]:
    """The columns a trigger and a rule share: ref, pack, label and description."""
    pack, name = spec.ref.split(".", 1)
    return {
        "ref": spec.ref,
        "pack_ref": pack,
        "label": spec.label or name,
        "description": spec.description,
    }
