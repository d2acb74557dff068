"""Rows of the automation tables to records, and the queries and column sets the
repository's parts share."""

from __future__ import annotations

import dataclasses
from typing import Any

from sqlalchemy import ColumnElement, RowMapping, Select, select

from engine.automation.records import (
    Enforcement,
    Event,
    Rule,
    RuleFields,
    Settlement,
    Trigger,
    TriggerFields,
)
from engine.storage.store import Store
from engine.storage.tables import actions, enforcements, events, packs, rules, triggers
from engine.storage.totals import Totals


class SqlBase:
    """What each part of the repository works with: the store, and the totals of listings."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.totals = Totals(store)


def to_trigger(m: RowMapping) -> Trigger:
    return Trigger(
        id=m["id"],
        ref=m["ref"],
        pack_ref=m["pack_ref"],
        pack_id=m.get("pack_id"),
        label=m["label"],
        description=m["description"],
        type=m["type"],
        parameters=m["parameters"],
        param_schema=m["param_schema"],
        out_schema=m["out_schema"],
        enabled=m["enabled"],
        from_pack=m["from_pack"],
        webhook_enabled=m["webhook_enabled"],
        webhook_key_hash=m["webhook_key_hash"],
        webhook_key_sealed=m["webhook_key_sealed"],
        webhook_secret=m["webhook_secret"],
        next_fire_at=m["next_fire_at"],
        created=m["created"],
        updated=m["updated"],
    )


def to_rule(m: RowMapping) -> Rule:
    return Rule(
        id=m["id"],
        ref=m["ref"],
        pack_ref=m["pack_ref"],
        label=m["label"],
        description=m["description"],
        trigger_ref=m["trigger_ref"],
        action_ref=m["action_ref"],
        conditions=m["conditions"],
        action_params=m["action_params"],
        action_params_sealed=m["action_params_sealed"],
        trigger_params=m["trigger_params"],
        next_fire_at=m["next_fire_at"],
        fire_count=m["fire_count"],
        enabled=m["enabled"],
        chat_channel=m["chat_channel"],
        callback_url=m["callback_url"],
        from_pack=m["from_pack"],
        created=m["created"],
        updated=m["updated"],
        pack_id=m.get("pack_id"),
        action_id=m.get("action_id"),
        trigger_id=m.get("trigger_id"),
        trigger_type=m.get("trigger_type"),
        action_param_schema=m.get("action_param_schema"),
        owners=m.get("owners"),
    )


def to_event(m: RowMapping) -> Event:
    return Event(
        id=m["id"],
        trigger_ref=m["trigger_ref"],
        trigger_id=m["trigger_id"],
        rule_id=m["rule_id"],
        rule_ref=m["rule_ref"],
        config=m["config"],
        payload=m["payload"],
        source=m["source"],
        received_at=m["received_at"],
        processed_at=m["processed_at"],
    )


def to_enforcement(m: RowMapping, payload: Any = None) -> Enforcement:
    return Enforcement(
        id=m["id"],
        rule_id=m["rule_id"],
        rule_ref=m["rule_ref"],
        trigger_ref=m["trigger_ref"],
        event_id=m["event_id"],
        status=m["status"],
        conditions=m["conditions"],
        resolved_at=m["resolved_at"],
        config=m["config"],
        execution_id=m["execution_id"],
        error=m["error"],
        created=m["created"],
        event_payload=m.get("event_payload", payload),
    )


# -- queries --------------------------------------------------------------------------------


def trigger_query() -> Select[Any]:
    return select(*triggers.c, packs.c.id.label("pack_id")).outerjoin(
        packs, packs.c.ref == triggers.c.pack_ref
    )


def rule_query() -> Select[Any]:
    return (
        select(
            *rules.c,
            packs.c.id.label("pack_id"),
            actions.c.id.label("action_id"),
            actions.c.param_schema.label("action_param_schema"),
            triggers.c.id.label("trigger_id"),
            triggers.c.type.label("trigger_type"),
        )
        .outerjoin(packs, packs.c.ref == rules.c.pack_ref)
        .outerjoin(actions, actions.c.ref == rules.c.action_ref)
        .outerjoin(triggers, triggers.c.ref == rules.c.trigger_ref)
    )


def enforcement_query() -> Select[Any]:
    return select(*enforcements.c, events.c.payload.label("event_payload")).outerjoin(
        events, events.c.id == enforcements.c.event_id
    )


def equal(*filters: tuple[Any, Any]) -> list[ColumnElement[bool]]:
    """``column == value`` for each filter given a value (a list's optional query filters)."""
    return [column == value for column, value in filters if value is not None]


def columns_of(record: TriggerFields | RuleFields | Settlement) -> dict[str, Any]:
    """A write record's fields as the columns of the same names (each field is one)."""
    return {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
