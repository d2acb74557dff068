"""The requests of the event-driven half (``Trigger -> Event -> Rule -> Enforcement ->
Execution``). They follow Attune's published types
(``CreateTriggerRequest``, ``UpdateTriggerRequest``, ``CreateRuleRequest``, ``UpdateRuleRequest``;
``TriggerResponse``, ``RuleResponse``, ``EventResponse``, ``EnforcementResponse``): every field of
Attune's requests is accepted and means what it means there, fields nobody defines are ignored,
and responses (:mod:`engine.api.automation_views`) carry Attune's fields with Attune's names
and values, ours beside them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from engine.automation.schedules import TRIGGER_TIMERS, trigger_timer_problem

#: ``pack.name`` (more dots allowed), or a bare name when the request names its ``pack_ref``.
REF_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_.-]+)?$"
PACK_PATTERN = r"^[A-Za-z0-9_.-]+$"
TriggerType = Literal[
    "webhook", "interval", "cron", "date", "intervaltimer", "crontimer", "datetimetimer"
]
#: Our enforcement states, and the status Attune's clients read for each (``created`` while it
#: is being made; ``processed`` once the rule's execution exists or the reason it failed).
ENFORCEMENT_STATUS = {"creating": "created", "scheduled": "processed", "failed": "processed"}
#: Attune's status filter values, as our states.
STATUS_FILTER = {
    "created": ("creating",),
    "processed": ("scheduled", "failed"),
    "disabled": (),
    "creating": ("creating",),
    "scheduled": ("scheduled",),
    "failed": ("failed",),
}


class _Tolerant(BaseModel):
    """Fields nobody defines are ignored, as Attune's serde ignores them."""

    model_config = ConfigDict(extra="ignore")


class _Named(_Tolerant):
    ref: str = Field(pattern=REF_PATTERN, max_length=256)
    #: The pack it belongs to; by default the part of ``ref`` before the first dot.
    pack_ref: str | None = Field(default=None, min_length=1, max_length=128, pattern=PACK_PATTERN)
    label: str | None = Field(default=None, max_length=256)
    description: str | None = Field(default=None, max_length=10_000)

    @model_validator(mode="after")
    def _pack_known(self) -> _Named:
        if "." not in self.ref and not self.pack_ref:
            raise ValueError(f"ref '{self.ref}' needs the form pack.name, or a pack_ref")
        return self

    def named(self) -> dict[str, Any]:
        """The columns a trigger and a rule share: ref, pack, label and description."""
        pack, _, name = self.ref.partition(".")
        return {
            "ref": self.ref,
            "pack_ref": self.pack_ref or pack,
            "label": self.label or name or self.ref,
            "description": self.description or "",
        }


class TriggerSpec(_Named):
    """``POST /api/v1/triggers``: Attune's ``CreateTriggerRequest`` and our own fields."""

    #: ``webhook`` (events from webhooks); ``interval``/``cron``/``date``: the trigger fires
    #: itself on ``parameters``; ``intervaltimer``/``crontimer``/``datetimetimer``: each rule
    #: on it fires on its own ``trigger_params`` (see :mod:`engine.automation.schedules`).
    type: TriggerType = "webhook"
    parameters: dict[str, Any] = Field(default_factory=dict)
    param_schema: dict[str, Any] | None = None
    out_schema: dict[str, Any] | None = None
    enabled: bool = True
    #: Webhook callers must sign bodies with it (``X-Webhook-Signature``).
    webhook_secret: str | None = Field(default=None, min_length=8, max_length=256)

    @model_validator(mode="after")
    def _timer(self) -> TriggerSpec:
        if self.type in TRIGGER_TIMERS:
            problem = trigger_timer_problem(self.type, self.parameters)
            if problem is not None:
                raise ValueError(problem)
        return self


_PatchOp = Literal["set", "clear"]
#: Our own update fields that a null clears (Attune's are ``Option``: null leaves them).
_CLEARED_BY_NULL = frozenset({"webhook_secret", "chat_channel", "callback_url", "owners"})
#: A rule owner: a Slack user id (``U...``, ``W...``) or a login.
OWNER_PATTERN = r"^[A-Za-z0-9._@+-]{1,128}$"
#: Owners a rule may name.
MAX_OWNERS = 20
Owners = list[Annotated[str, Field(pattern=OWNER_PATTERN)]] | None


class Patch(BaseModel):
    """Attune's ``{"op": "set", "value": ...}`` / ``{"op": "clear"}`` field patch."""

    model_config = ConfigDict(extra="forbid")

    op: _PatchOp
    value: Any = None


