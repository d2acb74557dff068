"""The catalog's repository on SQLAlchemy Core: packs and actions (the same statements on
every dialect)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update

from engine.catalog_records import Action, CatalogRepository, Pack
from engine.clock import now_utc
from engine.concurrency import from_columns
from engine.errors import Conflict, NotFound
from engine.packs import ActionSpec, PackSpec
from engine.storage.store import Conn, Store
from engine.storage.tables import (
    action_aliases,
    actions,
    packs,
    rules,
    triggers,
    workflow_definitions,
)

#: Columns of an action that its spec holds.
_SPEC_COLUMNS = (
    "ref",
    "pack_ref",
    "name",
    "label",
    "description",
    "runner_type",
    "entry_point",
    "script",
    "param_schema",
    "parameter_delivery",
    "parameter_format",
    "output_format",
    "timeout_s",
    "enabled",
    "confirm",
    "base_dir",
    "out_schema",
    "runtime_ref",
    "disabled_reason",
    "max_retries",
)


def _action(row: Row[Any]) -> Action:
    m = row._mapping
    policy = from_columns(
        m["concurrency_limit"], m["concurrency_method"], m["concurrency_parameters"]
    )
    return Action(
        id=int(m["id"]),
        pack_id=int(m["pack_id"]),
        spec=ActionSpec(**{name: m[name] for name in _SPEC_COLUMNS}, concurrency=policy),
        adhoc=bool(m["adhoc"]),
        created=m["created"],
        updated=m["updated"],
    )


def _pack(row: Row[Any], action_count: int) -> Pack:
    m = row._mapping
    return Pack(
        id=int(m["id"]),
        ref=m["ref"],
        label=m["label"],
        description=m["description"],
        version=m["version"],
        path=m["path"],
        conf_schema=m["conf_schema"] or {},
        config=m["config"] or {},
        meta=m["meta"] or {},
        tags=m["tags"] or [],
        runtime_deps=m["runtime_deps"] or [],
        dependencies=m["dependencies"] or [],
        is_standard=bool(m["is_standard"]),
        created=m["created"],
        updated=m["updated"],
        action_count=action_count,
    )


def _action_values(spec: ActionSpec) -> dict[str, Any]:
    policy = spec.concurrency
    return {
        **{name: getattr(spec, name) for name in _SPEC_COLUMNS},
        "concurrency_limit": policy.limit if policy else None,
        "concurrency_method": policy.method if policy else None,
        "concurrency_parameters": list(policy.parameters) if policy else None,
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


class SqlCatalog:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def register(self, spec: PackSpec, *, force: bool) -> None:
        now = now_utc()
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
                await _upsert_action(conn, pack_id, action, adhoc=False, now=now)

    async def create_pack(self, spec: PackSpec) -> None:
        now = now_utc()
        async with self.store.write() as conn:
            taken = (await conn.execute(select(packs.c.id).where(packs.c.ref == spec.ref))).first()
            if taken is not None:
                raise Conflict(f"pack '{spec.ref}' already exists")
            await conn.execute(insert(packs).values(**_pack_values(spec), created=now, updated=now))

    async def delete_pack(self, ref: str) -> str | None:
        async with self.store.write() as conn:
            row = (await conn.execute(select(packs).where(packs.c.ref == ref))).first()
            if row is None:
                raise NotFound(f"pack '{ref}' not found")
            for table in (rules, triggers, workflow_definitions, actions, action_aliases):
                await conn.execute(delete(table).where(table.c.pack_ref == ref))
            await conn.execute(delete(packs).where(packs.c.id == row.id))
        return str(row.path) if row.path else None

    async def list_packs(self) -> list[Pack]:
        async with self.store.read() as conn:
            per_pack = select(actions.c.pack_id, func.count()).group_by(actions.c.pack_id)
            counts = {int(r[0]): int(r[1]) for r in (await conn.execute(per_pack)).all()}
            rows = (await conn.execute(select(packs).order_by(packs.c.ref))).all()
        return [_pack(r, counts.get(r.id, 0)) for r in rows]

    async def pack(self, ref: str) -> Pack | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(packs).where(packs.c.ref == ref))).first()
            if row is None:
                return None
            count = (
                await conn.execute(select(func.count()).where(actions.c.pack_id == row.id))
            ).scalar_one()
        return _pack(row, count)

    async def list_actions(self, pack_ref: str | None = None) -> list[Action]:
        query = select(actions).order_by(actions.c.ref)
        if pack_ref:
            query = query.where(actions.c.pack_ref == pack_ref)
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_action(r) for r in rows]

    async def action(self, ref: str) -> Action | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(actions).where(actions.c.ref == ref))).first()
        return None if row is None else _action(row)

    async def create_action(self, spec: ActionSpec) -> None:
        now = now_utc()
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

    async def update_action(self, ref: str, spec: ActionSpec) -> bool:
        async with self.store.write() as conn:
            result = await conn.execute(
                update(actions)
                .where(actions.c.ref == ref)
                .values(**_action_values(spec), updated=now_utc())
            )
        return bool(result.rowcount)

    async def delete_action(self, ref: str) -> bool:
        async with self.store.write() as conn:
            result = await conn.execute(delete(actions).where(actions.c.ref == ref))
        return bool(result.rowcount)


async def _upsert_action(
    conn: Conn, pack_id: int, spec: ActionSpec, *, adhoc: bool, now: datetime
) -> None:
    values = _action_values(spec) | {"pack_id": pack_id, "adhoc": adhoc, "updated": now}
    result = await conn.execute(update(actions).where(actions.c.ref == spec.ref).values(**values))
    if result.rowcount == 0:
        await conn.execute(insert(actions).values(**values, created=now))


def catalog_repository(store: Store) -> CatalogRepository:
    return SqlCatalog(store)
