"""Saving workflow definitions: parsed, validated against the catalog, stored with their action.

A workflow is also an action of the same ref (Attune's companion action): listed with the
actions, ``runtime_ref`` ``workflow``, runner ``workflow`` (the worker starts it and its tasks
run as child executions: :mod:`engine.workflows.runs`).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from engine.catalog import Catalog
from engine.errors import InvalidRequest, NotFound, PackError
from engine.packs import WORKFLOW_RUNNER, ActionSpec
from engine.params import normalize_schema
from engine.storage import Store
from engine.storage.workflows import WORKFLOW_RUNTIME, workflow_repository
from engine.workflows.definition import WorkflowDefinition, WorkflowProblem
from engine.workflows.records import StoredWorkflow, WorkflowFields, WorkflowRepository
from engine.workflows.validation import validate


def workflow_action(
    definition: WorkflowDefinition,
    pack_ref: str,
    *,
    param_schema: dict[str, Any] | None = None,
    out_schema: dict[str, Any] | None = None,
    entry_point: str | None = None,
    base_dir: str | None = None,
) -> ActionSpec:
    """The action a workflow is (runnable: its definition was validated)."""
    params = param_schema if param_schema is not None else definition.parameters
    try:
        schema = normalize_schema(params)
    except PackError as exc:
        raise WorkflowProblem(f"parameters: {exc.message}") from None
    return ActionSpec(
        ref=definition.ref,
        pack_ref=pack_ref,
        name=definition.ref[len(pack_ref) + 1 :],
        label=definition.label,
        description=definition.description,
        runner_type=WORKFLOW_RUNNER,
        entry_point=entry_point,
        param_schema=schema,
        out_schema=out_schema if out_schema is not None else definition.output,
        enabled=True,
        base_dir=base_dir,
        runtime_ref=WORKFLOW_RUNTIME,
    )


def fields_of(
    definition: WorkflowDefinition,
    pack_ref: str,
    *,
    param_schema: dict[str, Any] | None = None,
    out_schema: dict[str, Any] | None = None,
    adhoc: bool = False,
) -> WorkflowFields:
    return WorkflowFields(
        ref=definition.ref,
        pack_ref=pack_ref,
        label=definition.label,
        description=definition.description,
        version=definition.version,
        param_schema=param_schema if param_schema is not None else definition.parameters,
        out_schema=out_schema if out_schema is not None else definition.output,
        definition=definition.as_dict(),
        tags=list(definition.tags),
        adhoc=adhoc,
    )


def check_ref(ref: str, pack_ref: str) -> None:
    if not ref.startswith(f"{pack_ref}.") or len(ref) == len(pack_ref) + 1:
        raise InvalidRequest(f"ref '{ref}' does not belong to pack_ref '{pack_ref}'")


class Workflows:
    """Workflow definitions over the catalog."""

    def __init__(self, store: Store, catalog: Catalog) -> None:
        self.repo: WorkflowRepository = workflow_repository(store)
        self.catalog = catalog

    async def missing_actions(self, definition: WorkflowDefinition) -> set[str]:
        """The actions the definition's tasks name that the catalog does not have."""
        wanted = {t.action for t in definition.all_tasks() if t.action}
        missing = set()
        for ref in wanted:
            try:
                await self.catalog.action(ref)
            except NotFound:
                missing.add(ref)
        return missing

    async def check(self, definition: WorkflowDefinition) -> None:
        """Validate (422 naming the task and field), the catalog included."""
        missing = await self.missing_actions(definition)
        validate(definition, lambda ref: ref not in missing)

    async def create(self, fields: WorkflowFields, action: ActionSpec) -> StoredWorkflow:
        self.catalog.forget()
        try:
            return await self.repo.add(fields, action)
        finally:
            self.catalog.forget()

    async def replace(self, fields: WorkflowFields, action: ActionSpec) -> StoredWorkflow:
        try:
            return await self.repo.replace(fields, action)
        finally:
            self.catalog.forget()

    async def get(self, ref: str) -> StoredWorkflow:
        found = await self.repo.get(ref)
        if found is None:
            raise NotFound(f"workflow '{ref}' not found")
        return found

    async def list(self, pack_ref: str | None = None) -> list[StoredWorkflow]:
        return await self.repo.list(pack_ref)

    async def delete(self, ref: str) -> None:
        try:
            if not await self.repo.delete(ref):
                raise NotFound(f"workflow '{ref}' not found")
        finally:
            self.catalog.forget()

    async def register_pack(self, pack_ref: str, loaded: Sequence[Any]) -> builtins.list[str]:
        """Store the workflows a pack's folder holds (:class:`engine.workflows.files
        .WorkflowFile`, parsed when the pack was loaded); one whose tasks name actions the
        catalog lacks is reported (naming its file) and left out. Returns the problems."""
        problems: builtins.list[str] = []
        keep: builtins.list[tuple[WorkflowFields, ActionSpec]] = []
        for item in loaded:
            try:
                await self.check(item.definition)
            except WorkflowProblem as exc:
                problems.append(f"{item.source}: {exc.message}")
                continue
            keep.append((item.fields, item.action))
        try:
            await self.repo.sync_pack(pack_ref, keep)
        finally:
            self.catalog.forget()
        return problems
