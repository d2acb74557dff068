"""The audit log's repository on SQLAlchemy Core: entries, Attune's filters over them, and the
chat requests waiting for confirmation (the same statements on every dialect)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Row, and_, false, insert, not_, or_, select, update

from engine.audit_records import (
    AUTH_VERBS,
    EXECUTION_VERBS,
    KEY_PREFIX,
    SUCCESS,
    AuditEntry,
    AuditFilter,
    AuditRecord,
    AuditRepository,
    Confirmation,
    ConfirmationRepository,
)
from engine.storage.store import Conn, Store
from engine.storage.tables import audit, confirmations, users
from engine.storage.totals import Totals

_c = audit.c
_IS_EXECUTION = _c.verb.in_(EXECUTION_VERBS)
_IS_AUTH = _c.verb.in_(AUTH_VERBS)
_IS_SECRET = _c.verb.startswith(KEY_PREFIX, autoescape=True)
_OTHER = not_(or_(_IS_EXECUTION, _IS_AUTH, _IS_SECRET))
_IS_RBAC = and_(_OTHER, _c.outcome == "denied")
_BY_CATEGORY: dict[str, ColumnElement[bool]] = {
    "execution": _IS_EXECUTION,
    "auth": _IS_AUTH,
    "secret": _IS_SECRET,
    "rbac": _IS_RBAC,
    "api": and_(_OTHER, _c.outcome != "denied"),
    "admin": false(),
    "pack": false(),
}
_BY_OUTCOME: dict[str, ColumnElement[bool]] = {
    "success": _c.outcome.in_(SUCCESS),
    "denied": _c.outcome == "denied",
    "failure": not_(_c.outcome.in_((*SUCCESS, "denied"))),
}
_BY_RESOURCE: dict[str, ColumnElement[bool]] = {
    "execution": or_(_c.execution_id.is_not(None), _IS_EXECUTION),
    "key": and_(_c.execution_id.is_(None), _IS_SECRET),
    "identity": and_(_c.execution_id.is_(None), _IS_AUTH),
}


def _event_type(value: str) -> ColumnElement[bool]:
    if value == "rbac.denied":
        return _IS_RBAC
    kind, _, verb = value.partition(".")
    if kind not in _BY_CATEGORY or not verb:
        return false()
    verbs = {verb, verb.replace("_", "-")}
    return and_(_BY_CATEGORY[kind], _c.verb.in_(sorted(verbs)))


def conditions(f: AuditFilter) -> list[ColumnElement[bool]]:
    """A filter as conditions on the audit table (Attune's first, in the order of its query)."""
    where: list[ColumnElement[bool]] = []
    if f.category is not None:
        where.append(_BY_CATEGORY.get(f.category, false()))
    if f.attune_outcome is not None:
        where.append(_BY_OUTCOME.get(f.attune_outcome, false()))
    if f.event_type is not None:
        where.append(_event_type(f.event_type))
    if f.actor_contains is not None:
        where.append(_c.actor.icontains(f.actor_contains, autoescape=True))
    if f.actor_identity is not None:
        where.append(_c.actor.in_(select(users.c.login).where(users.c.id == f.actor_identity)))
    if f.resource_type is not None:
        where.append(_BY_RESOURCE.get(f.resource_type, false()))
    if f.resource_ref is not None:
        where.append(and_(_c.target == f.resource_ref, not_(_IS_RBAC)))
    if f.execution_id is not None:
        where.append(_c.execution_id == f.execution_id)
    if f.path_contains is not None:
        where.append(and_(_IS_RBAC, _c.target.icontains(f.path_contains, autoescape=True)))
    if f.http_status is not None:
        where.append(_IS_RBAC if f.http_status == 403 else false())
    if f.nothing:
        where.append(false())
    if f.actor is not None:
        where.append(_c.actor == f.actor)
    if f.verb is not None:
        where.append(_c.verb == f.verb)
    if f.outcome is not None:
        where.append(_c.outcome == f.outcome)
    if f.since is not None:
        where.append(_c.at >= f.since)
    if f.before is not None:
        where.append(_c.at < f.before)
    return where


def _record(row: Row[Any]) -> AuditRecord:
    m = row._mapping
    return AuditRecord(
        id=int(m["id"]),
        at=m["at"],
        actor=m["actor"],
        role=m["role"],
        source=m["source"],
        channel=m["channel"],
        verb=m["verb"],
        target=m["target"],
        parameters=m["parameters"],
        outcome=m["outcome"],
        detail=m["detail"],
        execution_id=m["execution_id"],
    )


class SqlAudit:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.totals = Totals(store)

    async def add(self, entry: AuditEntry, conn: Conn | None = None) -> None:
        if conn is not None:
            await conn.execute(insert(audit).values(**entry.values()))
            return
        async with self.store.write() as own:
            await own.execute(insert(audit).values(**entry.values()))

    async def page(self, where: AuditFilter, page: int, per_page: int) -> list[AuditRecord]:
        query = (
            select(audit)
            .where(*conditions(where))
            .order_by(audit.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.store.read(offload=True) as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def total(self, where: AuditFilter) -> int:
        return await self.totals.count(audit, conditions(where), ("audit", where))

    async def get(self, ident: int) -> AuditRecord | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(audit).where(audit.c.id == ident))).first()
        return None if row is None else _record(row)

    async def identities(self, logins: set[str]) -> dict[str, int]:
        if not logins:
            return {}
        query = select(users.c.login, users.c.id).where(users.c.login.in_(sorted(logins)))
        async with self.store.read() as conn:
            return {str(r[0]): int(r[1]) for r in (await conn.execute(query)).all()}


class SqlConfirmations:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def add(self, conn: Conn, confirmation: Confirmation) -> None:
        c = confirmation
        await conn.execute(
            insert(confirmations).values(
                code=c.code,
                action_ref=c.action_ref,
                sealed=c.sealed,
                config=c.config,
                requester=c.requester,
                executor=c.executor,
                chat=c.chat,
                state=c.state,
                expires_at=c.expires_at,
                created=c.created,
            )
        )

    async def get(self, code: str) -> Confirmation | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(select(confirmations).where(confirmations.c.code == code))
            ).first()
        if row is None:
            return None
        return Confirmation(
            code=row.code,
            action_ref=row.action_ref,
            sealed=row.sealed,
            config=row.config,
            requester=row.requester,
            executor=row.executor,
            chat=row.chat,
            state=row.state,
            expires_at=row.expires_at,
            created=row.created,
            execution_id=row.execution_id,
        )

    async def settle(self, code: str, state: str) -> bool:
        async with self.store.write() as conn:
            result = await conn.execute(
                update(confirmations)
                .where(confirmations.c.code == code, confirmations.c.state == "pending")
                .values(state=state)
            )
        return bool(result.rowcount)

    async def ran(self, code: str, execution_id: int) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                update(confirmations)
                .where(confirmations.c.code == code)
                .values(execution_id=execution_id)
            )


def audit_repository(store: Store) -> AuditRepository:
    return SqlAudit(store)


def confirmation_repository(store: Store) -> ConfirmationRepository:
    return SqlConfirmations(store)
