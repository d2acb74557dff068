"""The REST API's endpoints, in Attune's shape: ``{"data": ...}``, lists with ``pagination``."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from engine.api import schemas as s
from engine.api.http import (
    MAX_WAIT_S,
    PAGING,
    Call,
    QueryParam,
    RouteSpec,
    json_response,
    page_of,
    paged,
    wait_seconds,
)
from engine.auth import Principal
from engine.errors import InvalidRequest, NotFound, Unauthorized
from engine.gate import BatchItem, Requester, Submitted
from engine.records import Execution
from engine.status import PENDING, TERMINAL, ExecutionStatus
from engine.storage.changes import delivery_totals

VERSION = "0.1.0"
#: Longest accepted Idempotency-Key header.
MAX_IDEMPOTENCY_KEY = 200


# -- health, metrics --------------------------------------------------------------------------


async def health(call: Call) -> Any:
    return {"status": "ok", "version": VERSION}


async def health_detailed(call: Call) -> Any:
    """Attune's ``/health/detailed``: 503 when the database does not answer; ours adds the
    broker beside it."""
    rt = call.runtime
    db_ok, broker_ok = await rt.store.ping(), await rt.broker.ping()
    if not db_ok:
        body = {"status": "error", "database": "disconnected", "error": "database unreachable"}
        return json_response(body, 503)
    broker = "connected" if broker_ok else "disconnected"
    return {"status": "ok", "version": VERSION, "database": "connected", "broker": broker}


async def live(call: Call) -> Any:
    return {"status": "alive"}


async def ready(call: Call) -> Any:
    """503 while the database or the broker does not answer (nothing can run); a link that is
    down (Slack's Socket Mode) is reported and makes the status ``degraded``, not unready: the
    API still serves."""
    rt = call.runtime
    db_ok, broker_ok = await rt.store.ping(), await rt.broker.ping()
    links = {name: up() for name, up in rt.links.items()}
    status = "ready" if all(links.values()) else "degraded"
    body: dict[str, Any] = {
        "status": status if db_ok and broker_ok else "not_ready",
        "database": "ok" if db_ok else "unavailable",
        "broker": "ok" if broker_ok else "unavailable",
    }
    body.update({name: "ok" if up else "unavailable" for name, up in links.items()})
    return json_response(body, 200 if db_ok and broker_ok else 503)


async def metrics(call: Call) -> Any:
    """Prometheus metrics, as ``ATTUNE_METRICS`` says: ``authenticated`` (the default: any
    valid bearer token), ``public`` (no token) or ``off`` (404)."""
    rt = call.runtime
    mode = rt.settings.metrics
    if mode == "off":
        raise NotFound("metrics are off on this server (ATTUNE_METRICS=off)")
    if mode == "authenticated" and call.principal is None:
        raise Unauthorized(
            "missing bearer token: /metrics needs one (ATTUNE_METRICS=authenticated)"
        )
    counts = await rt.service.count_by_status()
    for status in ExecutionStatus:
        rt.metrics.executions.labels(status.value).set(counts.get(status.value, 0))
    rt.metrics.queue_depth.set(sum(counts.get(status.value, 0) for status in PENDING))
    rt.metrics.set_deliveries(await delivery_totals(rt.store))
    return web.Response(
        body=rt.metrics.render(),
        content_type="text/plain",
        headers={"X-Content-Type-Options": "nosniff"},
    )


# -- executions -------------------------------------------------------------------------------


def requester(call: Call) -> Requester:
    who = call.caller
    extra: dict[str, Any] = {"token": who.token_name}
    if who.user_id is not None:
        extra["identity_id"] = who.user_id  # Attune's ``executor``
    return Requester(identity=who.login, role=who.role, source="api", extra=extra)


def scoped_idempotency_key(caller: Principal, key: str) -> str:
    """``key`` scoped to its sender so no two (sender, key) pairs give one string: the user id
    (digits, no ``:``), or for a token standing for no user row the login with its length
    (a login may hold ``:``)."""
    if caller.user_id is not None:
        return f"api:u{caller.user_id}:{key}"
    return f"api:l{len(caller.login)}:{caller.login}:{key}"


def finished(record: Execution) -> bool:
    return ExecutionStatus(record.status) in TERMINAL


async def until_finished(call: Call, record: Execution, wait_s: float) -> Execution:
    """``record`` once it has ended, or its state when ``wait_s`` have passed. Follows this
    process's change feed (which reads the other processes' changes too), as ``attune run
    --wait`` does."""
    from engine.api.stream_routes import CHANGES_KEY  # it imports this module

    if finished(record):
        return record
    feed, service = call.request.app[CHANGES_KEY], call.runtime.service
    execution_id = record.id

    def mine(execution: Execution) -> bool:
        return execution.id == execution_id

    sub = feed.subscribe(mine)
    limit = asyncio.timeout(wait_s)
    try:
        async with limit:
            record = await service.get(execution_id)  # read after subscribing: nothing missed
            while not finished(record):
                change = await sub.next()
                if change is not None:
                    record = change.execution
                elif sub.dropped:  # fell behind (cannot happen for one execution): read again
                    feed.unsubscribe(sub)
                    sub = feed.subscribe(mine)
                    record = await service.get(execution_id)
                else:
                    break  # the feed closed: the server is stopping
    except TimeoutError:
        if not limit.expired():
            raise
    finally:
        feed.unsubscribe(sub)
    return record if finished(record) else await service.get(execution_id)


def waited(record: Execution) -> int:
    """The status of a waiting execute: 200 when it has ended, else 202."""
    return 200 if finished(record) else 202


def idempotency_key(call: Call) -> str | None:
    """The request's Idempotency-Key, scoped to its sender; None without one."""
    key = call.request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    return scoped_idempotency_key(call.caller, key)


