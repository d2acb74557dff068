"""Workflow definitions as stored (pure records; the SQL is in :mod:`engine.storage.workflows`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


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
