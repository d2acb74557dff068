"""The ``action_aliases`` rows (:mod:`engine.aliases.records`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select, update

from engine.aliases.records import Alias
from engine.clock import now_utc
from engine.errors import Conflict
from engine.storage.store import Store
from engine.storage.tables import action_aliases as t

_SELECT = select(t)


def _record(row: Any) -> Alias:
    return Alias(
        id=int(row.id),
        ref=row.ref,
        pack_ref=row.pack_ref,
        name=row.name,
        action_ref=row.action_ref,
        description=row.description or "",
        enabled=bool(row.enabled),
        formats=list(row.formats or []),
        ack=row.ack,
        result=row.result,
        extra=row.extra,
        immutable_parameters=row.immutable_parameters,
        adhoc=bool(row.adhoc),
        created=row.created,
        updated=row.updated,
    )


class SqlAliases:
    """Aliases on either dialect; each method is one statement or transaction. ``fields`` are
    :func:`engine.aliases.records.stored_fields`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list_aliases(self, pack_ref: str | None = None) -> list[Alias]:
        query = _SELECT.order_by(t.c.ref)
        if pack_ref is not None:
            query = query.where(t.c.pack_ref == pack_ref)
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def get(self, ref: str) -> Alias | None:
        async with self.store.read() as conn:
            row = (await conn.execute(_SELECT.where(t.c.ref == ref))).first()
        return None if row is None else _record(row)

    async def add(self, fields: dict[str, Any]) -> Alias:
        """A new alias made over the API; Conflict when its ref is taken."""
        now = now_utc()
        async with self.store.write() as conn:
            taken = (await conn.execute(select(t.c.id).where(t.c.ref == fields["ref"]))).first()
            if taken is not None:
                raise Conflict(f"alias '{fields['ref']}' already exists")
            await conn.execute(insert(t).values(**fields, adhoc=True, created=now, updated=now))
        found = await self.get(fields["ref"])
        assert found is not None
        return found

    async def replace(self, ref: str, fields: dict[str, Any]) -> Alias | None:
        """New fields for ``ref`` (None when there is no such alias); its ref stays."""
        values = {k: v for k, v in fields.items() if k not in ("ref", "pack_ref", "name")}
        async with self.store.write() as conn:
            done = await conn.execute(
                update(t).where(t.c.ref == ref).values(**values, updated=now_utc())
            )
        if not done.rowcount:
            return None
        return await self.get(ref)

    async def delete(self, ref: str) -> bool:
        async with self.store.write() as conn:
            done = await conn.execute(delete(t).where(t.c.ref == ref))
        return bool(done.rowcount)

    async def sync_pack(self, pack_ref: str, specs: list[dict[str, Any]]) -> None:
        """The pack's folder is the truth for its aliases: those in ``specs`` are written (an
        API-made one of the same ref is replaced), its other aliases from disk go, those made
        over the API stay. One transaction."""
        now = now_utc()
        refs = [s["ref"] for s in specs]
        async with self.store.write() as conn:
            await conn.execute(
                delete(t).where(
                    t.c.pack_ref == pack_ref, t.c.adhoc.is_(False), t.c.ref.not_in(refs)
                )
            )
            existing = {
                r.ref for r in (await conn.execute(select(t.c.ref).where(t.c.ref.in_(refs)))).all()
            }
            for fields in specs:
                if fields["ref"] in existing:
                    await conn.execute(
                        update(t)
                        .where(t.c.ref == fields["ref"])
                        .values(**fields, adhoc=False, updated=now)
                    )
                else:
                    await conn.execute(
                        insert(t).values(**fields, adhoc=False, created=now, updated=now)
                    )


def alias_repository(store: Store) -> SqlAliases:
    return SqlAliases(store)