async def execute(call: Call) -> Any:
    body: s.ExecuteRequest = call.body
    wait_s = wait_seconds(call.request)
    key = idempotency_key(call)
    outcome = await call.runtime.gate.run(
        requester(call),
        body.action_ref,
        body.parameters,
        callback_url=str(body.callback_url) if body.callback_url else None,
        idempotency_key=key,
    )
    assert isinstance(outcome, Submitted)  # the API never asks for confirmation
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    if wait_s is None:
        return json_response({"data": outcome.record}, 201, headers=headers)
    record = await until_finished(call, outcome.record, wait_s)
    return json_response({"data": record}, waited(record), headers=headers)


async def execute_batch(call: Call) -> Any:
    body: s.BatchRequest = call.body
    outcome = await call.runtime.gate.run_many(
        requester(call),
        [BatchItem(item.action_ref, item.parameters) for item in body.executions],
        idempotency_key=idempotency_key(call),
    )
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return json_response({"data": outcome.records}, 201, headers=headers)


def _flag(call: Call, name: str) -> bool:
    raw = call.request.query.get(name, "").lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise InvalidRequest(f"query parameter '{name}' must be true or false")


async def list_executions(call: Call) -> Any:
    q = call.request.query
    statuses = [x for x in q.get("status", "").split(",") if x] or None
    page, per_page = call.paging()
    policy, role = call.runtime.gate.policy, call.caller.role
    narrowed = None if policy.sees_everything(role) else policy.like_patterns(role, "view")
    items, total = await call.runtime.service.list(
        status=statuses,
        action_ref=q.get("action_ref") or None,
        action_like=narrowed,
        enforcement=call.query_int("enforcement", 0) or None,
        parent=call.query_int("parent", 0) or None,
        original_execution=call.query_int("original_execution", 0) or None,
        top_level_only=_flag(call, "top_level_only"),
        pack=q.get("pack_name") or None,
        page=page,
        per_page=per_page,
    )
    return paged(items, page, per_page, total)


async def get_execution(call: Call) -> Any:
    wait_s = wait_seconds(call.request)
    record = await call.runtime.gate.view(requester(call), call.int_path_param("id"))
    if wait_s is not None:
        record = await until_finished(call, record, wait_s)
    return {"data": record}


async def cancel_execution(call: Call) -> Any:
    return {"data": await call.runtime.gate.cancel(requester(call), call.int_path_param("id"))}


async def list_audit(call: Call) -> Any:
    q = call.request.query
    since = call.query_time("since")
    page, per_page = call.paging()
    items, total = await call.runtime.audit.list(
        actor=q.get("actor") or None,
        verb=q.get("verb") or None,
        outcome=q.get("outcome") or None,
        since=since,
        page=page,
        per_page=per_page,
    )
    return paged(items, page, per_page, total)


