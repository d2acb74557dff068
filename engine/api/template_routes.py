"""``/api/v1/templates``: saved run configurations (:mod:`engine.exec_templates`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from engine.api import schemas as s
from engine.api.http import PAGING, Call, QueryParam, RouteSpec, json_response, page_of
from engine.api.routes import MAX_IDEMPOTENCY_KEY, requester, scoped_idempotency_key
from engine.errors import InvalidRequest
from engine.exec_templates import templates_of
from engine.gate import Submitted

TAGS = ("templates",)


class TemplateRequest(s.Request):
    ref: str = Field(min_length=1, max_length=256, examples=["ops.restart_web"])
    action_ref: str = Field(min_length=1, max_length=256, examples=["core.echo"])
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"message": "hello"}])
    description: str = Field(default="", max_length=10_000)


class TemplateUpdate(s.Request):
    """Only the fields sent change."""

    action_ref: str | None = Field(default=None, min_length=1, max_length=256)
    parameters: dict[str, Any] | None = None
    description: str | None = Field(default=None, max_length=10_000)


class TemplateExecute(s.Request):
    #: On top of the template's own parameters.
    parameters: dict[str, Any] = Field(default_factory=dict, examples=[{"host": "web2"}])


class Template(BaseModel):
    id: int
    ref: str
    action_ref: str
    #: Secret values shown as ``********``.
    parameters: dict[str, Any]
    description: str
    owner: str | None
    created: datetime
    updated: datetime


class Deleted(BaseModel):
    success: bool
    message: str


async def list_templates(call: Call) -> Any:
    views = await templates_of(call.runtime).list(requester(call))
    return page_of([v.as_dict() for v in views], *call.paging())


async def create_template(call: Call) -> Any:
    body: TemplateRequest = call.body
    view = await templates_of(call.runtime).create(
        requester(call), body.ref, body.action_ref, body.parameters, body.description
    )
    return {"data": view.as_dict()}


async def get_template(call: Call) -> Any:
    view = await templates_of(call.runtime).get(requester(call), call.path_param("ref"))
    return {"data": view.as_dict()}


async def update_template(call: Call) -> Any:
    body: TemplateUpdate = call.body
    view = await templates_of(call.runtime).update(
        requester(call),
        call.path_param("ref"),
        action_ref=body.action_ref,
        parameters=body.parameters,
        description=body.description,
    )
    return {"data": view.as_dict()}


async def delete_template(call: Call) -> Any:
    ref = call.path_param("ref")
    await templates_of(call.runtime).delete(requester(call), ref)
    return {"success": True, "message": f"Template '{ref}' deleted successfully"}


async def execute_template(call: Call) -> Any:
    body: TemplateExecute = call.body
    key = call.request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY:
        raise InvalidRequest(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    outcome = await templates_of(call.runtime).execute(
        requester(call),
        call.path_param("ref"),
        body.parameters,
        idempotency_key=scoped_idempotency_key(call.caller, key) if key else None,
    )
    assert isinstance(outcome, Submitted)  # the API never asks for confirmation
    headers = {"Idempotent-Replayed": "true"} if outcome.replayed else {}
    return json_response({"data": outcome.record}, 201, headers=headers)


TEMPLATE_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/templates",
        list_templates,
        "List execution templates (those of actions the caller may view)",
        response=s.Page[Template],
        errors=(400,),
        query=PAGING,
        tags=TAGS,
    ),
    RouteSpec(
        "POST",
        "/api/v1/templates",
        create_template,
        "Save an execution template (needs permission to run its action)",
        "viewer",  # the permission policy decides (and audits)
        body=TemplateRequest,
        response=s.Single[Template],
        status=201,
        errors=(400, 403, 404, 409),
        tags=TAGS,
    ),
    RouteSpec(
        "GET",
        "/api/v1/templates/{ref}",
        get_template,
        "Get an execution template",
        response=s.Single[Template],
        errors=(400, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "PUT",
        "/api/v1/templates/{ref}",
        update_template,
        "Change an execution template (only the fields sent change)",
        "viewer",
        body=TemplateUpdate,
        response=s.Single[Template],
        errors=(400, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/templates/{ref}",
        delete_template,
        "Delete an execution template",
        "viewer",
        response=Deleted,
        errors=(400, 403, 404),
        tags=TAGS,
    ),
    RouteSpec(
        "POST",
        "/api/v1/templates/{ref}/execute",
        execute_template,
        "Run an execution template, its parameters overridden by those sent",
        "viewer",  # the permission policy decides (and audits)
        body=TemplateExecute,
        response=s.Single[s.Execution],
        status=201,
        errors=(400, 403, 404, 409),
        query=(
            QueryParam(
                "Idempotency-Key",
                "string",
                "A retried request with the same key returns the first execution",
                "header",
            ),
        ),
        tags=TAGS,
    ),
]
