"""The Automation service: the event-driven half (``Trigger -> Event -> Rule -> Enforcement ->
Execution``) behind one facade. Its parts: :mod:`~engine.automation.triggers` and
:mod:`~engine.automation.rules` (made over the API or from packs, here),
:mod:`~engine.automation.events` (recorded and listed), :mod:`~engine.automation.enforcement`
(an event's rules run), :mod:`~engine.automation.webhooks` and :mod:`~engine.automation.timers`
(what makes events). Storage: :mod:`engine.storage.automation`."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from engine.audit import AuditLog
from engine.automation.enforcement import Enforcer
from engine.automation.events import Events
from engine.automation.models import RuleSpec, TriggerSpec
from engine.automation.rules import Rules
from engine.automation.timers import Timers
from engine.automation.triggers import Triggers
from engine.automation.webhooks import RateLimiter, Webhooks
from engine.catalog import Catalog
from engine.crypto import SecretBox
from engine.errors import EngineError, NotFound
from engine.packs import PackSpec, first_error
from engine.service import ExecutionService
from engine.storage import Store
from engine.storage.automation import automation_repository
from engine.template_pool import TemplatePool

#: Trigger types of an Attune pack's ``triggers/*.yaml`` (whose ``parameters`` is a schema),
#: as ours.
_ATTUNE_TYPES = {
    "interval": "intervaltimer",
    "cron": "crontimer",
    "one_shot": "datetimetimer",
    "datetime": "datetimetimer",
    "date": "datetimetimer",
}


def _from_attune_yaml(data: dict[str, Any]) -> None:
    """An Attune pack's trigger file names its parameter schema ``parameters`` and its payload
    schema ``output``; ours names the timer settings ``parameters``."""
    params = data.get("parameters")
    schema_like = (
        isinstance(params, dict) and params and all(isinstance(v, dict) for v in params.values())
    )
    if "output" in data or schema_like:
        data["param_schema"] = data.pop("parameters", None) or None
        data["out_schema"] = data.pop("output", None)
        data["type"] = _ATTUNE_TYPES.get(str(data.get("type")), "webhook")


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
        webhook_tolerance_s: float = 300.0,
        template_workers: int = 2,
        template_timeout_s: float = 2.0,
    ) -> None:
        self.store = store
        self.service = service
        self.catalog = catalog
        self.secrets = secrets_box
        self.audit = audit
        self.repo = automation_repository(store)
        self.templates = TemplatePool(template_workers, template_timeout_s)
        self.triggers = Triggers(self.repo, secrets_box)
        self.rules = Rules(self.repo, self.triggers, catalog, secrets_box)
        self.events = Events(store, self.repo)
        self.enforcer = Enforcer(self.repo, service, secrets_box, self.templates)
        self.timers = Timers(store, self.repo, self.enforcer)
        self.limiter = RateLimiter(webhook_rate_per_s, webhook_burst)
        self.webhooks = Webhooks(
            self.repo, secrets_box, self.events, self.enforcer, self.limiter, webhook_tolerance_s
        )
        # The parts' entry points, as this facade's own.
        self.create_trigger = self.triggers.create
        self.update_trigger = self.triggers.update
        self.delete_trigger = self.triggers.delete
        self.get_trigger = self.triggers.get
        self.list_triggers = self.triggers.list
        self.set_trigger = self.triggers.set
        self.webhook = self.triggers.webhook
        self.create_rule = self.rules.create
        self.update_rule = self.rules.update
        self.delete_rule = self.rules.delete
        self.get_rule = self.rules.get
        self.list_rules = self.rules.list
        self.set_rule_enabled = self.rules.set_enabled
        self.seal_rule_secrets = self.rules.seal_secrets
        self.record_event = self.events.record
        self.list_events = self.events.list_events
        self.get_event = self.events.get_event
        self.list_enforcements = self.events.list_enforcements
        self.get_enforcement = self.events.get_enforcement
        self.process_event = self.enforcer.process_event
        self.process_soon = self.enforcer.process_soon
        self.finish_unprocessed = self.enforcer.finish_unprocessed
        self.drain = self.enforcer.drain
        self.receive_webhook = self.webhooks.receive
        self.fire_due_timers = self.timers.fire_due

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
                if kind == "trigger":
                    _from_attune_yaml(data)
                else:
                    action = data.pop("action", None)
                    if isinstance(action, dict):  # StackStorm style: action: {ref, parameters}
                        data.setdefault("action_ref", action.get("ref"))
                        data.setdefault("action_params", action.get("parameters") or {})
                    trigger = data.pop("trigger", None)
                    if isinstance(trigger, dict):
                        data.setdefault("trigger_ref", trigger.get("ref") or trigger.get("type"))
                    for key in ("trigger_ref", "action_ref"):  # a bare name: this pack's
                        if isinstance(data.get(key), str) and "." not in data[key]:
                            data[key] = f"{pack.ref}.{data[key]}"
                try:
                    if kind == "trigger":
                        await self._upsert_trigger(TriggerSpec.model_validate(data), webhook)
                    else:
                        await self._upsert_rule(RuleSpec.model_validate(data))
                except ValidationError as exc:
                    problems.append(f"{source}: {first_error(exc)}")
                except EngineError as exc:
                    problems.append(f"{source}: {exc.message}")
        if not problems:
            await self._forget_stale(pack)
        return problems

    async def _forget_stale(self, pack: PackSpec) -> None:
        """The pack's folder is the truth: its rules and triggers that a new version of it no
        longer has are removed (those made over the API stay; a trigger a remaining rule
        still uses stays too)."""
        kept_rules = [str(r["ref"]) for r in pack.rules]
        kept_triggers = [str(t["ref"]) for t in pack.triggers]
        await self.repo.forget_stale(pack.ref, kept_rules, kept_triggers)

    async def _upsert_trigger(self, spec: TriggerSpec, webhook: bool) -> None:
        try:
            current = await self.triggers.require(spec.ref)
        except NotFound:
            await self.triggers.create(spec, from_pack=True)
            if webhook:
                await self.triggers.webhook(spec.ref, "enable")
            return
        await self.triggers.save(
            current, spec.model_copy(update={"enabled": current.enabled}), None
        )

    async def _upsert_rule(self, spec: RuleSpec) -> None:
        try:
            current = await self.rules.get(spec.ref)
        except NotFound:
            await self.rules.create(spec, from_pack=True)
            return
        await self.rules.update(spec.ref, spec.model_copy(update={"enabled": current.enabled}))