async def list_deliveries(call: Call) -> Any:
    execution_id = call.int_path_param("id")
    await call.runtime.gate.view(requester(call), execution_id)  # 403 as for the execution
    items = await call.runtime.service.deliveries(execution_id)
    return page_of(items, *call.paging())


ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/health",
        health,
        "Liveness and version",
        "public",
        response=s.Health,
        tags=("health",),
    ),
    RouteSpec(
        "GET",
        "/health/detailed",
        health_detailed,
        "Liveness, version, and whether the database (and broker) answer",
        "public",
        response=s.Health,
        errors=(503,),
        tags=("health",),
    ),
    RouteSpec(
        "GET",
        "/health/live",
        live,
        "The process answers",
        "public",
        response=s.Health,
        tags=("health",),
    ),
    RouteSpec(
        "GET",
        "/health/ready",
        ready,
        "Database and broker answer",
        "public",
        response=s.Health,
        errors=(503,),
        tags=("health",),
    ),
    RouteSpec(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics (a bearer token unless ATTUNE_METRICS=public; 404 when off)",
        "public",
        raw=True,
        errors=(401, 404),
        tags=("health",),
    ),
    RouteSpec(
        "POST",
        "/api/v1/executions/execute",
        execute,
        "Run an action",
        "viewer",  # the permission policy decides (and audits)
        body=s.ExecuteRequest,
        response=s.Single[s.Execution],
        status=201,
        also=(200, 202),
        query=(
            QueryParam(
                "wait",
                "number",
                f"Seconds to wait for the end (0 < wait <= {MAX_WAIT_S:g}): 200 with the "
                "finished execution, or 202 with its state when it has not ended; without it 201",
            ),
            QueryParam(
                "Idempotency-Key",
                "string",
                "A retried request with the same key returns the first execution",
                "header",
            ),
        ),
        errors=(400, 401, 403, 404),
        tags=("executions",),
    ),
    RouteSpec(
        "POST",
        "/api/v1/executions/batch",
        execute_batch,
        "Run up to 100 actions at once: all checked first, then all recorded, or none",
        "viewer",  # the permission policy decides (and audits)
        body=s.BatchRequest,
        response=s.Single[list[s.Execution]],
        status=201,
        query=(
            QueryParam(
                "Idempotency-Key",
                "string",
                "A retried batch with the same key returns the first batch's executions",
                "header",
            ),
        ),
        errors=(400, 401, 403, 409),
        tags=("executions",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/executions",
        list_executions,
        "List executions, newest first",
        response=s.Page[s.Execution],
        errors=(400, 401),
        tags=("executions",),
        query=(
            QueryParam("status", "string", "Comma-separated statuses"),
            QueryParam("action_ref", "string", "Only this action"),
            QueryParam("pack_name", "string", "Only this pack's actions"),
            QueryParam("enforcement", "integer", "Only the executions of this enforcement"),
            QueryParam("parent", "integer", "Only the children of this execution"),
            QueryParam(
                "original_execution", "integer", "Only the retries of this execution's chain"
            ),
            QueryParam(
                "top_level_only", "string", "Only executions without a parent (no task runs)"
            ),
            *PAGING,
        ),
    ),
    RouteSpec(
        "GET",
        "/api/v1/executions/{id}",
        get_execution,
        "Get an execution",
        response=s.Single[s.Execution],
        query=(
            QueryParam(
                "wait",
                "number",
                f"Long-poll: answer once it has ended, or after this many seconds (0 < wait <= "
                f"{MAX_WAIT_S:g}) with its current state",
            ),
        ),
        errors=(400, 401, 403, 404),
        tags=("executions",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/executions/{id}/deliveries",
        list_deliveries,
        "Where the execution's news went: chat card, callback URL (state, attempts, last error)",
        response=s.Page[s.Delivery],
        errors=(400, 401, 404),
        tags=("executions",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/audit",
        list_audit,
        "The audit log, newest first: who asked for what, from where, and what came of it",
        "admin",
        response=s.Page[s.AuditEntry],
        query=(
            QueryParam("actor", "string", "Only this login or Slack user"),
            QueryParam("verb", "string", "run, rerun, cancel, confirm, abort, login"),
            QueryParam("outcome", "string", "accepted, denied, refused, ..."),
            QueryParam("since", "string", "ISO 8601 time"),
            *PAGING,
        ),
        errors=(400, 401, 403),
        tags=("audit",),
    ),
    RouteSpec(
        "POST",
        "/api/v1/executions/{id}/cancel",
        cancel_execution,
        "Cancel an execution (an ended one whose retry is pending: call the retry off)",
        "viewer",  # the permission policy decides (and audits)
        response=s.Single[s.Execution],
        errors=(400, 401, 403, 404, 409),
        tags=("executions",),
    ),
]
