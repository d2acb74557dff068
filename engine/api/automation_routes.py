"""REST endpoints of the event-driven half: triggers and their webhooks, rules, events,
enforcements, and the public ``POST /api/v1/webhooks/{key}``."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from engine.api import schemas as s
from engine.api.http import Call, QueryParam, RouteSpec, page_of, paged
from engine.automation import RuleSpec, TriggerSpec
from engine.errors import EngineError, InvalidRequest


class PayloadTooLarge(EngineError):
    code = "PAYLOAD_TOO_LARGE"
    http_status = 413


# -- triggers -------------------------------------------------------------------------------


async def list_triggers(call: Call) -> Any:
    return page_of(await call.runtime.automation.list_triggers(), *call.paging())


async def create_trigger(call: Call) -> Any:
    return {"data": await call.runtime.automation.create_trigger(call.body)}


async def get_trigger(call: Call) -> Any:
    return {"data": await call.runtime.automation.get_trigger(call.path_param("ref"))}


async def update_trigger(call: Call) -> Any:
    return {"data": await call.runtime.automation.update_trigger(call.path_param("ref"), call.body)}


async def delete_trigger(call: Call) -> Any:
    await call.runtime.automation.delete_trigger(call.path_param("ref"))
    return web.Response(status=204)


async def enable_trigger(call: Call) -> Any:
    return {"data": await call.runtime.automation.set_trigger(call.path_param("ref"), enabled=True)}


async def disable_trigger(call: Call) -> Any:
    return {
        "data": await call.runtime.automation.set_trigger(call.path_param("ref"), enabled=False)
    }


def _webhook(action: str) -> Any:
    async def handler(call: Call) -> Any:
        return {"data": await call.runtime.automation.webhook(call.path_param("ref"), action)}

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
    if not isinstance(body, dict) or set(body) - {"payload"}:
        raise InvalidRequest('the body must be {"payload": {...}}')
    payload = body.get("payload", {})
    accepted = await call.runtime.automation.receive_webhook(
        call.path_param("key"), raw, call.request.headers.get("X-Webhook-Signature"), payload
    )
    return {"data": accepted}


# -- rules ----------------------------------------------------------------------------------


def _may_run(call: Call, action_ref: str) -> None:
    """A rule runs its action on its own: whoever writes it must be allowed to run it."""
    call.runtime.gate.policy.check(call.caller.role, "run", action_ref)


async def list_rules(call: Call) -> Any:
    rules = await call.runtime.automation.list_rules(call.request.query.get("trigger_ref"))
    return page_of(rules, *call.paging())


async def create_rule(call: Call) -> Any:
    _may_run(call, call.body.action_ref)
    return {"data": await call.runtime.automation.create_rule(call.body)}


async def get_rule(call: Call) -> Any:
    return {"data": await call.runtime.automation.get_rule(call.path_param("ref"))}


async def update_rule(call: Call) -> Any:
    _may_run(call, call.body.action_ref)
    return {"data": await call.runtime.automation.update_rule(call.path_param("ref"), call.body)}


async def delete_rule(call: Call) -> Any:
    await call.runtime.automation.delete_rule(call.path_param("ref"))
    return web.Response(status=204)


async def enable_rule(call: Call) -> Any:
    rule = await call.runtime.automation.get_rule(call.path_param("ref"))
    _may_run(call, rule["action_ref"])
    return {"data": await call.runtime.automation.set_rule_enabled(rule["ref"], True)}


async def disable_rule(call: Call) -> Any:
    return {"data": await call.runtime.automation.set_rule_enabled(call.path_param("ref"), False)}


# -- events and enforcements ------------------------------------------------------------------


async def list_events(call: Call) -> Any:
    page, per_page = call.paging()
    items, total = await call.runtime.automation.list_events(
        trigger_ref=call.request.query.get("trigger_ref") or None,
        since=call.query_time("since"),
        until=call.query_time("until"),
        page=page,
        per_page=per_page,
    )
    return paged(items, page, per_page, total)


async def get_event(call: Call) -> Any:
    return {"data": await call.runtime.automation.get_event(call.int_path_param("id"))}


async def list_enforcements(call: Call) -> Any:
    q = call.request.query
    page, per_page = call.paging()
    event_id = call.query_int("event_id", 0) or None
    items, total = await call.runtime.automation.list_enforcements(
        rule_ref=q.get("rule_ref") or None,
        trigger_ref=q.get("trigger_ref") or None,
        event_id=event_id,
        since=call.query_time("since"),
        page=page,
        per_page=per_page,
    )
    return paged(items, page, per_page, total)


async def get_enforcement(call: Call) -> Any:
    return {"data": await call.runtime.automation.get_enforcement(call.int_path_param("id"))}


_PAGING = (
    QueryParam("page", "integer", "Page number, from 1"),
    QueryParam("per_page", "integer", "Items per page, 1-100 (default 50; alias page_size)"),
)
_TIMES = (QueryParam("since", "string", "ISO 8601 time, inclusive"),)
T, R = ("triggers",), ("rules",)

AUTOMATION_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/triggers",
        list_triggers,
        "List triggers",
        response=s.Page[s.Trigger],
        tags=T,
    ),
    RouteSpec(
        "POST",
        "/api/v1/triggers",
        create_trigger,
        "Create a trigger (webhook or timer)",
        "operator",
        body=TriggerSpec,
        response=s.Single[s.Trigger],
        status=201,
        errors=(400, 403, 409),
        tags=T,
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
    RouteSpec(
        "PUT",
        "/api/v1/triggers/{ref}",
        update_trigger,
        "Replace a trigger",
        "operator",
        body=TriggerSpec,
        response=s.Single[s.Trigger],
        errors=(400, 403, 404),
        tags=T,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/triggers/{ref}",
        delete_trigger,
        "Delete a trigger",
        "operator",
        status=204,
        raw=True,
        errors=(403, 404, 409),
        tags=T,
    ),
    RouteSpec(
        "POST",
        "/api/v1/triggers/{ref}/enable",
        enable_trigger,
        "Enable a trigger",
        "operator",
        response=s.Single[s.Trigger],
        errors=(403, 404),
        tags=T,
    ),
    RouteSpec(
        "POST",
        "/api/v1/triggers/{ref}/disable",
        disable_trigger,
        "Disable a trigger",
        "operator",
        response=s.Single[s.Trigger],
        errors=(403, 404),
        tags=T,
    ),
    *[
        RouteSpec(
            "POST",
            f"/api/v1/triggers/{{ref}}/webhooks/{a}",
            _webhook(a),
            f"Webhook of a trigger: {a}",
            "operator",
            response=s.Single[s.Trigger],
            errors=(400, 403, 404),
            tags=T,
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
        errors=(400, 401, 404, 413, 429),
        tags=("webhooks",),
        query=(
            QueryParam(
                "X-Webhook-Signature",
                "string",
                "sha256=<hex HMAC-SHA256 of the body>, when the trigger has a webhook secret",
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
        query=(QueryParam("trigger_ref", "string", "Only this trigger's rules"),),
        tags=R,
    ),
    RouteSpec(
        "POST",
        "/api/v1/rules",
        create_rule,
        "Create a rule",
        "operator",
        body=RuleSpec,
        response=s.Single[s.Rule],
        status=201,
        errors=(400, 403, 404, 409, 422),
        tags=R,
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
    RouteSpec(
        "PUT",
        "/api/v1/rules/{ref}",
        update_rule,
        "Replace a rule",
        "operator",
        body=RuleSpec,
        response=s.Single[s.Rule],
        errors=(400, 403, 404, 422),
        tags=R,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/rules/{ref}",
        delete_rule,
        "Delete a rule",
        "operator",
        status=204,
        raw=True,
        errors=(403, 404),
        tags=R,
    ),
    RouteSpec(
        "POST",
        "/api/v1/rules/{ref}/enable",
        enable_rule,
        "Enable a rule",
        "operator",
        response=s.Single[s.Rule],
        errors=(403, 404),
        tags=R,
    ),
    RouteSpec(
        "POST",
        "/api/v1/rules/{ref}/disable",
        disable_rule,
        "Disable a rule",
        "operator",
        response=s.Single[s.Rule],
        errors=(403, 404),
        tags=R,
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
            QueryParam("trigger_ref", "string", "Only this trigger's events"),
            *_TIMES,
            QueryParam("until", "string", "ISO 8601 time, exclusive"),
            *_PAGING,
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
            QueryParam("rule_ref", "string", "Only this rule"),
            QueryParam("trigger_ref", "string", "Only this trigger"),
            QueryParam("event_id", "integer", "Only this event"),
            *_TIMES,
            *_PAGING,
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
