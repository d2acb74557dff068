"""What the automation aggregate is made of, as its callers see it: triggers, rules, events and
enforcements (typed, frozen), and the repository that keeps them (:class:`AutomationRepository`;
its SQL implementation is :mod:`engine.storage.automation`).

Records carry the stored values (JSON columns as Python objects, times as ``datetime``); what
the API shows of them (Attune's field names and values) is built in
:mod:`engine.api.automation_views`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.storage import Conn


@dataclass(frozen=True, slots=True)
class Trigger:
    id: int
    ref: str
    pack_ref: str
    #: The id of its pack, when the pack is registered (Attune's ``pack``).
    pack_id: int | None
    label: str
    description: str
    type: str
    parameters: dict[str, Any]
    param_schema: dict[str, Any] | None
    out_schema: dict[str, Any] | None
    enabled: bool
    from_pack: bool
    webhook_enabled: bool
    webhook_key_hash: str | None
    #: The webhook key sealed with the secret key, and the HMAC secret sealed (None: unsigned).
    webhook_key_sealed: str | None
    webhook_secret: str | None
    next_fire_at: datetime | None
    created: datetime
    updated: datetime
    #: The webhook key opened, for a caller who may manage the trigger (else None).
    webhook_key: str | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    id: int
    ref: str
    pack_ref: str
    label: str
    description: str
    trigger_ref: str
    action_ref: str
    conditions: Any
    #: Secret values are the redaction marker here; they are sealed in ``action_params_sealed``.
    action_params: dict[str, Any]
    action_params_sealed: str | None
    trigger_params: dict[str, Any] | None
    next_fire_at: datetime | None
    fire_count: int
    enabled: bool
    chat_channel: str | None
    callback_url: str | None
    from_pack: bool
    created: datetime
    updated: datetime
    #: Ids of its pack, action and trigger, its trigger's type and its action's parameter
    #: schema (None where they do not exist or were not read).
    pack_id: int | None = None
    action_id: int | None = None
    trigger_id: int | None = None
    trigger_type: str | None = None
    action_param_schema: dict[str, Any] | None = None
    #: Who is mentioned when a run it started fails: Slack user ids or logins (None: nobody).
    owners: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    trigger_ref: str
    trigger_id: int | None
    rule_id: int | None
    rule_ref: str | None
    config: dict[str, Any] | None
    payload: Any
    source: str
    received_at: datetime
    processed_at: datetime | None


@dataclass(frozen=True, slots=True)
class Enforcement:
    id: int
    rule_id: int | None
    rule_ref: str
    trigger_ref: str
    event_id: int
    #: ``creating``, ``scheduled`` or ``failed``.
    status: str
    conditions: Any
    resolved_at: datetime | None
    config: dict[str, Any] | None
    execution_id: int | None
    error: str | None
    created: datetime
    #: Its event's payload (the listings join it in; None where not read).
    event_payload: Any = None


@dataclass(frozen=True, slots=True)
class WebhookAccepted:
    """A webhook call taken: the event it recorded (its rules run in the background)."""

    event_id: int
    trigger_ref: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class TriggerFields:
    """What a trigger's create or update writes."""

    ref: str
    pack_ref: str
    label: str
    description: str
    type: str
    parameters: dict[str, Any]
    param_schema: dict[str, Any] | None
    out_schema: dict[str, Any] | None
    enabled: bool
    #: The HMAC secret, sealed.
    webhook_secret: str | None
    next_fire_at: datetime | None
    updated: datetime


@dataclass(frozen=True, slots=True)
class RuleFields:
    """What a rule's create or update writes."""

    ref: str
    pack_ref: str
    label: str
    description: str
    trigger_ref: str
    action_ref: str
    conditions: Any
    action_params: dict[str, Any]
    action_params_sealed: str | None
    trigger_params: dict[str, Any]
    enabled: bool
    chat_channel: str | None
    callback_url: str | None
    next_fire_at: datetime | None
    updated: datetime
    owners: list[str] | None = None


@dataclass(frozen=True, slots=True)
class NewEnforcement:
    """What an enforcement takes from its rule and event when it is made."""

    rule_id: int
    rule_ref: str
    trigger_ref: str
    event_id: int
    conditions: Any
    created: datetime


