"""REST endpoints of the event-driven half, as Attune's (``crates/api/src/routes/{triggers,
rules,events,webhooks}.rs``): triggers and their webhooks, rules, events, enforcements, and the
public ``POST /api/v1/webhooks/{key}``."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel

from engine.api import schemas as s
from engine.api.automation_views import (
    accepted_view,
    enforcement_view,
    event_view,
    rule_view,
    trigger_view,
)
from engine.api.http import PAGING, Call, QueryParam, RouteSpec, page_of, paged
from engine.api.routes import requester
from engine.auth import ROLES
from engine.automation.models import RuleSpec, RuleUpdate, TriggerSpec, TriggerUpdate
from engine.errors import InvalidRequest, PayloadTooLarge

#: Body fields of Attune's ``WebhookReceiverRequest``.
_WEBHOOK_FIELDS = {"payload", "headers", "source_ip", "user_agent"}


class Deleted(BaseModel):
    """Attune's ``SuccessResponse``."""

    success: bool
    message: str


def _flag(call: Call, name: str) -> bool | None:
    raw = call.request.query.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise InvalidRequest(f"query parameter '{name}' must be true or false")


def _text(call: Call, name: str) -> str | None:
    return call.request.query.get(name) or None


def _id(call: Call, *names: str) -> int | None:
    return call.query_int(names[0], 0, *names[1:]) or None


# -- triggers -------------------------------------------------------------------------------


def _manages_triggers(call: Call) -> bool:
    """Whether the caller may see webhook keys (credentials): the roles the trigger routes
    that change a trigger let in (operator and admin); a viewer gets ``webhook_key: null``."""
    return ROLES.index(call.caller.role) <= ROLES.index("operator")


async def list_triggers(call: Call) -> Any:
    items = await call.runtime.automation.list_triggers(
        pack_ref=_text(call, "pack_ref"),
        enabled=_flag(call, "enabled"),
        reveal_keys=_manages_triggers(call),
    )
    return page_of([trigger_view(t) for t in items], *call.paging())


async def list_enabled_triggers(call: Call) -> Any:
    items = await call.runtime.automation.list_triggers(
        enabled=True, reveal_keys=_manages_triggers(call)
    )
    return page_of([trigger_view(t) for t in items], *call.paging())


async def list_triggers_by_pack(call: Call) -> Any:
    pack = await call.runtime.catalog.pack(call.path_param("ref"))
    items = await call.runtime.automation.list_triggers(
        pack_ref=pack.ref, reveal_keys=_manages_triggers(call)
    )
    return page_of([trigger_view(t) for t in items], *call.paging())


async def create_trigger(call: Call) -> Any:
    return {"data": trigger_view(await call.runtime.automation.create_trigger(call.body))}


async def get_trigger(call: Call) -> Any:
    ref = call.path_param("ref")
    trigger = await call.runtime.automation.get_trigger(ref, reveal_key=_manages_triggers(call))
    return {"data": trigger_view(trigger)}


async def update_trigger(call: Call) -> Any:
    trigger = await call.runtime.automation.update_trigger(call.path_param("ref"), call.body)
    return {"data": trigger_view(trigger)}


async def delete_trigger(call: Call) -> Any:
    ref = call.path_param("ref")
    await call.runtime.automation.delete_trigger(ref)
    return {"success": True, "message": f"Trigger '{ref}' deleted successfully"}


async def enable_trigger(call: Call) -> Any:
    trigger = await call.runtime.automation.set_trigger(call.path_param("ref"), enabled=True)
    return {"data": trigger_view(trigger)}


async def disable_trigger(call: Call) -> Any:
    trigger = await call.runtime.automation.set_trigger(call.path_param("ref"), enabled=False)
    return {"data": trigger_view(trigger)}


def _webhook(action: str) -> Any:
    async def handler(call: Call) -> Any:
        trigger = await call.runtime.automation.webhook(call.path_param("ref"), action)
        return {"data": trigger_view(trigger)}

    handler.__name__ = f"webhook_{action}"
    return handler


