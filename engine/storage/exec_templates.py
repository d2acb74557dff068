"""The ``execution_templates`` rows (:mod:`engine.template_records`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update

from engine.clock import now_utc
from engine.storage.store import Store
from engine.storage.tables import execution_templates as t
from engine.template_records import ExecTemplate, TemplateFields

_SELECT = select(t)


def _record(row: Any) -> ExecTemplate:
    return ExecTemplate(
        id=int(row.id),
        fields=TemplateFields(
            ref=row.ref,
            action_ref=row.action_ref,
            parameters=dict(row.parameters or {}),
            parameters_sealed=row.parameters_sealed,
            description=row.description or "",
            owner=row.owner,
        ),
        created=row.created,
        updated=row.updated,
    )


def _values(fields: TemplateFields) -> dict[str, Any]:
    return {
        "ref": fields.ref,
        "action_ref": fields.action_ref,
        "parameters": fields.parameters,
        "parameters_sealed": fields.parameters_sealed,
        "description": fields.description,
        "owner": fields.owner,
    }


class SqlTemplates:
    """:class:`engine.template_records.TemplateRepository` on either dialect."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, fields: TemplateFields) -> ExecTemplate:
        now = now_utc()
        async with self.store.write() as conn:
            await conn.execute(insert(t).values(**_values(fields), created=now, updated=now))
        found = await self.get(fields.ref)
        assert found is not None
        return found

    async def get(self, ref: str) -> ExecTemplate | None:
        async with self.store.read() as conn:
            row = (await conn.execute(_SELECT.where(t.c.ref == ref))).first()
        return None if row is None else _record(row)

    async def list(self) -> list[ExecTemplate]:
        async with self.store.read() as conn:
            rows = (await conn.execute(_SELECT.order_by(t.c.ref))).all()
        return [_record(r) for r in rows]

    async def replace(self, ref: str, fields: TemplateFields) -> ExecTemplate | None:
        async with self.store.write() as conn:
            done = await conn.execute(
                update(t).where(t.c.ref == ref).values(**_values(fields), updated=now_utc())
            )
        if not done.rowcount:
            return None
        return await self.get(fields.ref)

    async def delete(self, ref: str) -> bool:
        async with self.store.write() as conn:
            done = await conn.execute(delete(t).where(t.c.ref == ref))
        return bool(done.rowcount)


def template_repository(store: Store) -> SqlTemplates:
    return SqlTemplates(store)
