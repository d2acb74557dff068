"""The ``workflow_definitions`` rows (:mod:`engine.workflows.records`), each kept in the same
transaction as its action in the catalog (a workflow is an action of the same ref)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, insert, select, update

from engine.clock import now_utc
from engine.errors import Conflict, NotFound
from engine.packs import ActionSpec
from engine.storage.catalog import _action_values
from engine.storage.store import Conn, Store
from engine.storage.tables import actions, packs
from engine.storage.tables import workflow_definitions as t
from engine.workflows.records import StoredWorkflow, WorkflowFields, WorkflowRepository

#: ``runtime_ref`` of the actions that are workflows.
WORKFLOW_RUNTIME = "workflow"


def _record(row: Any) -> StoredWorkflow:
    return StoredWorkflow(
        id=int(row.id),
        fields=WorkflowFields(
            ref=row.ref,
            pack_ref=row.pack_ref,
            label=row.label,
            description=row.description or "",
            version=row.version,
            param_schema=row.param_schema,
            out_schema=row.out_schema,
            definition=dict(row.definition or {}),
            tags=list(row.tags or []),
            adhoc=bool(row.adhoc),
        ),
        created=row.created,
        updated=row.updated,
    )


def _values(fields: WorkflowFields) -> dict[str, Any]:
    return {
        "ref": fields.ref,
        "pack_ref": fields.pack_ref,
        "label": fields.label,
        "description": fields.description,
        "version": fields.version,
        "param_schema": fields.param_schema,
        "out_schema": fields.out_schema,
        "definition": fields.definition,
        "tags": fields.tags,
        "adhoc": fields.adhoc,
    }


class SqlWorkflows:
    """Workflow definitions and their actions, on either dialect."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, fields: WorkflowFields, action: ActionSpec) -> StoredWorkflow:
        """A new definition and its action; NotFound without the pack, Conflict when the ref
        is taken by a workflow or an action."""
        now = now_utc()
        async with self.store.write() as conn:
            pack_id = await _pack_id(conn, fields.pack_ref)
            if (await conn.execute(select(t.c.id).where(t.c.ref == fields.ref))).first():
                raise Conflict(f"workflow '{fields.ref}' already exists")
            taken = select(actions.c.id).where(actions.c.ref == fields.ref)
            if (await conn.execute(taken)).first():
                raise Conflict(f"an action '{fields.ref}' already exists")
            await conn.execute(insert(t).values(**_values(fields), created=now, updated=now))
            await conn.execute(
                insert(actions).values(
                    **_action_values(action),
                    pack_id=pack_id,
                    adhoc=fields.adhoc,
                    created=now,
                    updated=now,
                )
            )
        return await self._must(fields.ref)

    async def replace(self, fields: WorkflowFields, action: ActionSpec) -> StoredWorkflow:
        """Change a definition and its action (NotFound when there is none)."""
        now = now_utc()
        async with self.store.write() as conn:
            done = await conn.execute(
                update(t).where(t.c.ref == fields.ref).values(**_values(fields), updated=now)
            )
            if not done.rowcount:
                raise NotFound(f"workflow '{fields.ref}' not found")
            await _put_action(conn, action, fields.adhoc, now)
        return await self._must(fields.ref)

    async def get(self, ref: str) -> StoredWorkflow | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(t).where(t.c.ref == ref))).first()
        return None if row is None else _record(row)

    async def list(self, pack_ref: str | None = None) -> list[StoredWorkflow]:
        query = select(t).order_by(t.c.ref)
        if pack_ref:
            query = query.where(t.c.pack_ref == pack_ref)
        async with self.store.read(offload=True) as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def delete(self, ref: str) -> bool:
        """Remove a definition and its action; False when there is none."""
        async with self.store.write() as conn:
            done = await conn.execute(delete(t).where(t.c.ref == ref))
            if not done.rowcount:
                return False
            await conn.execute(
                delete(actions).where(
                    actions.c.ref == ref, actions.c.runtime_ref == WORKFLOW_RUNTIME
                )
            )
        return True

    async def sync_pack(
        self, pack_ref: str, loaded: Sequence[tuple[WorkflowFields, ActionSpec]]
    ) -> None:
        """Store a pack's workflows from disk; its other workflows from disk go (with their
        actions), those made over the API stay."""
        now = now_utc()
        keep = [fields.ref for fields, _ in loaded]
        async with self.store.write() as conn:
            await conn.execute(
                delete(t).where(
                    t.c.pack_ref == pack_ref, t.c.adhoc.is_(False), t.c.ref.not_in(keep)
                )
            )
            await conn.execute(  # the actions of workflows gone or refused
                delete(actions).where(
                    actions.c.pack_ref == pack_ref,
                    actions.c.runtime_ref == WORKFLOW_RUNTIME,
                    actions.c.adhoc.is_(False),
                    actions.c.ref.not_in(keep),
                )
            )
            for fields, action in loaded:
                done = await conn.execute(
                    update(t).where(t.c.ref == fields.ref).values(**_values(fields), updated=now)
                )
                if not done.rowcount:
                    await conn.execute(
                        insert(t).values(**_values(fields), created=now, updated=now)
                    )
                await _put_action(conn, action, False, now)

    async def _must(self, ref: str) -> StoredWorkflow:
        found = await self.get(ref)
        assert found is not None
        return found


async def _pack_id(conn: Conn, pack_ref: str) -> int:
    row = (await conn.execute(select(packs.c.id).where(packs.c.ref == pack_ref))).first()
    if row is None:
        raise NotFound(f"pack '{pack_ref}' not found")
    return int(row.id)


async def _put_action(conn: Conn, action: ActionSpec, adhoc: bool, now: Any) -> None:
    """Update the workflow's action, or add it (its pack must exist)."""
    values = _action_values(action) | {"updated": now}
    done = await conn.execute(update(actions).where(actions.c.ref == action.ref).values(**values))
    if not done.rowcount:
        pack_id = await _pack_id(conn, action.pack_ref)
        await conn.execute(
            insert(actions).values(**values, pack_id=pack_id, adhoc=adhoc, created=now)
        )


def workflow_repository(store: Store) -> WorkflowRepository:
    return SqlWorkflows(store)