async def receive_webhook(call: Call) -> Any:
    """Public: the key is the credential (and the HMAC signature when the trigger has one)."""
    limit = call.runtime.settings.webhook_max_bytes
    raw = await call.request.read()
    if len(raw) > limit:
        raise PayloadTooLarge(f"webhook body too large (limit {limit} bytes)")
    try:
        body = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or ("payload" not in body and set(body) - _WEBHOOK_FIELDS):
        raise InvalidRequest('the body must be {"payload": {...}}')
    headers = call.request.headers
    origin: dict[str, Any] = {}
    if isinstance(body.get("headers"), dict):
        origin["headers"] = body["headers"]
    address = headers.get("X-Forwarded-For") or headers.get("X-Real-IP") or call.request.remote
    if address:
        origin["source_ip"] = address.split(",")[0].strip()[:64]
    if headers.get("User-Agent"):
        origin["user_agent"] = headers["User-Agent"][:512]
    signature = headers.get("X-Webhook-Signature") or headers.get("X-Hub-Signature-256")
    accepted = await call.runtime.automation.receive_webhook(
        call.path_param("key"),
        raw,
        signature,
        body.get("payload", {}),
        origin,
        headers.get("X-Webhook-Timestamp"),
    )
    return {"data": accepted_view(accepted)}


# -- rules ----------------------------------------------------------------------------------


async def _may_run(call: Call, action_ref: str, verb: str) -> None:
    """A rule runs its action on its own: whoever writes it must be allowed to manage the
    action (refusals audited as ``verb``) and to run it."""
    who = requester(call)
    await call.runtime.gate.manage(who, action_ref, verb)
    call.runtime.gate.policy.check(who.role, "run", action_ref)


async def list_rules(call: Call) -> Any:
    rules = await call.runtime.automation.list_rules(
        _text(call, "trigger_ref"),
        action_ref=_text(call, "action_ref"),
        pack_ref=_text(call, "pack_ref"),
        enabled=_flag(call, "enabled"),
    )
    return page_of([rule_view(r) for r in rules], *call.paging())


async def list_enabled_rules(call: Call) -> Any:
    rules = await call.runtime.automation.list_rules(enabled=True)
    return page_of([rule_view(r) for r in rules], *call.paging())


async def list_rules_by_pack(call: Call) -> Any:
    pack = await call.runtime.catalog.pack(call.path_param("ref"))
    rules = await call.runtime.automation.list_rules(pack_ref=pack.ref)
    return page_of([rule_view(r) for r in rules], *call.paging())


async def list_rules_by_action(call: Call) -> Any:
    action = await call.runtime.catalog.get_action(call.path_param("ref"))
    rules = await call.runtime.automation.list_rules(action_ref=action.ref)
    return page_of([rule_view(r) for r in rules], *call.paging())


async def list_rules_by_trigger(call: Call) -> Any:
    trigger = await call.runtime.automation.get_trigger(call.path_param("ref"))
    rules = await call.runtime.automation.list_rules(trigger.ref)
    return page_of([rule_view(r) for r in rules], *call.paging())


async def create_rule(call: Call) -> Any:
    await _may_run(call, call.body.action_ref, "create_rule")
    return {"data": rule_view(await call.runtime.automation.create_rule(call.body))}


async def get_rule(call: Call) -> Any:
    return {"data": rule_view(await call.runtime.automation.get_rule(call.path_param("ref")))}


async def update_rule(call: Call) -> Any:
    """Attune's update: only the fields sent change."""
    automation = call.runtime.automation
    ref = call.path_param("ref")
    change: RuleUpdate = call.body
    if change.ref is not None and change.ref != ref:
        raise InvalidRequest(f"body ref '{change.ref}' differs from the URL's '{ref}'")
    current = await automation.get_rule(ref)
    spec = change.merged(rule_view(current))
    await _may_run(call, current.action_ref, "update_rule")
    await _may_run(call, spec.action_ref, "update_rule")
    return {"data": rule_view(await automation.update_rule(ref, spec))}


async def delete_rule(call: Call) -> Any:
    ref = call.path_param("ref")
    rule = await call.runtime.automation.get_rule(ref)
    await _may_run(call, rule.action_ref, "delete_rule")
    await call.runtime.automation.delete_rule(ref)
    return {"success": True, "message": f"Rule '{ref}' deleted successfully"}


async def enable_rule(call: Call) -> Any:
    rule = await call.runtime.automation.get_rule(call.path_param("ref"))
    await _may_run(call, rule.action_ref, "enable_rule")
    return {"data": rule_view(await call.runtime.automation.set_rule_enabled(rule.ref, True))}


async def disable_rule(call: Call) -> Any:
    rule = await call.runtime.automation.get_rule(call.path_param("ref"))
    await _may_run(call, rule.action_ref, "disable_rule")
    return {"data": rule_view(await call.runtime.automation.set_rule_enabled(rule.ref, False))}


# -- events and enforcements ------------------------------------------------------------------


async def list_events(call: Call) -> Any:
    page, per_page = call.paging()
    items, total = await call.runtime.automation.list_events(
        trigger_id=_id(call, "trigger"),
        trigger_ref=_text(call, "trigger_ref"),
        rule_id=_id(call, "rule"),
        rule_ref=_text(call, "rule_ref"),
        source=_text(call, "source"),
        since=call.query_time("since"),
        until=call.query_time("until"),
        page=page,
        per_page=per_page,
    )
    return paged([event_view(e) for e in items], page, per_page, total)


