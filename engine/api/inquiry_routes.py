"""``/api/v1/inquiries``, as Attune's: list, get, respond (:mod:`engine.inquiries`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel

from engine.api import schemas as s
from engine.api.http import MAX_ID, Call, QueryParam, RouteSpec, paged
from engine.errors import InvalidRequest
from engine.inquiries import inquiries_of
from engine.inquiry_records import Inquiry, InquiryFilter

TAGS = ("inquiries",)


class InquiryRespond(s.Request):
    #: The answer: an object that fits the inquiry's ``response_schema``.
    response: Any


class InquiryView(BaseModel):
    id: int
    execution: int
    prompt: str
    response_schema: dict[str, Any] | None
    assigned_to: int | None
    #: Ours: logins, Slack user ids or role names who may answer besides ``assigned_to``.
    assignees: list[str]
    status: str
    response: dict[str, Any] | None
    responded_by: str | None
    timeout_at: datetime | None
    responded_at: datetime | None
    created: datetime
    updated: datetime


class InquirySummary(BaseModel):
    id: int
    execution: int
    prompt: str
    assigned_to: int | None
    status: str
    has_response: bool
    timeout_at: datetime | None
    created: datetime


def view(x: Inquiry) -> dict[str, Any]:
    return {
        "id": x.id,
        "execution": x.execution,
        "prompt": x.prompt,
        "response_schema": x.response_schema,
        "assigned_to": x.assigned_to,
        "assignees": list(x.assignees),
        "status": x.status,
        "response": x.response,
        "responded_by": x.responded_by,
        "timeout_at": x.timeout_at,
        "responded_at": x.responded_at,
        "created": x.created,
        "updated": x.updated,
    }


def summary(x: Inquiry) -> dict[str, Any]:
    return {
        "id": x.id,
        "execution": x.execution,
        "prompt": x.prompt,
        "assigned_to": x.assigned_to,
        "status": x.status,
        "has_response": x.response is not None,
        "timeout_at": x.timeout_at,
        "created": x.created,
    }


def _int_query(call: Call, name: str, low: int) -> int | None:
    raw = call.request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= MAX_ID:
        raise InvalidRequest(
            f"query parameter '{name}' must be an integer of at least {low}, got '{raw[:40]}'"
        )
    return value


async def list_inquiries(call: Call) -> Any:
    limit = _int_query(call, "limit", 1) or 50
    offset = _int_query(call, "offset", 0) or 0
    where = InquiryFilter(
        status=call.request.query.get("status") or None,
        execution=_int_query(call, "execution", 1),
        assigned_to=_int_query(call, "assigned_to", 1),
    )
    items, total = await inquiries_of(call.runtime).list(where, limit=limit, offset=offset)
    return paged([summary(x) for x in items], offset // limit + 1, limit, total)


async def get_inquiry(call: Call) -> Any:
    return {"data": view(await inquiries_of(call.runtime).get(call.int_path_param("id")))}


async def respond_to_inquiry(call: Call) -> Any:
    body: InquiryRespond = call.body
    service = inquiries_of(call.runtime)
    answered = await service.respond(call.int_path_param("id"), body.response, call.caller)
    return {"data": view(answered)}


INQUIRY_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/inquiries",
        list_inquiries,
        "List inquiries (runs waiting for, or given, a human answer)",
        response=s.Page[InquirySummary],
        errors=(400,),
        query=(
            QueryParam("status", "string", "pending, responded, timeout or cancelled"),
            QueryParam("execution", "integer", "The execution that asks"),
            QueryParam("assigned_to", "integer", "The identity id it is assigned to"),
            QueryParam("offset", "integer", "Items to skip (default 0)"),
            QueryParam("limit", "integer", "Items per page, 1-500 (default 50)"),
        ),
        tags=TAGS,
    ),
    RouteSpec(
        "GET",
        "/api/v1/inquiries/{id}",
        get_inquiry,
        "Get an inquiry",
        response=s.Single[InquiryView],
        errors=(400, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "POST",
        "/api/v1/inquiries/{id}/respond",
        respond_to_inquiry,
        "Answer an inquiry (the assigned user or role, or an admin): the first valid answer "
        "ends its execution completed with the answer; a later one gets 409",
        "viewer",  # who is assigned decides
        body=InquiryRespond,
        response=s.Single[InquiryView],
        errors=(400, 403, 404, 409),
        tags=TAGS,
    ),
]
