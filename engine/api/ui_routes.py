"""Read endpoints of Attune's web UI pages, in Attune's shapes: the dashboard's analytics
(``/api/v1/analytics/*``), an execution's history, the workers, the runtimes and the audit log
as Attune's audit events. Paths, query parameters and envelopes are Attune's
(``crates/api/src/routes/{analytics,history,workers,runtimes,audit}.rs``)."""

from __future__ import annotations

from typing import Any

from engine.analytics import Analytics, TimeRange, time_range
from engine.api import schemas as s
from engine.api import ui_schemas as u
from engine.api.empty_routes import EMPTY_ROUTES
from engine.api.http import MAX_ID, PAGING, Call, QueryParam, RouteSpec, page_of, paged
from engine.api.routes import requester
from engine.audit_events import AuditEvents, conditions
from engine.catalog_records import Pack
from engine.clock import now_utc
from engine.errors import InvalidRequest, NotFound
from engine.history import execution_history, matching
from engine.runtimes import CORE_PACK, RUNTIMES, find_runtime, runtime_record
from engine.worker_roster import Roster, WorkerFilter

# -- analytics --------------------------------------------------------------------------------


def _optional_int(call: Call, name: str, low: int = 1, high: int = MAX_ID) -> int | None:
    raw = call.request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter '{name}' must be an integer") from None
    if not low <= value <= high:
        raise InvalidRequest(f"query parameter '{name}' must be between {low} and {high}")
    return value


def _window(call: Call) -> TimeRange:
    # Attune clamps hours into 1..8760; only a number is asked for.
    hours = _optional_int(call, "hours", -(2**63), 2**63 - 1)
    try:
        return time_range(call.query_time("since"), call.query_time("until"), hours, now_utc())
    except OverflowError:
        raise InvalidRequest("the time window reaches past the years a date can have") from None


async def dashboard(call: Call) -> Any:
    return {"data": await Analytics(call.runtime.store).dashboard(_window(call))}


async def _series(call: Call, name: str) -> Any:
    window = _window(call)
    data = await getattr(Analytics(call.runtime.store), name)(window)
    return {"data": {"since": window.since, "until": window.until, "data": data}}


async def execution_status_analytics(call: Call) -> Any:
    return await _series(call, "execution_status")


async def execution_throughput_analytics(call: Call) -> Any:
    return await _series(call, "execution_throughput")


async def event_volume_analytics(call: Call) -> Any:
    return await _series(call, "event_volume")


async def enforcement_volume_analytics(call: Call) -> Any:
    return await _series(call, "enforcement_volume")


async def worker_status_analytics(call: Call) -> Any:
    window = _window(call)
    return {"data": {"since": window.since, "until": window.until, "data": []}}


async def failure_rate_analytics(call: Call) -> Any:
    return {"data": await Analytics(call.runtime.store).failure_rate(_window(call))}


# -- an execution's history -------------------------------------------------------------------


async def get_execution_history(call: Call) -> Any:
    record = await call.runtime.gate.view(requester(call), call.int_path_param("id"))
    q = call.request.query
    records = matching(
        await execution_history(call.runtime.store, record.as_dict()),
        operation=q.get("operation") or None,
        changed_field=q.get("changed_field") or None,
        since=call.query_time("since"),
        until=call.query_time("until"),
    )
    return page_of(records, *call.paging())


# -- workers ----------------------------------------------------------------------------------


def _roster(call: Call) -> Roster:
    rt = call.runtime
    return Roster(rt.store, rt.worker, stale_after_s=rt.settings.heartbeat_timeout_s)


async def list_workers(call: Call) -> Any:
    page, per_page = call.paging()
    only = WorkerFilter.parse(dict(call.request.query))
    return page_of(await _roster(call).list(only), page, per_page)


async def get_worker(call: Call) -> Any:
    return await _roster(call).get(call.int_path_param("id"))  # bare, as Attune answers it


# -- runtimes ---------------------------------------------------------------------------------


async def _runtimes(call: Call) -> list[dict[str, Any]]:
    try:
        core: Pack | None = await call.runtime.catalog.pack(CORE_PACK)
    except NotFound:
        core = None
    now = now_utc()
    return [runtime_record(info, core, now) for info in RUNTIMES]


async def list_runtimes(call: Call) -> Any:
    return page_of(await _runtimes(call), *call.paging())


async def get_runtime(call: Call) -> Any:
    ref = find_runtime(call.path_param("ref")).ref
    return {"data": next(r for r in await _runtimes(call) if r["ref"] == ref)}


async def list_pack_runtimes(call: Call) -> Any:
    ref = (await call.runtime.catalog.pack(call.path_param("ref"))).ref
    return page_of(await _runtimes(call) if ref == CORE_PACK else [], *call.paging())


# -- audit events -----------------------------------------------------------------------------


async def list_audit_events(call: Call) -> Any:
    page, per_page = call.paging()
    where = conditions(
        call.request.query,
        created_after=call.query_time("created_after"),
        created_before=call.query_time("created_before"),
        resource_id=_optional_int(call, "resource_id"),
        actor_identity=_optional_int(call, "actor_identity"),
        http_status=_optional_int(call, "http_status", 100, 599),
    )
    items, total = await AuditEvents(call.runtime.audit).list(where, page, per_page)
    return paged(items, page, per_page, total)


