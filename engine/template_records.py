"""Execution templates: saved run configurations (an action and some of its parameters),
run by name with overrides. Pure records and the repository's Protocol."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class TemplateFields:
    """What is stored of a template: ``parameters`` hold the marker in place of each secret
    value, which ``parameters_sealed`` holds encrypted."""

    ref: str
    action_ref: str
    parameters: dict[str, Any]
    parameters_sealed: str | None
    description: str
    owner: str | None


@dataclass(frozen=True)
class ExecTemplate:
    id: int
    fields: TemplateFields
    created: datetime
    updated: datetime

    @property
    def ref(self) -> str:
        return self.fields.ref

    @property
    def action_ref(self) -> str:
        return self.fields.action_ref


class TemplateRepository(Protocol):
    """Templates in storage; each method is one statement or transaction."""

    async def add(self, fields: TemplateFields) -> ExecTemplate:
        """Store a new template (Conflict when its ref is taken)."""
        ...

    async def get(self, ref: str) -> ExecTemplate | None: ...

    async def list(self) -> list[ExecTemplate]:
        """Every template, by ref."""
        ...

    async def replace(self, ref: str, fields: TemplateFields) -> ExecTemplate | None:
        """Store new fields for ``ref`` (None when there is no such template)."""
        ...

    async def delete(self, ref: str) -> bool: ...
