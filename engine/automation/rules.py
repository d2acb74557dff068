"""Rules: create (checked: they must be able to run), change, enable, delete and list them;
their secret action parameters sealed (:mod:`engine.automation.rule_secrets`)."""

from __future__ import annotations

import logging
from datetime import datetime

from engine.automation.models import RuleSpec
from engine.automation.records import Rule, RuleFields, RuleRepository
from engine.automation.rule_secrets import opened, split_secrets
from engine.automation.schedules import RULE_TIMERS, rule_schedule
from engine.automation.triggers import Triggers
from engine.catalog import Catalog
from engine.clock import now_utc
from engine.crypto import SecretBox
from engine.errors import Conflict, EngineError, InvalidParameters, InvalidRequest, NotFound
from engine.params import REDACTED, normalize_schema, secret_names, validate_parameters
from engine.templates import check_conditions, check_templates

log = logging.getLogger(f"attune.{__name__}")


class Rules:
    def __init__(
        self,
        repo: RuleRepository,
        triggers: Triggers,
        catalog: Catalog,
        secrets_box: SecretBox,
    ) -> None:
        self.repo = repo
        self.triggers = triggers
        self.catalog = catalog
        self.secrets = secrets_box

    async def _check(
        self, spec: RuleSpec, *, from_pack: bool
    ) -> tuple[datetime | None, frozenset[str]]:
        """Refuse a rule that cannot run (the message names the field); return its timer's
        first tick (if it has a timer and is enabled) and its action's secret parameters."""
        if not from_pack:
            await self.triggers.check_pack(spec.pack_ref)
        trigger = await self.triggers.require(spec.trigger_ref)
        action = await self.catalog.get_action(spec.action_ref)
        check_conditions(spec.conditions)
        check_templates(spec.action_params)
        schedule = rule_schedule(trigger.type, spec.trigger_params)
        if schedule is None and spec.trigger_params and trigger.param_schema:
            schema = normalize_schema(trigger.param_schema) | {"additionalProperties": True}
            try:
                validate_parameters(schema, spec.trigger_params)
            except InvalidParameters as exc:
                raise InvalidParameters(f"trigger_params: {exc.message}") from None
        if schedule is None or not spec.enabled:
            return None, action.secrets
        return schedule.next_after(now_utc()), action.secrets

    def _fields(
        self,
        spec: RuleSpec,
        next_fire_at: datetime | None,
        secret_params: frozenset[str],
        current: Rule | None = None,
    ) -> RuleFields:
        """The stored fields of a rule; its secret parameters sealed (see
        :mod:`engine.automation.rule_secrets`: a value sent as the marker keeps ``current``'s)."""
        before: dict[str, object] = {}
        sealed_before: frozenset[str] = frozenset()
        if current is not None:
            before, sealed_before = opened(
                current.action_params, current.action_params_sealed, self.secrets
            )
        action_params, sealed = split_secrets(
            spec.action_params, secret_params, self.secrets, before, sealed_before
        )
        named = spec.named()
        return RuleFields(
            ref=named["ref"],
            pack_ref=named["pack_ref"],
            label=named["label"],
            description=named["description"],
            trigger_ref=spec.trigger_ref,
            action_ref=spec.action_ref,
            conditions=spec.conditions,
            action_params=action_params,
            action_params_sealed=sealed,
            trigger_params=spec.trigger_params,
            enabled=spec.enabled,
            chat_channel=spec.chat_channel,
            callback_url=spec.callback_url,
            next_fire_at=next_fire_at,
            owners=spec.owners or None,
            updated=now_utc(),
        )

    async def create(self, spec: RuleSpec, *, from_pack: bool = False) -> Rule:
        first, secret_params = await self._check(spec, from_pack=from_pack)
        fields = self._fields(spec, first, secret_params)
        if not await self.repo.insert_rule(fields, from_pack=from_pack, created=now_utc()):
            raise Conflict(f"rule '{spec.ref}' already exists")
        return await self.get(spec.ref)

    async def update(self, ref: str, spec: RuleSpec) -> Rule:
        """Replace a rule (:meth:`RuleUpdate.merged` makes the whole rule of a partial update).
        Its timer keeps its phase unless its trigger, schedule or enabled state changes."""
        if spec.ref != ref:
            raise InvalidRequest(f"body ref '{spec.ref}' differs from the URL's '{ref}'")
        current = await self.repo.get_rule(ref)
        if current is None:
            raise NotFound(f"rule '{ref}' not found")
        first, secret_params = await self._check(spec, from_pack=current.from_pack)
        same_timer = (spec.trigger_ref, spec.trigger_params, spec.enabled) == (
            current.trigger_ref,
            current.trigger_params or {},
            current.enabled,
        )
        fields = self._fields(
            spec, current.next_fire_at if same_timer else first, secret_params, current
        )
        if not await self.repo.update_rule(fields):
            raise NotFound(f"rule '{ref}' not found")
        return await self.get(ref)

    async def delete(self, ref: str) -> None:
        """Delete a rule (and so its timer)."""
        if not await self.repo.delete_rule(ref):
            raise NotFound(f"rule '{ref}' not found")

    async def get(self, ref: str) -> Rule:
        rule = await self.repo.get_rule(ref)
        if rule is None:
            raise NotFound(f"rule '{ref}' not found")
        return rule

    async def owners_of_enforcement(self, enforcement_id: int) -> list[str]:
        """Who is told when a run this enforcement made fails: its rule's owners."""
        return await self.repo.owners_of_enforcement(enforcement_id)

    async def list(
        self,
        trigger_ref: str | None = None,
        *,
        action_ref: str | None = None,
        pack_ref: str | None = None,
        enabled: bool | None = None,
    ) -> list[Rule]:
        return await self.repo.list_rules(
            trigger_ref=trigger_ref, action_ref=action_ref, pack_ref=pack_ref, enabled=enabled
        )

    async def seal_secrets(
        self, action_ref: str | None = None, *, pack_ref: str | None = None
    ) -> int:
        """Seal the values of rules' parameters that their action marks secret and that are
        still in clear (rules saved before the parameter became secret, or before this
        server sealed them); ``action_ref``: only the rules that run it; ``pack_ref``: only
        the rules that run one of that pack's actions. Returns how many rules changed."""
        changed = 0
        for row in await self.repo.rule_secrets(action_ref=action_ref, pack_ref=pack_ref):
            names = secret_names(row.param_schema or {})
            params = row.action_params or {}
            if not any(k in names and v != REDACTED for k, v in params.items()):
                continue
            try:
                values, before = opened(params, row.action_params_sealed, self.secrets)
            except EngineError as exc:  # sealed with another secret key: left as it is
                log.warning("rule %s: secret parameters not sealed: %s", row.ref, exc.message)
                continue
            stored, sealed = split_secrets(values, names, self.secrets, None, before)
            await self.repo.store_rule_secrets(row.id, row.updated, stored, sealed)
            changed += 1
        return changed

    async def set_enabled(self, ref: str, enabled: bool) -> Rule:
        """Enable or disable a rule; a rule timer stops while it is disabled and starts again,
        counted from now, when it is enabled."""
        current = await self.get(ref)
        move_timer = current.trigger_type in RULE_TIMERS and enabled != current.enabled
        next_fire_at = None
        if move_timer:
            assert current.trigger_type is not None
            schedule = (
                rule_schedule(current.trigger_type, current.trigger_params) if enabled else None
            )
            next_fire_at = schedule.next_after(now_utc()) if schedule else None
        if not await self.repo.set_rule_enabled(
            ref, enabled, now_utc(), move_timer=move_timer, next_fire_at=next_fire_at
        ):
            raise NotFound(f"rule '{ref}' not found")
        return await self.get(ref)