async def get_audit_event(call: Call) -> Any:
    return {"data": await AuditEvents(call.runtime.audit).get(call.int_path_param("id"))}


# -- routes -----------------------------------------------------------------------------------

_WINDOW = (
    QueryParam("since", "string", "Start of the window (ISO 8601); default: hours before until"),
    QueryParam("until", "string", "End of the window (ISO 8601); default: now"),
    QueryParam("hours", "integer", "Hours back from until when since is not given (1-8760)"),
)


def _analytics(path: str, handler: Any, summary: str, response: Any) -> RouteSpec:
    return RouteSpec(
        "GET",
        f"/api/v1/analytics/{path}",
        handler,
        summary,
        response=s.Single[response],
        query=_WINDOW,
        errors=(400,),
        tags=("analytics",),
    )


UI_ROUTES: list[RouteSpec] = [
    _analytics(
        "dashboard",
        dashboard,
        "Every series of the dashboard at once: executions created per hour, status "
        "transitions, events, enforcements, failure rate",
        u.DashboardAnalytics,
    ),
    _analytics(
        "executions/status",
        execution_status_analytics,
        "Execution status transitions per hour (running, and each final status)",
        u.TimeSeries,
    ),
    _analytics(
        "executions/throughput",
        execution_throughput_analytics,
        "Executions created per hour",
        u.TimeSeries,
    ),
    _analytics(
        "executions/failure-rate",
        failure_rate_analytics,
        "Failed and timed-out executions among those that ended completed, failed or timeout",
        u.FailureRate,
    ),
    _analytics("events/volume", event_volume_analytics, "Events per hour", u.TimeSeries),
    _analytics(
        "enforcements/volume",
        enforcement_volume_analytics,
        "Enforcements per hour",
        u.TimeSeries,
    ),
    _analytics(
        "workers/status",
        worker_status_analytics,
        "Worker status transitions per hour (none: workers keep no history here)",
        u.TimeSeries,
    ),
    RouteSpec(
        "GET",
        "/api/v1/executions/{id}/history",
        get_execution_history,
        "An execution's changes, newest first: its creation, then each status change",
        response=s.Page[u.HistoryRecord],
        query=(
            QueryParam("operation", "string", "INSERT or UPDATE"),
            QueryParam("changed_field", "string", "Only changes of this field (e.g. status)"),
            QueryParam("since", "string", "ISO 8601 time"),
            QueryParam("until", "string", "ISO 8601 time"),
            *PAGING,
        ),
        errors=(400, 403, 404),
        tags=("executions",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/workers",
        list_workers,
        "Workers: this server's, and those of other processes that hold running executions",
        response=s.Page[u.WorkerSummary],
        query=(
            QueryParam("role", "string", "action or sensor"),
            QueryParam("status", "string", "active, inactive, busy or error"),
            QueryParam("cordoned", "string", "true or false"),
            QueryParam("health_state", "string", "active, busy, cordoned, offline, ..."),
            *PAGING,
        ),
        errors=(400,),
        tags=("workers",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/workers/{id}",
        get_worker,
        "A worker (the object itself, as Attune answers it)",
        response=u.WorkerSummary,
        errors=(400, 404),
        tags=("workers",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/runtimes",
        list_runtimes,
        "The runtimes this server has (shell, python, builtin); read-only",
        response=s.Page[u.Runtime],
        query=PAGING,
        errors=(400,),
        tags=("runtimes",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/runtimes/{ref}",
        get_runtime,
        "A runtime",
        response=s.Single[u.Runtime],
        errors=(404,),
        tags=("runtimes",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/packs/{ref}/runtimes",
        list_pack_runtimes,
        "A pack's runtimes (the core pack has this server's)",
        response=s.Page[u.Runtime],
        query=PAGING,
        errors=(400, 404),
        tags=("runtimes",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/audit-events",
        list_audit_events,
        "The audit log as Attune's audit events, newest first (our fields beside Attune's)",
        "admin",
        response=s.Page[u.AuditEvent],
        query=(
            QueryParam("category", "string", "api, auth, rbac, secret, admin, execution, pack"),
            QueryParam("event_type", "string", "e.g. execution.run, auth.login, rbac.denied"),
            QueryParam("outcome", "string", "success, failure or denied"),
            QueryParam("actor_login", "string", "Actors whose login contains this"),
            QueryParam("actor_identity", "integer", "The actor's identity id"),
            QueryParam("resource_type", "string", "execution, key or identity"),
            QueryParam("resource_id", "integer", "The execution's id"),
            QueryParam("resource_ref", "string", "The action, key or login acted on"),
            QueryParam("http_status", "integer", "403 for refused requests"),
            QueryParam("http_path", "string", "Refused requests whose path contains this"),
            QueryParam("created_after", "string", "ISO 8601 time (inclusive)"),
            QueryParam("created_before", "string", "ISO 8601 time (exclusive)"),
            *PAGING,
        ),
        errors=(400, 403),
        tags=("audit",),
    ),
    RouteSpec(
        "GET",
        "/api/v1/audit-events/{id}",
        get_audit_event,
        "One audit event",
        "admin",
        response=s.Single[u.AuditEvent],
        errors=(400, 403, 404),
        tags=("audit",),
    ),
    *EMPTY_ROUTES,
]
