"""Workflow definitions over the API, as Attune's clients call them: ``/api/v1/workflows``
(list with ``pack_ref``, ``tags``, ``search``; get; create; update; delete) and
``/api/v1/packs/{ref}/workflows``. A definition that cannot work is refused with 422 naming
the task and the field; changing one needs ``manage`` on its ref, as for actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from engine.api import schemas as s
from engine.api.http import PAGING, Call, QueryParam, RouteSpec, page_of
from engine.api.routes import requester
from engine.workflows.definition import WorkflowDefinition, parse_definition
from engine.workflows.records import StoredWorkflow
from engine.workflows.service import Workflows, check_ref, fields_of, workflow_action
from engine.workflows.validation import actions_used

_REF = r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$"


class WorkflowUpdate(s.Request):
    """Attune's ``UpdateWorkflowRequest``: only what changes."""

    label: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10_000)
    version: str | None = Field(default=None, min_length=1, max_length=50)
    param_schema: dict[str, Any] | None = None
    out_schema: dict[str, Any] | None = None
    #: The definition: ``tasks`` (with ``vars``, ``output_map``...), as in a workflow file.
    definition: dict[str, Any] | None = None
    tags: list[str] | None = None


class WorkflowCreate(WorkflowUpdate):
    """Attune's ``CreateWorkflowRequest``."""

    ref: str = Field(min_length=3, max_length=255, pattern=_REF)
    pack_ref: str = Field(min_length=1, max_length=128)
    label: str = Field(min_length=1, max_length=255)
    version: str = Field(default="1.0.0", min_length=1, max_length=50)
    definition: dict[str, Any]


class WorkflowSummary(BaseModel):
    id: int
    ref: str
    pack_ref: str
    label: str
    description: str
    version: str
    tags: list[str]
    is_adhoc: bool
    created: datetime
    updated: datetime


class Workflow(WorkflowSummary):
    pack: int | None
    param_schema: dict[str, Any] | None
    out_schema: dict[str, Any] | None
    definition: dict[str, Any]


def _summary(w: StoredWorkflow) -> dict[str, Any]:
    f = w.fields
    return {
        "id": w.id,
        "ref": f.ref,
        "pack_ref": f.pack_ref,
        "label": f.label,
        "description": f.description,
        "version": f.version,
        "tags": f.tags,
        "is_adhoc": f.adhoc,
        "created": w.created,
        "updated": w.updated,
    }


async def _record(call: Call, w: StoredWorkflow) -> dict[str, Any]:
    pack = await call.runtime.catalog.repo.pack(w.fields.pack_ref)
    return _summary(w) | {
        "pack": pack.id if pack is not None else None,
        "param_schema": w.fields.param_schema,
        "out_schema": w.fields.out_schema,
        "definition": w.fields.definition,
    }


def _workflows(call: Call) -> Workflows:
    return Workflows(call.runtime.store, call.runtime.catalog)


def _matches(w: StoredWorkflow, tags: list[str], search: str) -> bool:
    if tags and not set(tags) & set(w.fields.tags):
        return False
    text = f"{w.fields.ref} {w.fields.label} {w.fields.description}".lower()
    return search.lower() in text


async def list_workflows(call: Call) -> Any:
    query = call.request.query
    tags = [t.strip() for t in query.get("tags", "").split(",") if t.strip()]
    found = await _workflows(call).list(query.get("pack_ref") or None)
    items = [_summary(w) for w in found if _matches(w, tags, query.get("search", ""))]
    return page_of(items, *call.paging())


async def list_pack_workflows(call: Call) -> Any:
    ref = call.path_param("ref")
    await call.runtime.catalog.pack(ref)  # 404 for no such pack
    return page_of([_summary(w) for w in await _workflows(call).list(ref)], *call.paging())


async def get_workflow(call: Call) -> Any:
    return {"data": await _record(call, await _workflows(call).get(call.path_param("ref")))}


async def create_workflow(call: Call) -> Any:
    body: WorkflowCreate = call.body
    await call.runtime.gate.manage(requester(call), body.ref, "create_workflow")
    check_ref(body.ref, body.pack_ref)
    await call.runtime.catalog.pack(body.pack_ref)  # 404 for no such pack
    raw = {
        **body.definition,
        "tags": body.tags or body.definition.get("tags") or [],
        "parameters": body.definition.get("parameters") or body.param_schema,
    }
    definition = parse_definition(
        raw,
        ref=body.ref,
        label=body.label,
        version=body.version,
        description=body.description,
    )
    service = _workflows(call)
    await service.check(definition)
    await _may_run_its_tasks(call, definition, "create_workflow")
    stored = await service.create(
        fields_of(
            definition,
            body.pack_ref,
            param_schema=body.param_schema,
            out_schema=body.out_schema,
            adhoc=True,
        ),
        workflow_action(
            definition, body.pack_ref, param_schema=body.param_schema, out_schema=body.out_schema
        ),
    )
    return {"data": await _record(call, stored), "message": "Workflow created successfully"}