@dataclass(frozen=True, slots=True)
class Settlement:
    """How an enforcement ended: ``scheduled`` (with its execution) or ``failed``."""

    status: str
    execution_id: int | None
    error: str | None
    config: Any
    resolved_at: datetime


@dataclass(frozen=True, slots=True)
class RuleSecrets:
    """A rule's stored parameters beside its action's schema (to seal the clear secrets)."""

    id: int
    ref: str
    action_params: dict[str, Any] | None
    action_params_sealed: str | None
    updated: datetime
    param_schema: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class DueRule:
    """A rule timer whose tick is due."""

    id: int
    ref: str
    trigger_ref: str
    trigger_params: dict[str, Any] | None
    next_fire_at: datetime
    fire_count: int
    trigger_id: int
    trigger_type: str


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A key a template may read, as stored: ``value`` holds ``{"v": value}`` unless the key
    is ``encrypted`` (then ``sealed`` does)."""

    ref: str
    encrypted: bool
    value: Any
    sealed: str | None


@dataclass(frozen=True, slots=True)
class EventFilter:
    trigger_id: int | None = None
    trigger_ref: str | None = None
    rule_id: int | None = None
    rule_ref: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class EnforcementFilter:
    rule_id: int | None = None
    rule_ref: str | None = None
    trigger_ref: str | None = None
    event_id: int | None = None
    #: Our states to keep (None: any).
    statuses: tuple[str, ...] | None = None
    since: datetime | None = None


class TriggerRepository(Protocol):
    """Triggers (and whether a pack exists)."""

    async def pack_exists(self, pack_ref: str) -> bool: ...

    async def get_trigger(self, ref: str) -> Trigger | None: ...

    async def trigger_by_key_hash(self, key_hash: str) -> Trigger | None: ...

    async def list_triggers(
        self, *, pack_ref: str | None = None, enabled: bool | None = None
    ) -> list[Trigger]: ...

    async def insert_trigger(
        self, fields: TriggerFields, *, from_pack: bool, created: datetime
    ) -> bool:
        """False (nothing written) when a trigger of that ref exists."""
        ...

    async def update_trigger(
        self, trigger_id: int, fields: TriggerFields, *, unless_rules_of: str | None = None
    ) -> bool:
        """``unless_rules_of``: the trigger's ref when its type changes: False (nothing
        written) when rules use it."""
        ...

    async def set_trigger(
        self,
        ref: str,
        updated: datetime,
        *,
        enabled: bool | None = None,
        webhook_enabled: bool | None = None,
        webhook_key: tuple[str, str] | None = None,
    ) -> bool:
        """Change the fields given (``webhook_key``: its hash and the key sealed); False when
        there is no such trigger."""
        ...

    async def delete_trigger(self, ref: str) -> tuple[list[str], bool]:
        """``(up to 5 refs of rules that use it, deleted)``: nothing is deleted while rules
        use it."""
        ...


class RuleRepository(Protocol):
    """Rules (and a pack's stale rules and triggers)."""

    async def get_rule(self, ref: str) -> Rule | None:
        """The rule with its pack's, action's and trigger's ids and its action's schema."""
        ...

    async def owners_of_enforcement(self, enforcement_id: int) -> list[str]:
        """The owners of the rule that made an enforcement ([] when none are set or the
        rule is gone)."""
        ...

    async def list_rules(
        self,
        *,
        trigger_ref: str | None = None,
        action_ref: str | None = None,
        pack_ref: str | None = None,
        enabled: bool | None = None,
    ) -> list[Rule]: ...

    async def insert_rule(self, fields: RuleFields, *, from_pack: bool, created: datetime) -> bool:
        """False (nothing written) when a rule of that ref exists."""
        ...

    async def update_rule(self, fields: RuleFields) -> bool: ...

    async def set_rule_enabled(
        self,
        ref: str,
        enabled: bool,
        updated: datetime,
        *,
        move_timer: bool = False,
        next_fire_at: datetime | None = None,
    ) -> bool:
        """``move_timer``: set the timer's next tick to ``next_fire_at`` too."""
        ...

    async def delete_rule(self, ref: str) -> bool: ...

    async def rule_secrets(
        self, *, action_ref: str | None = None, pack_ref: str | None = None
    ) -> list[RuleSecrets]: ...

    async def store_rule_secrets(
        self, rule_id: int, updated: datetime, stored: dict[str, Any], sealed: str | None
    ) -> None:
        """Write a rule's parameters unless it changed since ``updated`` was read."""
        ...

    async def forget_stale(
        self, pack_ref: str, kept_rules: Sequence[str], kept_triggers: Sequence[str]
    ) -> None:
        """Remove the pack's rules and triggers (made by the pack) not in the kept lists; a
        trigger a remaining rule uses stays."""
        ...


class EventRepository(Protocol):
    """Events. Methods that take ``conn`` run inside the caller's write transaction (from
    ``store.write()``)."""

    async def trigger_id(self, conn: Conn, ref: str) -> int | None: ...

    async def insert_event(
        self,
        conn: Conn,
        trigger_ref: str,
        payload: Any,
        source: str,
        *,
        trigger_id: int | None = None,
        rule_id: int | None = None,
        rule_ref: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> Event: ...

    async def get_event(self, event_id: int) -> Event | None: ...

    async def list_events(
        self, where: EventFilter, page: int, per_page: int
    ) -> tuple[list[Event], int]: ...


class TemplateKeys(Protocol):
    """The keys a rule's templates read."""

    async def template_keys(self, refs: Sequence[str]) -> list[StoredKey]:
        """The named keys that exist, have not expired and are not owned by an identity."""
        ...


class EnforcementRepository(EventRepository, TemplateKeys, Protocol):
    """An event's processing: its rules, their enforcements, the execution each made."""

    async def event_for_processing(
        self, event_id: int
    ) -> tuple[Event, Trigger | None, list[Rule]] | None:
        """An event, its trigger, and the enabled rules it is for (its own rule, for a rule
        timer's tick; else every enabled rule of its trigger), by id; None: no such event."""
        ...

    async def mark_processed(self, event_id: int, at: datetime) -> None: ...

    async def unprocessed_events(self, received_before: datetime, limit: int) -> list[int]: ...

    async def find_enforcement(self, rule_ref: str, event_id: int) -> Enforcement | None: ...

    async def get_enforcement(self, enforcement_id: int) -> Enforcement | None: ...

    async def take_over_enforcement(self, enforcement: Enforcement, now: datetime) -> bool:
        """Restart the clock of an enforcement left ``creating``, if no other pass did: True
        if this one won."""
        ...

    async def insert_enforcement(
        self, new: NewEnforcement, settlement: Settlement | None = None
    ) -> Enforcement:
        """A new enforcement, ``creating`` unless settled; Conflict when the rule already has
        one for the event."""
        ...

    async def settle_enforcement(
        self, enforcement_id: int, settlement: Settlement
    ) -> Enforcement: ...

    async def execution_of_enforcement(self, enforcement_id: int) -> int | None:
        """The execution made for an enforcement, if there is one (a read of ``executions``)."""
        ...

    async def list_enforcements(
        self, where: EnforcementFilter, page: int, per_page: int
    ) -> tuple[list[Enforcement], int]: ...


class TimerRepository(EventRepository, Protocol):
    """Due timers, moved on by one process each tick (which records the tick's event in the
    same transaction)."""

    async def due_trigger_timers(self, types: Sequence[str], now: datetime) -> list[Trigger]: ...

    async def due_rule_timers(self, now: datetime, limit: int) -> list[DueRule]: ...

    async def move_trigger_timer(
        self, conn: Conn, trigger_id: int, scheduled: datetime, nxt: datetime | None
    ) -> bool:
        """Move a trigger timer on from ``scheduled``: False if another process did."""
        ...

    async def move_rule_timer(
        self, conn: Conn, rule_id: int, scheduled: datetime, nxt: datetime | None
    ) -> bool:
        """Move a rule timer on from ``scheduled`` (and count the tick): False if another
        process did."""
        ...


class AutomationRepository(
    TriggerRepository, RuleRepository, EnforcementRepository, TimerRepository, Protocol
):
    """The whole aggregate: what :class:`engine.automation.service.Automation` builds its parts
    on (:func:`engine.storage.automation.automation_repository`)."""