class TriggerUpdate(_Tolerant):
    """``PUT /api/v1/triggers/{ref}``: Attune's ``UpdateTriggerRequest`` (only the fields that
    change; ``description``, ``param_schema`` and ``out_schema`` as a value or a patch, cleared
    with ``{"op": "clear"}``; null or absent leaves a field as it is, as Attune's ``Option``) and
    our own fields (a null ``webhook_secret`` removes the secret)."""

    ref: str | None = Field(default=None, pattern=REF_PATTERN, max_length=256)
    label: str | None = Field(default=None, min_length=1, max_length=256)
    description: Patch | str | None = Field(default=None, union_mode="left_to_right")
    param_schema: Patch | dict[str, Any] | None = Field(default=None, union_mode="left_to_right")
    out_schema: Patch | dict[str, Any] | None = Field(default=None, union_mode="left_to_right")
    enabled: bool | None = None
    type: TriggerType | None = None
    parameters: dict[str, Any] | None = None
    webhook_secret: str | None = Field(default=None, min_length=8, max_length=256)

    def changes(self) -> dict[str, Any]:
        """The fields this request changes, patches unwrapped (a clear is None)."""
        out = {}
        for name in self.model_fields_set - {"ref"}:
            value = getattr(self, name)
            if isinstance(value, Patch):
                out[name] = value.value if value.op == "set" else None
            elif value is not None or name in _CLEARED_BY_NULL:
                out[name] = value
        return out


Conditions = list[dict[str, Any]] | dict[str, Any] | None


class RuleSpec(_Named):
    """``POST /api/v1/rules``: Attune's ``CreateRuleRequest`` and our own fields."""

    trigger_ref: str = Field(pattern=REF_PATTERN, max_length=256)
    action_ref: str = Field(pattern=REF_PATTERN, max_length=256)
    #: ``{}``/null, ``{"expression": "{{ ... }}"}``, a ``[{field, operator, value}]`` list, or
    #: a JSON-Logic object (see :mod:`engine.templates`).
    conditions: Conditions = None
    action_params: dict[str, Any] = Field(default_factory=dict)
    #: The rule's settings for its trigger: a rule timer's schedule (see
    #: :mod:`engine.automation.schedules`).
    trigger_params: dict[str, Any] = Field(default_factory=dict)
    #: Attune's execution permission sets: accepted; this server has roles instead.
    permission_set_refs: list[str] | None = None
    enabled: bool = True
    #: A Slack channel id (``C...``) that gets the card of each execution.
    chat_channel: str | None = Field(default=None, max_length=64, pattern=r"^[A-Z0-9]+$")
    callback_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    #: Mentioned in the card's thread when a run this rule started fails, times out or is
    #: abandoned: Slack user ids (``U...``) or logins.
    owners: Owners = Field(default=None, max_length=MAX_OWNERS)

    @field_validator("action_params", "trigger_params", mode="before")
    @classmethod
    def _null_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


class RuleUpdate(_Tolerant):
    """``PUT /api/v1/rules/{ref}``: Attune's ``UpdateRuleRequest`` (only the fields that change;
    null or absent leaves a field as it is, as Attune's ``Option``) and our own fields (null
    ``chat_channel``, ``callback_url`` or ``owners`` removes it)."""

    ref: str | None = Field(default=None, pattern=REF_PATTERN, max_length=256)
    label: str | None = Field(default=None, min_length=1, max_length=256)
    description: str | None = Field(default=None, max_length=10_000)
    trigger_ref: str | None = Field(default=None, pattern=REF_PATTERN, max_length=256)
    action_ref: str | None = Field(default=None, pattern=REF_PATTERN, max_length=256)
    conditions: Conditions = None
    action_params: dict[str, Any] | None = None
    trigger_params: dict[str, Any] | None = None
    permission_set_refs: list[str] | None = None
    enabled: bool | None = None
    chat_channel: str | None = Field(default=None, max_length=64, pattern=r"^[A-Z0-9]+$")
    callback_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    owners: Owners = Field(default=None, max_length=MAX_OWNERS)

    def merged(self, current: dict[str, Any]) -> RuleSpec:
        """The rule as it is after this update (fields sent replace the current ones)."""
        data = {k: current.get(k) for k in RuleSpec.model_fields if k in current}
        for name in self.model_fields_set - {"ref"}:
            value = getattr(self, name)
            if value is not None or name in _CLEARED_BY_NULL:
                data[name] = value
        data["ref"] = current["ref"]
        return RuleSpec.model_validate(data)