async def update_workflow(call: Call) -> Any:
    """Attune's update sends only what changes: the stored workflow fills in the rest."""
    ref = call.path_param("ref")
    service = _workflows(call)
    current = (await service.get(ref)).fields
    await call.runtime.gate.manage(requester(call), ref, "update_workflow")
    body: WorkflowUpdate = call.body
    given = body.model_dump(exclude_unset=True)
    raw = given.get("definition") or current.definition
    tags = given.get("tags")
    params = given.get("param_schema", current.param_schema)
    output = given.get("out_schema", current.out_schema)
    definition = parse_definition(
        {
            **raw,
            "tags": tags if tags is not None else current.tags,
            "parameters": (raw.get("parameters") if "definition" in given else None) or params,
        },
        ref=ref,
        label=given.get("label") or current.label,
        version=given.get("version") or current.version,
        description=given.get("description", current.description),
    )
    await service.check(definition)
    await _may_run_its_tasks(call, definition, "update_workflow")
    stored = await service.replace(
        fields_of(
            definition,
            current.pack_ref,
            param_schema=params,
            out_schema=output,
            adhoc=current.adhoc,
        ),
        workflow_action(definition, current.pack_ref, param_schema=params, out_schema=output),
    )
    return {"data": await _record(call, stored), "message": "Workflow updated successfully"}


async def _may_run_its_tasks(call: Call, definition: WorkflowDefinition, verb: str) -> None:
    """Whoever saves a workflow may run every action its tasks run (403 naming the first one
    they may not, audited): a workflow runs its tasks for whoever may run the workflow, so
    saving one must not let its author run what they themselves may not."""
    who = requester(call)
    for action_ref in actions_used(definition):
        await call.runtime.gate.deny(who, "run", action_ref, audit_verb=verb)


async def delete_workflow(call: Call) -> Any:
    ref = call.path_param("ref")
    service = _workflows(call)
    await service.get(ref)  # 404 before 403, as actions do
    await call.runtime.gate.manage(requester(call), ref, "delete_workflow")
    await service.delete(ref)
    return {"success": True, "message": f"Workflow '{ref}' deleted successfully"}


W = ("workflows",)
_FILTERS = (
    QueryParam("pack_ref", "string", "Only this pack's workflows"),
    QueryParam("tags", "string", "Only workflows with one of these tags (comma-separated)"),
    QueryParam("search", "string", "Text in the ref, label or description"),
)

WORKFLOW_ROUTES: list[RouteSpec] = [
    RouteSpec(
        "GET",
        "/api/v1/workflows",
        list_workflows,
        "List workflow definitions",
        response=s.Page[WorkflowSummary],
        query=(*_FILTERS, *PAGING),
        errors=(401,),
        tags=W,
    ),
    RouteSpec(
        "POST",
        "/api/v1/workflows",
        create_workflow,
        "Create a workflow definition (also an action of the same ref, disabled until "
        "workflow runs are available)",
        "operator",
        body=WorkflowCreate,
        response=s.Single[Workflow],
        status=201,
        errors=(400, 401, 403, 404, 409, 422),
        tags=W,
    ),
    RouteSpec(
        "GET",
        "/api/v1/workflows/{ref}",
        get_workflow,
        "Get a workflow definition",
        response=s.Single[Workflow],
        errors=(401, 404),
        tags=W,
    ),
    RouteSpec(
        "PUT",
        "/api/v1/workflows/{ref}",
        update_workflow,
        "Change a workflow definition (fields not given keep their value)",
        "operator",
        body=WorkflowUpdate,
        response=s.Single[Workflow],
        errors=(400, 401, 403, 404, 422),
        tags=W,
    ),
    RouteSpec(
        "DELETE",
        "/api/v1/workflows/{ref}",
        delete_workflow,
        "Delete a workflow definition and its action",
        "operator",
        response=s.Success,
        errors=(401, 403, 404),
        tags=W,
    ),
    RouteSpec(
        "GET",
        "/api/v1/packs/{ref}/workflows",
        list_pack_workflows,
        "A pack's workflow definitions",
        response=s.Page[WorkflowSummary],
        query=PAGING,
        errors=(401, 404),
        tags=W,
    ),
]

__all__ = ["WORKFLOW_ROUTES"]
