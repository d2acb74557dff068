"""What the API shows of triggers, rules, events and enforcements: Attune's ``TriggerResponse``,
``RuleResponse``, ``EventResponse`` and ``EnforcementResponse`` fields with Attune's names and
values, ours beside them (:mod:`engine.api.schemas` describes them), built from the records of
:mod:`engine.automation.records`."""

from __future__ import annotations

from typing import Any

from engine.automation.models import ENFORCEMENT_STATUS
from engine.automation.records import Enforcement, Event, Rule, Trigger, WebhookAccepted
from engine.automation.rule_secrets import shown
from engine.params import secret_names


def trigger_view(trigger: Trigger) -> dict[str, Any]:
    """``webhook_key``: the key opened for a caller who may manage the trigger, else ``None``
    (the store holds it only hashed and sealed)."""
    return {
        "id": trigger.id,
        "ref": trigger.ref,
        "pack": trigger.pack_id,
        "pack_ref": trigger.pack_ref,
        "label": trigger.label,
        "description": trigger.description,
        "enabled": trigger.enabled,
        "is_adhoc": not trigger.from_pack,
        "param_schema": trigger.param_schema,
        "out_schema": trigger.out_schema,
        "webhook_enabled": trigger.webhook_enabled,
        "webhook_key": trigger.webhook_key,
        "created": trigger.created,
        "updated": trigger.updated,
        # ours
        "type": trigger.type,
        "parameters": trigger.parameters,
        "has_webhook_secret": trigger.webhook_secret is not None,
        "next_fire_at": trigger.next_fire_at,
    }


def rule_view(rule: Rule) -> dict[str, Any]:
    """Secret parameters show as the redaction marker (sealed ones, and clear ones the action
    marks secret now)."""
    return {
        "id": rule.id,
        "ref": rule.ref,
        "pack": rule.pack_id,
        "pack_ref": rule.pack_ref,
        "label": rule.label,
        "description": rule.description,
        "action": rule.action_id,
        "action_ref": rule.action_ref,
        "trigger": rule.trigger_id,
        "trigger_ref": rule.trigger_ref,
        "conditions": {} if rule.conditions is None else rule.conditions,
        "action_params": shown(rule.action_params, secret_names(rule.action_param_schema or {})),
        "trigger_params": rule.trigger_params or {},
        "permission_set_refs": None,
        "enabled": rule.enabled,
        "is_adhoc": not rule.from_pack,
        "owner_identity": None,
        "created": rule.created,
        "updated": rule.updated,
        # ours
        "chat_channel": rule.chat_channel,
        "callback_url": rule.callback_url,
        "next_fire_at": rule.next_fire_at,
        "owners": rule.owners,
    }


def event_view(event: Event) -> dict[str, Any]:
    return {
        "id": event.id,
        "trigger": event.trigger_id,
        "trigger_ref": event.trigger_ref,
        "config": event.config,
        "payload": event.payload,
        "has_payload": event.payload is not None,
        # Attune's ``source`` is a sensor's id; ours names what made the event.
        "source": event.source,
        "source_ref": event.source,
        "rule": event.rule_id,
        "rule_ref": event.rule_ref,
        "created": event.received_at,
        # ours
        "received_at": event.received_at,
        "processed_at": event.processed_at,
    }


def enforcement_view(enforcement: Enforcement) -> dict[str, Any]:
    """``payload``: its event's (``{}`` when that is not an object)."""
    payload = enforcement.event_payload
    conditions = enforcement.conditions
    return {
        "id": enforcement.id,
        "rule": enforcement.rule_id,
        "rule_ref": enforcement.rule_ref,
        "trigger_ref": enforcement.trigger_ref,
        "config": enforcement.config,
        "event": enforcement.event_id,
        "status": ENFORCEMENT_STATUS.get(enforcement.status, enforcement.status),
        "payload": payload if isinstance(payload, dict) else {},
        "condition": "all",
        "conditions": {} if conditions is None else conditions,
        "created": enforcement.created,
        "resolved_at": enforcement.resolved_at,
        # ours
        "event_id": enforcement.event_id,
        "outcome": enforcement.status,
        "execution_id": enforcement.execution_id,
        "error": enforcement.error,
    }


def accepted_view(accepted: WebhookAccepted) -> dict[str, Any]:
    """Attune's answer to a webhook call."""
    return {
        "event_id": accepted.event_id,
        "trigger_ref": accepted.trigger_ref,
        "received_at": accepted.received_at,
        "message": "Webhook received successfully",
    }
