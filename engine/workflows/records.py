"""Workflow definitions as stored: pure records and the repository's Protocol (the SQL is in
:mod:`engine.storage.workflows`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.packs import ActionSpec


@dataclass(frozen=True, slots=True)
class WorkflowFields:
    """What a stored workflow definition holds besides its id and times."""

    ref: str
    pack_ref: str
    label: str
    #: The canonical definition (:meth:`engine.workflows.definition.WorkflowDefinition.as_dict`).
    definition: dict[str, Any]
    description: str = ""
    version: str = "1.0.0"
    param_schema: dict[str, Any] | None = None
    out_schema: dict[str, Any] | None = None
    tags: list[str] = field(default_factory=list)
    #: Created over the API (kept when its pack is registered again from disk).
    adhoc: bool = False


@dataclass(frozen=True, slots=True)
class StoredWorkflow:
    id: int
    fields: WorkflowFields
    created: datetime
    updated: datetime

    @property
    def ref(self) -> str:
        return self.fields.ref


class WorkflowRepository(Protocol):
    """Workflow definitions in storage, each kept in one transaction with its action."""

    async def add(self, fields: WorkflowFields, action: ActionSpec) -> StoredWorkflow:
        """A new definition and its action (NotFound without the pack; Conflict when a
        workflow or an action has the ref)."""
        ...

    async def replace(self, fields: WorkflowFields, action: ActionSpec) -> StoredWorkflow:
        """New fields for ``fields.ref`` and its action (NotFound when there is none)."""
        ...

    async def get(self, ref: str) -> StoredWorkflow | None: ...

    async def list(self, pack_ref: str | None = None) -> list[StoredWorkflow]:
        """By ref, of one pack or all."""
        ...

    async def delete(self, ref: str) -> bool:
        """Remove a definition and its action; False when there is none."""
        ...

    async def sync_pack(
        self, pack_ref: str, loaded: Sequence[tuple[WorkflowFields, ActionSpec]]
    ) -> None:
        """Store a pack's workflows from its folder; its other workflows from disk (and their
        actions) go, those made over the API stay."""
        ...