async def get_event(call: Call) -> Any:
    return {"data": event_view(await call.runtime.automation.get_event(call.int_path_param("id")))}


async def list_enforcements(call: Call) -> Any:
    page, per_page = call.paging()
    items, total = await call.runtime.automation.list_enforcements(
        rule_id=_id(call, "rule"),
        rule_ref=_text(call, "rule_ref"),
        trigger_ref=_text(call, "trigger_ref"),
        event_id=_id(call, "event", "event_id"),
        status=_text(call, "status"),
        since=call.query_time("since"),
        page=page,
        per_page=per_page,
    )
    return paged([enforcement_view(e) for e in items], page, per_page, total)


async def get_enforcement(call: Call) -> Any:
    enforcement = await call.runtime.automation.get_enforcement(call.int_path_param("id"))
    return {"data": enforcement_view(enforcement)}


_TIMES = (QueryParam("since", "string", "ISO 8601 time, inclusive"),)
_RULE_FILTERS = (
    QueryParam("trigger_ref", "string", "Only this trigger's rules"),
    QueryParam("action_ref", "string", "Only the rules that run this action"),
    QueryParam("pack_ref", "string", "Only this pack's rules"),
    QueryParam("enabled", "string", "true or false"),
    *PAGING,
)
T, R = ("triggers",), ("rules",)


def _lister(path: str, handler: Any, summary: str, model: Any, tags: tuple[str, ...]) -> RouteSpec:
    return RouteSpec(
        "GET",
        path,
        handler,
        summary,
        response=s.Page[model],
        errors=(400, 404),
        query=PAGING,
        tags=tags,
    )


def _operator(
    method: str,
    path: str,
    handler: Any,
    summary: str,
    model: Any,
    tags: tuple[str, ...],
    errors: tuple[int, ...] = (403, 404),
    body: Any = None,
    status: int = 200,
) -> RouteSpec:
    return RouteSpec(
        method,
        path,
        handler,
        summary,
        "operator",
        body=body,
        response=s.Single[model],
        status=status,
        errors=errors,
        tags=tags,
    )


def _deleter(path: str, handler: Any, summary: str, tags: tuple[str, ...]) -> RouteSpec:
    return RouteSpec(
        "DELETE",
        path,
        handler,
        summary,
        "operator",
        response=Deleted,
        errors=(403, 404, 409),
        tags=tags,
    )


