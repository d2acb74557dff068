"""``/api/v1/schedules``: runs of an action or a template later (:mod:`engine.exec_schedules`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from engine.api import schemas as s
from engine.api.http import PAGING, Call, RouteSpec, page_of
from engine.api.routes import idempotency_key, requester
from engine.exec_schedules import ScheduleRequest, schedules_of

TAGS = ("schedules",)


class ScheduleCreate(s.Request):
    """Exactly one of ``at``, ``every``, ``cron``; ``action_ref`` or ``template_ref``."""

    action_ref: str | None = Field(default=None, min_length=1, max_length=256)
    template_ref: str | None = Field(default=None, min_length=1, max_length=256)
    #: The action's parameters, or the template's overrides.
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: Once: ISO 8601 (with an offset, or local in ``timezone``) or HH:MM.
    at: str | None = Field(default=None, max_length=64, examples=["2026-12-01T17:00"])
    #: Seconds (at least 1) or "30s", "10m", "1h", "1d".
    every: str | float | None = Field(default=None, examples=["10m"])
    #: Five fields, in ``timezone``.
    cron: str | None = Field(default=None, max_length=128, examples=["0 9 * * 1-5"])
    timezone: str | None = Field(default=None, max_length=64, examples=["Europe/Paris"])
    #: Ticks missed while down: "once" (one run for them all, the default) or "skip".
    missed: Literal["once", "skip"] = "once"
    description: str = Field(default="", max_length=10_000)


class ScheduleView(BaseModel):
    id: int
    action_ref: str | None
    template_ref: str | None
    parameters: dict[str, Any]
    kind: str
    at: datetime | None
    every_s: float | None
    cron: str | None
    timezone: str
    next_fire_at: datetime | None
    next_fire_local: str | None
    missed: str
    paused: bool
    requester: dict[str, Any]
    description: str
    fire_count: int
    last_fired_at: datetime | None
    last_execution: int | None
    created: datetime
    updated: datetime


class Deleted(BaseModel):
    success: bool
    message: str


async def list_schedules(call: Call) -> Any:
    service = schedules_of(call.runtime)
    views = [await service.view(x) for x in await service.visible(requester(call))]
    return page_of(views, *call.paging())


async def create_schedule(call: Call) -> Any:
    body: ScheduleCreate = call.body
    service = schedules_of(call.runtime)
    made = await service.create(
        requester(call),
        ScheduleRequest(
            action_ref=body.action_ref,
            template_ref=body.template_ref,
            parameters=body.parameters,
            at=body.at,
            every=body.every,
            cron=body.cron,
            timezone=body.timezone,
            missed=body.missed,
            description=body.description,
        ),
        idempotency_key=idempotency_key(call),
    )
    return {"data": await service.view(made)}


async def get_schedule(call: Call) -> Any:
    service = schedules_of(call.runtime)
    found = await service.get(requester(call), call.int_path_param("id"))
    return {"data": await service.view(found)}


async def delete_schedule(call: Call) -> Any:
    schedule_id = call.int_path_param("id")
    await schedules_of(call.runtime).delete(requester(call), schedule_id)
    return {"success": True, "message": f"Schedule #{schedule_id} deleted"}


def _pausing(paused: bool) -> Any:
    async def handler(call: Call) -> Any:
        service = schedules_of(call.runtime)
        changed = await service.set_paused(requester(call), call.int_path_param("id"), paused)
        return {"data": await service.view(changed)}

    handler.__name__ = "pause_schedule" if paused else "resume_schedule"
    return handler


SCHEDULE_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/schedules",
        list_schedules,
        "List schedules (of actions the caller may view), with their next fire time",
        response=s.Page[ScheduleView],
        errors=(400,),
        query=PAGING,
        tags=TAGS,
    ),
    RouteSpec(
        "POST",
        "/api/v1/schedules",
        create_schedule,
        "Schedule runs of an action or a template: once (at), every interval, or by cron",
        "viewer",  # the permission policy decides (and audits)
        body=ScheduleCreate,
        response=s.Single[ScheduleView],
        status=201,
        errors=(400, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "GET",
        "/api/v1/schedules/{id}",
        get_schedule,
        "Get a schedule",
        response=s.Single[ScheduleView],
        errors=(400, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/schedules/{id}",
        delete_schedule,
        "Delete a schedule",
        "viewer",
        response=Deleted,
        errors=(400, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "POST",
        "/api/v1/schedules/{id}/pause",
        _pausing(True),
        "Pause a schedule (it does not fire until resumed)",
        "viewer",
        response=s.Single[ScheduleView],
        errors=(400, 403, 404, 409),
        tags=TAGS,
    ),
    RouteSpec(
        "POST",
        "/api/v1/schedules/{id}/resume",
        _pausing(False),
        "Resume a schedule: it goes on with its next tick after now",
        "viewer",
        response=s.Single[ScheduleView],
        errors=(400, 403, 404, 409),
        tags=TAGS,
    ),
]
