"""The catalog: packs and actions as stored in the database, registered from disk or the API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update

from engine.errors import Conflict, NotFound, PackError
from engine.packs import RUNTIME_REFS, ActionSpec, PackSpec, load_pack
from engine.params import flat_schema
from engine.storage import Store
from engine.storage.tables import actions, now_utc, packs, rules, triggers


def action_spec(row: Row[Any]) -> ActionSpec:
    m = row._mapping
    return ActionSpec(
        ref=m["ref"],
        pack_ref=m["pack_ref"],
        name=m["name"],
        label=m["label"],
        description=m["description"],
        runner_type=m["runner_type"],
        entry_point=m["entry_point"],
        script=m["script"],
        param_schema=m["param_schema"],
        parameter_delivery=m["parameter_delivery"],
        parameter_format=m["parameter_format"],
        output_format=m["output_format"],
        timeout_s=m["timeout_s"],
        enabled=m["enabled"],
        confirm=m["confirm"],
        base_dir=m["base_dir"],
        out_schema=m["out_schema"],
        runtime_ref=m["runtime_ref"],
        disabled_reason=m["disabled_reason"],
    )


def _action_values(spec: ActionSpec) -> dict[str, Any]:
    return {
        "ref": spec.ref,
        "pack_ref": spec.pack_ref,
        "name": spec.name,
        "label": spec.label,
        "description": spec.description,
        "runner_type": spec.runner_type,
        "entry_point": spec.entry_point,
        "script": spec.script,
        "param_schema": spec.param_schema,
        "parameter_delivery": spec.parameter_delivery,
        "parameter_format": spec.parameter_format,
        "output_format": spec.output_format,
        "timeout_s": spec.timeout_s,
        "enabled": spec.enabled,
        "confirm": spec.confirm,
        "base_dir": spec.base_dir,
        "out_schema": spec.out_schema,
        "runtime_ref": spec.runtime_ref,
        "disabled_reason": spec.disabled_reason,
    }


def _pack_values(spec: PackSpec) -> dict[str, Any]:
    return {
        "ref": spec.ref,
        "label": spec.label,
        "description": spec.description,
        "version": spec.version,
        "path": spec.path,
        "conf_schema": spec.conf_schema,
        "config": spec.config,
        "meta": spec.meta,
        "tags": list(spec.tags),
        "runtime_deps": list(spec.runtime_deps),
        "dependencies": list(spec.dependencies),
        "is_standard": spec.is_standard,
    }


class Catalog:
    """Packs and actions. Action specs are cached for ``cache_s`` (every submission and run
    needs one): a change made by this process is seen at once, one made by another process
    within ``cache_s``."""

    def __init__(self, store: Store, *, cache_s: float = 2.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, ActionSpec]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def register(self, spec: PackSpec, *, force: bool = False) -> dict[str, Any]:
        """Store a pack and its actions. An existing pack needs ``force`` to be replaced; its
        actions created over the API are kept."""
        now = now_utc()
        self.forget()
        async with self.store.write() as conn:
            existing = (await conn.execute(select(packs).where(packs.c.ref == spec.ref))).first()
            values = _pack_values(spec) | {"updated": now}
            if existing is None:
                pack_id = (
                    await conn.execute(
                        insert(packs).values(**values, created=now).returning(packs.c.id)
                    )
                ).scalar_one()
            else:
                if not force:
                    raise Conflict(
                        f"pack '{spec.ref}' is already registered; pass force=true to replace it"
                    )
                pack_id = existing.id
                await conn.execute(update(packs).where(packs.c.id == pack_id).values(**values))
                keep = [a.ref for a in spec.actions]
                await conn.execute(
                    delete(actions).where(
                        actions.c.pack_id == pack_id,
                        actions.c.adhoc.is_(False),
                        actions.c.ref.not_in(keep),
                    )
                )
            for action in spec.actions:
                await self._upsert_action(conn, pack_id, action, adhoc=False, now=now)
        return await self.get_pack(spec.ref)

    async def register_path(self, path: Path, *, force: bool = False) -> dict[str, Any]:
        return await self.register(load_pack(path), force=force)

    async def create_pack(self, spec: PackSpec) -> dict[str, Any]:
        """A pack with no folder (Attune's ``POST /api/v1/packs``); 409 when the ref is taken."""
        now = now_utc()
        async with self.store.write() as conn:
            taken = (await conn.execute(select(packs.c.id).where(packs.c.ref == spec.ref))).first()
            if taken is not None:
                raise Conflict(f"pack '{spec.ref}' already exists")
            await conn.execute(insert(packs).values(**_pack_values(spec), created=now, updated=now))
        return await self.get_pack(spec.ref)

    async def delete_pack(self, ref: str) -> str | None:
        """Remove a pack with its actions, triggers and rules in one transaction (executions,
        events and enforcements keep their refs as history). Returns the pack's folder."""
        self.forget()
        async with self.store.write() as conn:
            row = (await conn.execute(select(packs).where(packs.c.ref == ref))).first()
            if row is None:
                raise NotFound(f"pack '{ref}' not found")
            for table in (rules, triggers, actions):
                await conn.execute(delete(table).where(table.c.pack_ref == ref))
            await conn.execute(delete(packs).where(packs.c.id == row.id))
        return str(row.path) if row.path else None

    async def _upsert_action(
        self, conn: Any, pack_id: int, spec: ActionSpec, *, adhoc: bool, now: Any
    ) -> None:
        values = _action_values(spec) | {"pack_id": pack_id, "adhoc": adhoc, "updated": now}
        result = await conn.execute(
            update(actions).where(actions.c.ref == spec.ref).values(**values)
        )
        if result.rowcount == 0:
            await conn.execute(insert(actions).values(**values, created=now))

    async def list_packs(self) -> list[dict[str, Any]]:
        async with self.store.read() as conn:
            counts: dict[int, int] = dict(
                (
                    await conn.execute(
                        select(actions.c.pack_id, func.count()).group_by(actions.c.pack_id)
                    )
                )
                .tuples()
                .all()
            )
            rows = (await conn.execute(select(packs).order_by(packs.c.ref))).all()
        return [_pack_record(r, counts.get(r.id, 0)) for r in rows]

    async def get_pack(self, ref: str) -> dict[str, Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(select(packs).where(packs.c.ref == ref))).first()
            if row is None:
                raise NotFound(f"pack '{ref}' not found")
            count = (
                await conn.execute(select(func.count()).where(actions.c.pack_id == row.id))
            ).scalar_one()
        return _pack_record(row, count)

    async def list_actions(self, pack_ref: str | None = None) -> list[dict[str, Any]]:
        query = select(actions).order_by(actions.c.ref)
        if pack_ref:
            query = query.where(actions.c.pack_ref == pack_ref)
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [action_record(r) for r in rows]

    async def get_action_row(self, ref: str) -> Row[Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(select(actions).where(actions.c.ref == ref))).first()
        if row is None:
            raise NotFound(f"action '{ref}' not found")
        return row

    async def get_action(self, ref: str) -> ActionSpec:
        now = time.monotonic()
        cached = self._cache.get(ref)
        if cached is not None and now - cached[0] < self.cache_s:
            return cached[1]
        spec = action_spec(await self.get_action_row(ref))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[ref] = (now, spec)
        return spec

    async def create_action(self, spec: ActionSpec) -> dict[str, Any]:
        now = now_utc()
        self.forget()
        async with self.store.write() as conn:
            pack = (await conn.execute(select(packs).where(packs.c.ref == spec.pack_ref))).first()
            if pack is None:
                pack_id = (
                    await conn.execute(
                        insert(packs)
                        .values(
                            ref=spec.pack_ref,
                            label=spec.pack_ref,
                            description="",
                            version="0.0.0",
                            path=None,
                            created=now,
                            updated=now,
                        )
                        .returning(packs.c.id)
                    )
                ).scalar_one()
            else:
                pack_id = pack.id
            exists = (
                await conn.execute(select(actions.c.id).where(actions.c.ref == spec.ref))
            ).first()
            if exists is not None:
                raise Conflict(f"action '{spec.ref}' already exists")
            await conn.execute(
                insert(actions).values(
                    **_action_values(spec), pack_id=pack_id, adhoc=True, created=now, updated=now
                )
            )
        return action_record(await self.get_action_row(spec.ref))

    async def update_action(self, ref: str, spec: ActionSpec) -> dict[str, Any]:
        self.forget()
        async with self.store.write() as conn:
            result = await conn.execute(
                update(actions)
                .where(actions.c.ref == ref)
                .values(**_action_values(spec), updated=now_utc())
            )
            if result.rowcount == 0:
                raise NotFound(f"action '{ref}' not found")
        return action_record(await self.get_action_row(ref))

    async def delete_action(self, ref: str) -> None:
        self.forget()
        async with self.store.write() as conn:
            result = await conn.execute(delete(actions).where(actions.c.ref == ref))
        if result.rowcount == 0:
            raise NotFound(f"action '{ref}' not found")


def _pack_record(row: Row[Any], action_count: int) -> dict[str, Any]:
    """Attune's ``PackResponse``, with ours (``path``, ``action_count``) beside it."""
    m = row._mapping
    return {
        "id": m["id"],
        "ref": m["ref"],
        "label": m["label"],
        "description": m["description"],
        "version": m["version"],
        "conf_schema": m["conf_schema"] or {},
        "config": m["config"] or {},
        "meta": m["meta"] or {},
        "tags": m["tags"] or [],
        "runtime_deps": m["runtime_deps"] or [],
        "dependencies": m["dependencies"] or [],
        "is_standard": m["is_standard"],
        "path": m["path"],
        "action_count": action_count,
        "created": m["created"],
        "updated": m["updated"],
    }


def action_record(row: Row[Any]) -> dict[str, Any]:
    """Attune's ``ActionResponse`` (``entrypoint``, ``runtime``, ``out_schema``, ``is_adhoc``...),
    with ours beside it."""
    m = row._mapping
    script = m["script"]
    return {
        "id": m["id"],
        "ref": m["ref"],
        "pack": m["pack_id"],
        "pack_ref": m["pack_ref"],
        "entrypoint": script if script is not None else (m["entry_point"] or ""),
        "runtime": None,
        "runtime_ref": m["runtime_ref"] or RUNTIME_REFS.get(m["runner_type"]),
        "out_schema": m["out_schema"],
        "is_adhoc": m["adhoc"],
        "accesses_mcp": False,
        "disabled_reason": m["disabled_reason"],
        "name": m["name"],
        "label": m["label"],
        "description": m["description"],
        "runner_type": m["runner_type"],
        "entry_point": m["entry_point"],
        "has_inline_script": m["script"] is not None,
        #: Attune's flat map (what its clients read); ``param_json_schema`` is the same as the
        #: JSON Schema every submission is validated against.
        "param_schema": flat_schema(m["param_schema"]),
        "param_json_schema": m["param_schema"],
        "parameter_delivery": m["parameter_delivery"],
        "parameter_format": m["parameter_format"],
        "output_format": m["output_format"],
        "timeout_seconds": m["timeout_s"],
        "enabled": m["enabled"],
        "confirm": m["confirm"],
        "adhoc": m["adhoc"],
        "created": m["created"],
        "updated": m["updated"],
    }


__all__ = ["Catalog", "PackError", "action_record", "action_spec"]
