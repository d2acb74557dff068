"""The catalog: packs and actions as stored in the database, registered from disk or the API."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from cachetools import TTLCache

from engine.catalog_records import Action, Pack
from engine.concurrency import policy_record
from engine.errors import NotFound, PackError
from engine.packs import RUNTIME_REFS, ActionSpec, PackSpec, load_pack
from engine.params import flat_schema
from engine.storage import Store
from engine.storage.catalog import catalog_repository

#: Action specs cached at most.
ACTION_CACHE_SIZE = 10_000


def action_spec(action: Action) -> ActionSpec:
    """The spec of a stored action."""
    return action.spec


class Catalog:
    """Packs and actions. Action specs are cached for ``cache_s`` (every submission and run
    needs one): a change made by this process is seen at once, one made by another process
    within ``cache_s``. A spec not cached is read once however many ask for it at the same
    time (when it expires under load, fifty requests in flight make one query, not fifty)."""

    def __init__(self, store: Store, *, cache_s: float = 2.0) -> None:
        self.repo = catalog_repository(store)
        self.cache_s = cache_s
        #: ref -> spec, for ``cache_s``; past the bound the least recently used goes.
        self._cache: TTLCache[str, ActionSpec] = TTLCache(maxsize=ACTION_CACHE_SIZE, ttl=cache_s)
        #: ref -> the read of it in flight; and the count of ``forget`` calls, so a read that
        #: began before a change does not cache what it read.
        self._reading: dict[str, asyncio.Future[ActionSpec]] = {}
        self._generation = 0

    def forget(self) -> None:
        self._cache.clear()
        self._reading.clear()
        self._generation += 1

    async def register(self, spec: PackSpec, *, force: bool = False) -> Pack:
        """Store a pack and its actions. An existing pack needs ``force`` to be replaced; its
        actions created over the API are kept."""
        self.forget()
        await self.repo.register(spec, force=force)
        return await self.pack(spec.ref)

    async def register_path(self, path: Path, *, force: bool = False) -> Pack:
        return await self.register(load_pack(path), force=force)

    async def create_pack(self, spec: PackSpec) -> Pack:
        """A pack with no folder (Attune's ``POST /api/v1/packs``); 409 when the ref is taken."""
        await self.repo.create_pack(spec)
        return await self.pack(spec.ref)

    async def delete_pack(self, ref: str) -> str | None:
        """Remove a pack with its actions, aliases, triggers and rules in one transaction
        (executions, events and enforcements keep their refs as history). Returns the pack's
        folder."""
        self.forget()
        return await self.repo.delete_pack(ref)

    async def packs(self) -> list[Pack]:
        return await self.repo.list_packs()

    async def pack(self, ref: str) -> Pack:
        found = await self.repo.pack(ref)
        if found is None:
            raise NotFound(f"pack '{ref}' not found")
        return found

    async def actions(self, pack_ref: str | None = None) -> list[Action]:
        return await self.repo.list_actions(pack_ref)

    async def action(self, ref: str) -> Action:
        """The stored action (NotFound when there is none); never cached."""
        found = await self.repo.action(ref)
        if found is None:
            raise NotFound(f"action '{ref}' not found")
        return found

    async def get_action(self, ref: str) -> ActionSpec:
        cached = self._cache.get(ref)
        if cached is not None:
            return cached
        reading = self._reading.get(ref)
        if reading is None:
            reading = asyncio.ensure_future(self._read(ref, self._generation))
            self._reading[ref] = reading
            reading.add_done_callback(lambda done: self._read_done(ref, done))
        # Shielded: one asker's cancellation does not cancel the read the others wait for.
        return await asyncio.shield(reading)

    async def _read(self, ref: str, generation: int) -> ActionSpec:
        spec = action_spec(await self.action(ref))
        if generation == self._generation:  # no change since the read began
            self._cache[ref] = spec
        return spec

    def _read_done(self, ref: str, done: asyncio.Future[ActionSpec]) -> None:
        if self._reading.get(ref) is done:
            del self._reading[ref]
        if not done.cancelled():
            done.exception()  # retrieved here: every asker may have gone

    async def create_action(self, spec: ActionSpec) -> dict[str, Any]:
        self.forget()
        await self.repo.create_action(spec)
        return action_record(await self.action(spec.ref))

    async def update_action(self, ref: str, spec: ActionSpec) -> dict[str, Any]:
        self.forget()
        if not await self.repo.update_action(ref, spec):
            raise NotFound(f"action '{ref}' not found")
        return action_record(await self.action(ref))

    async def delete_action(self, ref: str) -> None:
        self.forget()
        if not await self.repo.delete_action(ref):
            raise NotFound(f"action '{ref}' not found")


def pack_record(pack: Pack) -> dict[str, Any]:
    """Attune's ``PackResponse``, with ours (``path``, ``action_count``) beside it."""
    return {
        "id": pack.id,
        "ref": pack.ref,
        "label": pack.label,
        "description": pack.description,
        "version": pack.version,
        "conf_schema": pack.conf_schema,
        "config": pack.config,
        "meta": pack.meta,
        "tags": pack.tags,
        "runtime_deps": pack.runtime_deps,
        "dependencies": pack.dependencies,
        "is_standard": pack.is_standard,
        "path": pack.path,
        "action_count": pack.action_count,
        "created": pack.created,
        "updated": pack.updated,
    }


def action_record(action: Action) -> dict[str, Any]:
    """Attune's ``ActionResponse`` (``entrypoint``, ``runtime``, ``out_schema``, ``is_adhoc``...),
    with ours beside it."""
    spec = action.spec
    script = spec.script
    return {
        "id": action.id,
        "ref": spec.ref,
        "pack": action.pack_id,
        "pack_ref": spec.pack_ref,
        "entrypoint": script if script is not None else (spec.entry_point or ""),
        "runtime": None,
        "runtime_ref": spec.runtime_ref or RUNTIME_REFS.get(spec.runner_type),
        "out_schema": spec.out_schema,
        "is_adhoc": action.adhoc,
        "accesses_mcp": False,
        "disabled_reason": spec.disabled_reason,
        "name": spec.name,
        "label": spec.label,
        "description": spec.description,
        "runner_type": spec.runner_type,
        "entry_point": spec.entry_point,
        "has_inline_script": script is not None,
        #: Attune's flat map (what its clients read); ``param_json_schema`` is the same as the
        #: JSON Schema every submission is validated against.
        "param_schema": flat_schema(spec.param_schema),
        "param_json_schema": spec.param_schema,
        "parameter_delivery": spec.parameter_delivery,
        "parameter_format": spec.parameter_format,
        "output_format": spec.output_format,
        "timeout_seconds": spec.timeout_s,
        "enabled": spec.enabled,
        "confirm": spec.confirm,
        "concurrency": policy_record(spec.concurrency),
        "max_retries": spec.max_retries,
        "adhoc": action.adhoc,
        "created": action.created,
        "updated": action.updated,
    }


__all__ = ["Action", "Catalog", "Pack", "PackError", "action_record", "action_spec", "pack_record"]
