"""The catalog's records (packs and actions as stored) and the repository that keeps them.

Pure Python: the SQL is in :mod:`engine.storage.catalog`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from engine.packs import ActionSpec, PackSpec


@dataclass(frozen=True, slots=True)
class Pack:
    """A stored pack, with how many actions it has."""

    id: int
    ref: str
    label: str
    description: str
    version: str
    path: str | None
    conf_schema: dict[str, Any]
    config: dict[str, Any]
    meta: dict[str, Any]
    tags: list[Any]
    runtime_deps: list[Any]
    dependencies: list[Any]
    is_standard: bool
    created: datetime
    updated: datetime
    action_count: int = 0


@dataclass(frozen=True, slots=True)
class Action:
    """A stored action: its spec and what the catalog adds (ids, ``adhoc``, times)."""

    id: int
    pack_id: int
    spec: ActionSpec
    #: Created over the API (kept when its pack is registered again from disk).
    adhoc: bool
    created: datetime
    updated: datetime

    @property
    def ref(self) -> str:
        return self.spec.ref


class CatalogRepository(Protocol):
    """Packs and actions in storage. Each method is one transaction."""

    async def register(self, spec: PackSpec, *, force: bool) -> None:
        """Store a pack and its actions (Conflict when it exists and ``force`` is not set);
        a replaced pack's actions that are not in ``spec`` go, except those made over the API."""
        ...

    async def create_pack(self, spec: PackSpec) -> None:
        """A new pack with no actions; Conflict when its ref is taken."""
        ...

    async def delete_pack(self, ref: str) -> str | None:
        """Remove a pack with its actions, aliases, triggers and rules (NotFound if none);
        its folder."""
        ...

    async def list_packs(self) -> list[Pack]: ...

    async def pack(self, ref: str) -> Pack | None: ...

    async def list_actions(self, pack_ref: str | None = None) -> list[Action]: ...

    async def action(self, ref: str) -> Action | None: ...

    async def create_action(self, spec: ActionSpec) -> None:
        """A new action made over the API (its pack made if missing); Conflict when taken."""
        ...

    async def update_action(self, ref: str, spec: ActionSpec) -> bool:
        """Replace an action's fields; False when there is no such action."""
        ...

    async def delete_action(self, ref: str) -> bool:
        """False when there is no such action."""
        ...
