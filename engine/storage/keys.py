"""The key-value store's repository on SQLAlchemy Core (the same statements on every dialect)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Row, Table, and_, delete, func, insert, or_, select, update

from engine.clock import now_utc
from engine.key_records import KeyChange, KeyContent, KeyRepository, KeyValue, NewKey
from engine.storage.store import Conn, Store
from engine.storage.tables import actions, keys, packs, users


def live_clause() -> ColumnElement[bool]:
    """Keys whose TTL has not run out."""
    return or_(keys.c.expires_at.is_(None), keys.c.expires_at > now_utc())


def _key(row: Row[Any]) -> KeyValue:
    m = row._mapping
    return KeyValue(
        id=int(m["id"]),
        ref=m["ref"],
        owner_type=m["owner_type"],
        owner=m["owner"],
        owner_identity=m["owner_identity"],
        owner_pack=m["owner_pack"],
        owner_pack_ref=m["owner_pack_ref"],
        owner_action=m["owner_action"],
        owner_action_ref=m["owner_action_ref"],
        owner_sensor=m["owner_sensor"],
        owner_sensor_ref=m["owner_sensor_ref"],
        name=m["name"],
        encrypted=bool(m["encrypted"]),
        value=m["value"],
        sealed=m["sealed"],
        expires_at=m["expires_at"],
        created=m["created"],
        updated=m["updated"],
    )


def _content(content: KeyContent) -> dict[str, Any]:
    return {"encrypted": content.encrypted, "value": content.value, "sealed": content.sealed}


def _new(key: NewKey) -> dict[str, Any]:
    return {
        "ref": key.ref,
        "owner_type": key.owner_type,
        "owner": key.owner,
        "owner_identity": key.owner_identity,
        "owner_pack": key.owner_pack,
        "owner_pack_ref": key.owner_pack_ref,
        "owner_action": key.owner_action,
        "owner_action_ref": key.owner_action_ref,
        "owner_sensor": key.owner_sensor,
        "owner_sensor_ref": key.owner_sensor_ref,
        "name": key.name,
        **_content(key.content),
        "expires_at": key.expires_at,
        "created": key.created,
        "updated": key.created,
    }


def _changes(change: KeyChange) -> dict[str, Any]:
    values: dict[str, Any] = {"updated": change.updated}
    if change.name is not None:
        values["name"] = change.name
    if change.content is not None:
        values.update(_content(change.content))
    if change.set_expiry:
        values["expires_at"] = change.expires_at
    return values


class SqlKeys:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def page(
        self,
        *,
        identity: int | None,
        owner_type: str | None,
        owner: str | None,
        now: datetime,
        page: int,
        per_page: int,
    ) -> tuple[list[KeyValue], int]:
        mine: ColumnElement[bool] = keys.c.owner_type != "identity"
        if identity is not None:
            mine = or_(mine, keys.c.owner_identity == identity)
        live = or_(keys.c.expires_at.is_(None), keys.c.expires_at > now)
        where = [live, mine]
        if owner_type:
            where.append(keys.c.owner_type == owner_type)
        if owner:
            where.append(keys.c.owner == owner)
        query = (
            select(keys)
            .where(*where)
            .order_by(keys.c.ref)
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
            total = (
                await conn.execute(select(func.count()).select_from(keys).where(*where))
            ).scalar_one()
        return [_key(r) for r in rows], int(total)

    async def by_ref(self, ref: str) -> KeyValue | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(keys).where(keys.c.ref == ref))).first()
        return None if row is None else _key(row)

    async def drop_if_expired(self, key_id: int, now: datetime) -> None:
        async with self.store.write(single=True) as conn:
            await conn.execute(delete(keys).where(keys.c.id == key_id, keys.c.expires_at <= now))

    async def add(self, conn: Conn, key: NewKey) -> KeyValue | None:
        expired = and_(keys.c.ref == key.ref, keys.c.expires_at <= key.created)
        await conn.execute(delete(keys).where(expired))
        if (await conn.execute(select(keys.c.id).where(keys.c.ref == key.ref))).first():
            return None
        inserted = insert(keys).values(_new(key)).returning(*keys.c)
        return _key((await conn.execute(inserted)).one())

    async def change(self, conn: Conn, key_id: int, change: KeyChange) -> KeyValue | None:
        row = (
            await conn.execute(
                update(keys).where(keys.c.id == key_id).values(_changes(change)).returning(*keys.c)
            )
        ).first()
        return None if row is None else _key(row)

    async def remove(self, conn: Conn, key_id: int) -> bool:
        gone = await conn.execute(delete(keys).where(keys.c.id == key_id))
        return bool(gone.rowcount)

    async def purge_expired(self, now: datetime) -> int:
        async with self.store.write(single=True) as conn:
            gone = await conn.execute(delete(keys).where(keys.c.expires_at <= now))
        return int(gone.rowcount or 0)

    async def user_id(self, login: str) -> int | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(users.c.id).where(users.c.login == login))).first()
        return None if row is None else int(row.id)

    async def pack_id(self, ref: str) -> int | None:
        return await self._id_of(packs, ref)

    async def action_id(self, ref: str) -> int | None:
        return await self._id_of(actions, ref)

    async def _id_of(self, table: Table, ref: str) -> int | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(table.c.id).where(table.c.ref == ref))).first()
        return None if row is None else int(row.id)


def key_repository(store: Store) -> KeyRepository:
    return SqlKeys(store)
