"""The REST API's endpoints, in Attune's shape: ``{"data": ...}``, lists with ``pagination``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from engine.api import schemas as s
from engine.api.http import Call, QueryParam, RouteSpec, json_response, page_of, paged
from engine.audit import AuditEntry
from engine.errors import Forbidden, InvalidRequest, PackError, TooManyRequests, Unauthorized
from engine.gate import Requester, Submitted
from engine.packs import ActionSpec
from engine.params import normalize_schema
from engine.status import PENDING, ExecutionStatus

VERSION = "0.1.0"
#: Longest accepted Idempotency-Key header.
MAX_IDEMPOTENCY_KEY = 200


# -- health, auth, metrics --------------------------------------------------------------------


async def health(call: Call) -> Any:
    return {"status": "ok", "version": VERSION}


async def live(call: Call) -> Any:
    return {"status": "alive"}


async def ready(call: Call) -> Any:
    rt = call.runtime
    db_ok, broker_ok = await rt.store.ping(), await rt.broker.ping()
    body = {
        "status": "ready" if db_ok and broker_ok else "not_ready",
        "database": "ok" if db_ok else "unavailable",
        "broker": "ok" if broker_ok else "unavailable",
    }
    return json_response(body, 200 if db_ok and broker_ok else 503)


async def login(call: Call) -> Any:
    client = call.request.remote or ""
    try:
        token, ttl_s = await call.runtime.auth.login(call.body.login, call.body.password, client)
    except (Unauthorized, TooManyRequests) as exc:
        await call.runtime.audit.record(
            AuditEntry(
                actor=call.body.login[:256],
                source="api",
                verb="login",
                outcome="denied",
                channel=client,
                detail=exc.message,
            )
        )
        raise
    return {"data": {"access_token": token, "token_type": "Bearer", "expires_in": ttl_s}}


async def register(call: Call) -> Any:
    if not call.runtime.settings.allow_registration:
        raise Forbidden("self-service registration is disabled on this server")
    await call.runtime.auth.create_user(call.body.login, call.body.password, role="operator")
    return {"data": {"login": call.body.login, "role": "operator"}}


async def metrics(call: Call) -> Any:
    rt = call.runtime
    counts = await rt.service.count_by_status()
    for status in ExecutionStatus:
        rt.metrics.executions.labels(status.value).set(counts.get(status.value, 0))
    rt.metrics.queue_depth.set(sum(counts.get(status.value, 0) for status in PENDING))
    return web.Response(
        body=rt.metrics.render(),
        content_type="text/plain",
        headers={"X-Content-Type-Options": "nosniff"},
    )


# -- packs and actions ------------------------------------------------------------------------


async def list_packs(call: Call) -> Any:
    return page_of(await call.runtime.catalog.list_packs(), *call.paging())


async def get_pack(call: Call) -> Any:
    return {"data": await call.runtime.catalog.get_pack(call.path_param("ref"))}


async def register_pack(call: Call) -> Any:
    path = Path(call.body.path).expanduser()
    if not path.is_absolute():
        raise InvalidRequest("path must be an absolute path on the server")
    if not (path / "pack.yaml").is_file():
        raise InvalidRequest(f"no pack.yaml in '{path}'")
    return {"data": await call.runtime.catalog.register_path(path, force=call.body.force)}


async def list_actions(call: Call) -> Any:
    items = await call.runtime.catalog.list_actions(call.request.query.get("pack_ref"))
    return page_of(items, *call.paging())


async def list_pack_actions(call: Call) -> Any:
    ref = call.path_param("ref")
    await call.runtime.catalog.get_pack(ref)
    items = await call.runtime.catalog.list_actions(ref)
    return page_of(items, *call.paging())


async def get_action(call: Call) -> Any:
    from engine.catalog import action_record

    return {
        "data": action_record(await call.runtime.catalog.get_action_row(call.path_param("ref")))
    }


async def _action_spec(call: Call, body: s.ActionWrite) -> ActionSpec:
    pack_ref, _, name = body.ref.partition(".")
    if body.pack_ref and body.pack_ref != pack_ref:
        raise InvalidRequest(f"ref '{body.ref}' does not belong to pack_ref '{body.pack_ref}'")
    if body.param_schema is not None and body.parameters is not None:
        raise InvalidRequest("give either param_schema or parameters, not both")
    try:
        schema = normalize_schema(
            body.param_schema if body.param_schema is not None else body.parameters
        )
    except PackError as exc:
        raise InvalidRequest(exc.message) from None
    common: dict[str, Any] = dict(
        ref=body.ref,
        pack_ref=pack_ref,
        name=name,
        label=body.label or name,
        description=body.description,
        param_schema=schema,
        parameter_delivery=body.parameter_delivery,
        parameter_format=body.parameter_format,
        output_format=body.output_format,
        timeout_s=body.timeout_seconds,
        enabled=body.enabled,
        confirm=body.confirm,
    )
    if body.entrypoint is not None and body.runtime_ref is not None:
        if not call.caller.is_admin:
            raise Forbidden("creating an action with an inline script needs the admin role")
        runner = "shell" if body.runtime_ref == "core.shell" else "python"
        return ActionSpec(runner_type=runner, script=body.entrypoint, **common)
    if body.entry_point is not None and body.runner_type is not None:
        try:
            pack = await call.runtime.catalog.get_pack(pack_ref)
        except Exception:
            raise InvalidRequest(
                f"pack '{pack_ref}' must be registered for a file entry_point"
            ) from None
        if not pack["path"]:
            raise InvalidRequest(f"pack '{pack_ref}' has no folder on the server")
        base = Path(pack["path"]).resolve()
        target = (base / "actions" / body.entry_point).resolve()
        if base not in target.parents or not target.is_file():
            raise InvalidRequest(
                f"entry_point '{body.entry_point}' is not a file in the pack's actions folder"
            )
        return ActionSpec(
            runner_type=body.runner_type, entry_point=body.entry_point, base_dir=str(base), **common
        )
    raise InvalidRequest(
        "an action needs either 'entrypoint' (inline script) with 'runtime_ref' "
        "(core.shell or core.python), or 'entry_point' with 'runner_type'"
    )


async def create_action(call: Call) -> Any:
    spec = await _action_spec(call, call.body)
    return {"data": await call.runtime.catalog.create_action(spec)}


async def update_action(call: Call) -> Any:
    ref = call.path_param("ref")
    if call.body.ref != ref:
        raise InvalidRequest(f"body ref '{call.body.ref}' differs from the URL's '{ref}'")
    existing = await call.runtime.catalog.get_action_row(ref)
    if existing.script is not None and not call.caller.is_admin:
        raise Forbidden("changing an action with an inline script needs the admin role")
    spec = await _action_spec(call, call.body)
    return {"data": await call.runtime.catalog.update_action(ref, spec)}


async def delete_action(call: Call) -> Any:
    await call.runtime.catalog.delete_action(call.path_param("ref"))
    return web.Response(status=204)


# -- executions -------------------------------------------------------------------------------


def requester(call: Call) -> Requester:
    who = call.caller
    return Requester(
        identity=who.login, role=who.role, source="api", extra={"token": who.token_name}
    )


async def execute(call: Call) -> Any:
    body: s.ExecuteRequest = call.body
    key = call.request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    outcome = await call.runtime.gate.run(
        requester(call),
        body.action_ref,
        body.parameters,
        callback_url=str(body.callback_url) if body.callback_url else None,
        idempotency_key=f"api:{call.caller.login}:{key}" if key else None,
    )
    assert isinstance(outcome, Submitted)  # the API never asks for confirmation
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return json_response({"data": outcome.record}, 201, headers=headers)


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
        page=page,
        per_page=per_page,
    )
    return paged(items, page, per_page, total)


async def get_execution(call: Call) -> Any:
    return {"data": await call.runtime.gate.view(requester(call), call.int_path_param("id"))}


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
    items = await call.runtime.service.deliveries(call.int_path_param("id"))
    return page_of(items, *call.paging())


_PAGING = (
    QueryParam("page", "integer", "Page number, from 1"),
    QueryParam("per_page", "integer", "Items per page, 1-100 (default 50; alias page_size)"),
)

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
        "POST",
        "/auth/login",
        login,
        "Exchange a login and password for a bearer token",
        "public",
        body=s.LoginRequest,
        response=s.Single[s.TokenData],
        errors=(400, 401, 429),
        tags=("auth",),
    ),
    RouteSpec(
        "POST",
        "/auth/register",
        register,
        "Self-service registration (off by default)",
        "public",
        body=s.RegisterUserRequest,
        response=s.Single[s.UserCreated],
        status=201,
        errors=(400, 403, 409),
        tags=("auth",),
    ),
    RouteSpec(
        "GET", "/metrics", metrics, "Prometheus metrics", "public", raw=True, tags=("health",)
    ),
    RouteSpec(
        "GET",
        "/api/v1/packs",
        list_packs,
        "List packs",
        response=s.Page[s.Pack],
        errors=(401,),
        tags=("packs",),
    ),
    RouteSpec(
        "POST",
        "/api/v1/packs/register",
        register_pack,
        "Register a pack folder",
        "admin",
        body=s.RegisterPackRequest,
        response=s.Single[s.Pack],
        status=201,
        errors=(400, 401, 403, 409),
        tags=("packs",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/packs/{ref}",
        get_pack,
        "Get a pack",
        response=s.Single[s.Pack],
        errors=(401, 404),
        tags=("packs",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/packs/{ref}/actions",
        list_pack_actions,
        "A pack's actions",
        response=s.Page[s.Action],
        errors=(401, 404),
        tags=("packs",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/actions",
        list_actions,
        "List actions",
        response=s.Page[s.Action],
        query=(QueryParam("pack_ref", "string", "Only this pack's actions"),),
        errors=(401,),
        tags=("actions",),
    ),
    RouteSpec(
        "POST",
        "/api/v1/actions",
        create_action,
        "Create an action",
        "operator",
        body=s.ActionWrite,
        response=s.Single[s.Action],
        status=201,
        errors=(400, 401, 403, 409),
        tags=("actions",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/actions/{ref}",
        get_action,
        "Get an action",
        response=s.Single[s.Action],
        errors=(401, 404),
        tags=("actions",),
    ),
    RouteSpec(
        "PUT",
        "/api/v1/actions/{ref}",
        update_action,
        "Replace an action",
        "operator",
        body=s.ActionWrite,
        response=s.Single[s.Action],
        errors=(400, 401, 403, 404),
        tags=("actions",),
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/actions/{ref}",
        delete_action,
        "Delete an action",
        "operator",
        status=204,
        raw=True,
        errors=(401, 403, 404),
        tags=("actions",),
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
        query=(
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
            *_PAGING,
        ),
    ),
    RouteSpec(
        "GET",
        "/api/v1/executions/{id}",
        get_execution,
        "Get an execution",
        response=s.Single[s.Execution],
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
            *_PAGING,
        ),
        errors=(400, 401, 403),
        tags=("audit",),
    ),
    RouteSpec(
        "POST",
        "/api/v1/executions/{id}/cancel",
        cancel_execution,
        "Cancel an execution",
        "viewer",  # the permission policy decides (and audits)
        response=s.Single[s.Execution],
        errors=(400, 401, 403, 404, 409),
        tags=("executions",),
    ),
]
