"""Triggers: create, change, delete and list them, and manage a trigger's webhook key
(enable, disable, regenerate; the calls themselves are :mod:`engine.automation.webhooks`)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from engine.automation.models import TriggerSpec, TriggerUpdate
from engine.automation.records import Trigger, TriggerFields, TriggerRepository
from engine.automation.schedules import TRIGGER_TIMERS, next_fire
from engine.automation.webhooks import (
    check_webhook_allowed,
    new_webhook_key,
    open_webhook_key,
    webhook_key_values,
)
from engine.clock import now_utc
from engine.crypto import SecretBox
from engine.errors import Conflict, InvalidRequest, NotFound


class Triggers:
    def __init__(self, repo: TriggerRepository, secrets_box: SecretBox) -> None:
        self.repo = repo
        self.secrets = secrets_box

    async def check_pack(self, pack_ref: str | None) -> None:
        """A pack a request names must exist (404), as Attune's; one taken from a ref need not."""
        if pack_ref is None or await self.repo.pack_exists(pack_ref):
            return
        raise NotFound(f"pack '{pack_ref}' not found")

    async def require(self, ref: str) -> Trigger:
        """The trigger (its webhook key not opened); NotFound when there is none."""
        trigger = await self.repo.get_trigger(ref)
        if trigger is None:
            raise NotFound(f"trigger '{ref}' not found")
        return trigger

    def _shown(self, trigger: Trigger, reveal_key: bool) -> Trigger:
        if not reveal_key:
            return trigger
        return replace(
            trigger, webhook_key=open_webhook_key(trigger.webhook_key_sealed, self.secrets)
        )

    async def get(self, ref: str, *, reveal_key: bool = False) -> Trigger:
        """``reveal_key``: open the webhook key (a credential: only for those who may manage
        the trigger); otherwise ``webhook_key`` is ``None``."""
        return self._shown(await self.require(ref), reveal_key)

    async def list(
        self,
        *,
        pack_ref: str | None = None,
        enabled: bool | None = None,
        reveal_keys: bool = False,
    ) -> list[Trigger]:
        found = await self.repo.list_triggers(pack_ref=pack_ref, enabled=enabled)
        return [self._shown(t, reveal_keys) for t in found]

    def _fields(
        self, spec: TriggerSpec, now: datetime, webhook_secret: str | None = None
    ) -> TriggerFields:
        """The stored fields of ``spec``; ``webhook_secret``: the sealed secret to keep when
        the spec sends none."""
        named = spec.named()
        return TriggerFields(
            ref=named["ref"],
            pack_ref=named["pack_ref"],
            label=named["label"],
            description=named["description"],
            type=spec.type,
            parameters=spec.parameters,
            param_schema=spec.param_schema,
            out_schema=spec.out_schema,
            enabled=spec.enabled,
            webhook_secret=self.secrets.seal({"s": spec.webhook_secret})
            if spec.webhook_secret
            else webhook_secret,
            next_fire_at=next_fire(spec.type, spec.parameters, now)
            if spec.type in TRIGGER_TIMERS
            else None,
            updated=now,
        )

    async def create(self, spec: TriggerSpec, *, from_pack: bool = False) -> Trigger:
        if not from_pack:
            await self.check_pack(spec.pack_ref)
        now = now_utc()
        if not await self.repo.insert_trigger(
            self._fields(spec, now), from_pack=from_pack, created=now
        ):
            raise Conflict(f"trigger '{spec.ref}' already exists")
        return await self.get(spec.ref, reveal_key=True)

    async def update(self, ref: str, change: TriggerUpdate) -> Trigger:
        """Change the fields ``change`` sends (Attune's update); the rest stay."""
        if change.ref is not None and change.ref != ref:
            raise InvalidRequest(f"body ref '{change.ref}' differs from the URL's '{ref}'")
        current = await self.require(ref)
        fields = change.changes()
        spec = TriggerSpec.model_validate(
            {
                "ref": current.ref,
                "pack_ref": current.pack_ref,
                "label": current.label,
                "description": current.description,
                "type": current.type,
                "parameters": current.parameters,
                "param_schema": current.param_schema,
                "out_schema": current.out_schema,
                "enabled": current.enabled,
                **{k: v for k, v in fields.items() if k != "webhook_secret"},
            }
        )
        # A webhook_secret sent replaces the secret (null removes it); absent keeps it.
        keep = current.webhook_secret
        if "webhook_secret" in fields:
            secret = fields["webhook_secret"]
            keep = self.secrets.seal({"s": secret}) if secret else None
        return await self.save(current, spec, keep)

    async def save(
        self, current: Trigger, spec: TriggerSpec, webhook_secret: str | None
    ) -> Trigger:
        """Write ``spec`` over ``current`` (``webhook_secret``: the sealed secret kept unless
        the spec sends one)."""
        fields = self._fields(spec, now_utc(), webhook_secret)
        if spec.type == current.type and spec.parameters == current.parameters:
            fields = replace(fields, next_fire_at=current.next_fire_at)  # stays in phase
        changes_type = spec.type != current.type
        if not await self.repo.update_trigger(
            current.id, fields, unless_rules_of=current.ref if changes_type else None
        ):
            raise Conflict(f"trigger '{current.ref}' has rules; delete them to change its type")
        return await self.get(current.ref, reveal_key=True)

    async def delete(self, ref: str) -> None:
        using, deleted = await self.repo.delete_trigger(ref)
        if using:
            raise Conflict(
                f"trigger '{ref}' still has rules ({', '.join(using)}); delete them first"
            )
        if not deleted:
            raise NotFound(f"trigger '{ref}' not found")

    async def set(
        self,
        ref: str,
        *,
        enabled: bool | None = None,
        webhook_enabled: bool | None = None,
        webhook_key: tuple[str, str] | None = None,
    ) -> Trigger:
        """Change the fields given; the answer shows the webhook key (changes are for managing
        roles)."""
        if not await self.repo.set_trigger(
            ref,
            now_utc(),
            enabled=enabled,
            webhook_enabled=webhook_enabled,
            webhook_key=webhook_key,
        ):
            raise NotFound(f"trigger '{ref}' not found")
        return await self.get(ref, reveal_key=True)

    async def webhook(self, ref: str, action: str) -> Trigger:
        """``enable`` (a key is made if there is none), ``disable`` or ``regenerate``."""
        current = await self.require(ref)
        check_webhook_allowed(ref, current.type)
        key: tuple[str, str] | None = None
        if action == "regenerate" or (action == "enable" and current.webhook_key_hash is None):
            stored = webhook_key_values(new_webhook_key(), self.secrets)
            key = (stored["webhook_key_hash"], stored["webhook_key_sealed"])
        return await self.set(ref, webhook_enabled=action != "disable", webhook_key=key)