AUTOMATION_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/triggers",
        list_triggers,
        "List triggers",
        response=s.Page[s.Trigger],
        errors=(400,),
        query=(
            QueryParam("pack_ref", "string", "Only this pack's triggers"),
            QueryParam("enabled", "string", "true or false"),
            *PAGING,
        ),
        tags=T,
    ),
    _lister(
        "/api/v1/triggers/enabled", list_enabled_triggers, "List enabled triggers", s.Trigger, T
    ),
    _lister(
        "/api/v1/packs/{ref}/triggers",
        list_triggers_by_pack,
        "List a pack's triggers",
        s.Trigger,
        T,
    ),
    _operator(
        "POST",
        "/api/v1/triggers",
        create_trigger,
        "Create a trigger (webhook, timer, or a rule-timer trigger)",
        s.Trigger,
        T,
        (400, 403, 404, 409),
        TriggerSpec,
        201,
    ),
    RouteSpec(
        "GET",
        "/api/v1/triggers/{ref}",
        get_trigger,
        "Get a trigger",
        response=s.Single[s.Trigger],
        errors=(404,),
        tags=T,
    ),
    _operator(
        "PUT",
        "/api/v1/triggers/{ref}",
        update_trigger,
        "Update a trigger (only the fields sent change)",
        s.Trigger,
        T,
        (400, 403, 404, 409),
        TriggerUpdate,
    ),
    _deleter("/api/v1/triggers/{ref}", delete_trigger, "Delete a trigger (it has no rules)", T),
    _operator(
        "POST", "/api/v1/triggers/{ref}/enable", enable_trigger, "Enable a trigger", s.Trigger, T
    ),
    _operator(
        "POST", "/api/v1/triggers/{ref}/disable", disable_trigger, "Disable a trigger", s.Trigger, T
    ),
    *[
        _operator(
            "POST",
            f"/api/v1/triggers/{{ref}}/webhooks/{a}",
            _webhook(a),
            f"Webhook of a trigger: {a}",
            s.Trigger,
            T,
            (400, 403, 404),
        )
        for a in ("enable", "disable", "regenerate")
    ],
    RouteSpec(
        "POST",
        "/api/v1/webhooks/{key}",
        receive_webhook,
        "Post an event to a trigger's webhook (no bearer token: the key is the secret)",
        "public",
        body=s.WebhookBody,
        response=s.Single[s.WebhookAccepted],
        errors=(400, 401, 404, 409, 413, 429),
        tags=("webhooks",),
        query=(
            QueryParam(
                "X-Webhook-Signature",
                "string",
                "sha256=<hex HMAC-SHA256 of the body>, when the trigger has a webhook secret "
                "(X-Hub-Signature-256 is read too); of '<timestamp>.<body>' with a timestamp",
                "header",
            ),
            QueryParam(
                "X-Webhook-Timestamp",
                "integer",
                "Unix seconds, signed with the body: refused outside ATTUNE_WEBHOOK_TOLERANCE_S "
                "of the server's clock, and refused again (409) when replayed",
                "header",
            ),
        ),
    ),
    RouteSpec(
        "GET",
        "/api/v1/rules",
        list_rules,
        "List rules",
        response=s.Page[s.Rule],
        errors=(400,),
        query=_RULE_FILTERS,
        tags=R,
    ),
    _lister("/api/v1/rules/enabled", list_enabled_rules, "List enabled rules", s.Rule, R),
    _lister("/api/v1/packs/{ref}/rules", list_rules_by_pack, "List a pack's rules", s.Rule, R),
    _lister(
        "/api/v1/actions/{ref}/rules",
        list_rules_by_action,
        "List the rules that run an action",
        s.Rule,
        R,
    ),
    _lister(
        "/api/v1/triggers/{ref}/rules", list_rules_by_trigger, "List a trigger's rules", s.Rule, R
    ),
    _operator(
        "POST",
        "/api/v1/rules",
        create_rule,
        "Create a rule",
        s.Rule,
        R,
        (400, 403, 404, 409, 422),
        RuleSpec,
        201,
    ),
    RouteSpec(
        "GET",
        "/api/v1/rules/{ref}",
        get_rule,
        "Get a rule",
        response=s.Single[s.Rule],
        errors=(404,),
        tags=R,
    ),
    _operator(
        "PUT",
        "/api/v1/rules/{ref}",
        update_rule,
        "Update a rule (only the fields sent change)",
        s.Rule,
        R,
        (400, 403, 404, 422),
        RuleUpdate,
    ),
    _deleter("/api/v1/rules/{ref}", delete_rule, "Delete a rule (and its timer)", R),
    _operator("POST", "/api/v1/rules/{ref}/enable", enable_rule, "Enable a rule", s.Rule, R),
    _operator(
        "POST",
        "/api/v1/rules/{ref}/disable",
        disable_rule,
        "Disable a rule (its timer stops)",
        s.Rule,
        R,
    ),
    RouteSpec(
        "GET",
        "/api/v1/events",
        list_events,
        "List events, newest first",
        response=s.Page[s.Event],
        errors=(400,),
        tags=("events",),
        query=(
            QueryParam("trigger", "integer", "Only this trigger's events (its id)"),
            QueryParam("trigger_ref", "string", "Only this trigger's events"),
            QueryParam("rule", "integer", "Only this rule timer's events (its id)"),
            QueryParam("rule_ref", "string", "Only this rule timer's events"),
            QueryParam("source", "string", "Only events from webhook, timer or api"),
            *_TIMES,
            QueryParam("until", "string", "ISO 8601 time, exclusive"),
            *PAGING,
        ),
    ),
    RouteSpec(
        "GET",
        "/api/v1/events/{id}",
        get_event,
        "Get an event",
        response=s.Single[s.Event],
        errors=(400, 404),
        tags=("events",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/enforcements",
        list_enforcements,
        "List enforcements (a rule firing on an event), newest first",
        response=s.Page[s.Enforcement],
        errors=(400,),
        tags=("enforcements",),
        query=(
            QueryParam("rule", "integer", "Only this rule (its id)"),
            QueryParam("rule_ref", "string", "Only this rule"),
            QueryParam("trigger_ref", "string", "Only this trigger"),
            QueryParam("event", "integer", "Only this event (alias event_id)"),
            QueryParam("status", "string", "created, processed or disabled (or ours)"),
            *_TIMES,
            *PAGING,
        ),
    ),
    RouteSpec(
        "GET",
        "/api/v1/enforcements/{id}",
        get_enforcement,
        "Get an enforcement",
        response=s.Single[s.Enforcement],
        errors=(400, 404),
        tags=("enforcements",),
    ),
]
