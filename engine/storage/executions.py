"""Executions and their outbox rows (``deliveries``): the repository of
:class:`engine.records.ExecutionRepository`, in SQLAlchemy Core.

:class:`CoreExecutions` holds the statements both dialects run alike (lists, counts, the
worker's sweeps); :mod:`engine.storage.sqlite_executions` runs the hot ones on the sqlite3
driver, :mod:`engine.storage.postgres_executions` folds a change and its outbox rows into one
statement. :func:`execution_repository` picks the store's.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    and_,
    bindparam,
    exists,
    false,
    func,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.sql.dml import ReturningUpdate

from engine.records import (
    Delivery,
    ExecutionFilter,
    ExecutionRepository,
    StoredExecution,
)
from engine.storage.store import Store
from engine.storage.tables import deliveries, executions
from engine.storage.totals import Totals

#: Columns of an execution, in the order of :class:`StoredExecution`'s fields.
EXECUTION_COLUMNS = tuple(executions.c.keys())
#: Columns of a delivery, in the order of :class:`Delivery`'s fields.
DELIVERY_COLUMNS = Delivery.__match_args__
assert StoredExecution.__match_args__ == EXECUTION_COLUMNS


def execution_repository(store: Store) -> ExecutionRepository:
    """The repository of ``store``'s dialect."""
    if store.is_sqlite:
        from engine.storage.sqlite_executions import SqliteExecutions

        return SqliteExecutions(store)
    from engine.storage.postgres_executions import PostgresExecutions

    return PostgresExecutions(store)


def stored(row: Any) -> StoredExecution:
    """A SQLAlchemy row of every execution column, as its record."""
    return StoredExecution(*row)


def delivery(row: Any) -> Delivery:
    """A SQLAlchemy row of :data:`DELIVERY_COLUMNS`, as its record."""
    return Delivery(*row)


def _open(state: ColumnElement[str]) -> ColumnElement[bool]:
    """``state IN ('pending', 'sending')`` with the values inline, as the partial indexes
    ``ix_deliveries_open_*`` are defined (a bound parameter would not match them)."""
    return state.in_([literal_column("'pending'"), literal_column("'sending'")])


_DELIVERY_C = [deliveries.c[name] for name in DELIVERY_COLUMNS]


def _claim_statements() -> tuple[Any, Any]:
    """Up to ``_limit`` due deliveries of ``_targets``, none behind an open earlier event of
    the same execution and target; and the update that takes those of ``_ids`` still due as
    ``sending`` until ``_lease_until``. Two statements: as one ``UPDATE ... WHERE id IN
    (SELECT ... LIMIT)``, PostgreSQL can plan a young table as a nested loop that runs the
    subquery again for every row (seen on the sweep's statement of that shape)."""
    now = bindparam("_now", type_=deliveries.c.next_attempt_at.type)
    earlier = deliveries.alias("earlier")
    blocked = exists().where(
        earlier.c.execution_id == deliveries.c.execution_id,
        earlier.c.target == deliveries.c.target,
        earlier.c.id < deliveries.c.id,
        _open(earlier.c.state),
    )
    due = and_(
        _open(deliveries.c.state),  # implied by the rest; lets the partial indexes serve
        deliveries.c.target.in_(bindparam("_targets", expanding=True)),
        or_(
            and_(deliveries.c.state == "pending", deliveries.c.next_attempt_at <= now),
            and_(deliveries.c.state == "sending", deliveries.c.lease_until < now),
        ),
    )
    candidates = (
        select(deliveries.c.id)
        .where(due, ~blocked)
        .order_by(deliveries.c.id)
        .limit(bindparam("_limit"))
    )
    take = (
        update(deliveries)
        .where(deliveries.c.id.in_(bindparam("_ids", expanding=True)), due)
        .values(
            state="sending",
            lease_until=bindparam("_lease_until", type_=deliveries.c.lease_until.type),
        )
        .returning(*_DELIVERY_C)
    )
    return candidates, take


CANDIDATES, TAKE = _claim_statements()
#: Deliveries that succeeded, settled together (one statement).
DELIVERED = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("_ids", expanding=True)), deliveries.c.state == "sending")
    .values(
        state="delivered",
        attempts=deliveries.c.attempts + 1,
        lease_until=None,
        last_error=None,
        delivered_at=bindparam("_now", type_=deliveries.c.delivered_at.type),
    )
)
RETRY = (
    update(deliveries)
    .where(deliveries.c.id == bindparam("_id"), deliveries.c.state == "sending")
    .values(
        state=bindparam("_state"),
        attempts=bindparam("_attempts"),
        lease_until=None,
        last_error=bindparam("_error"),
        next_attempt_at=bindparam("_next", type_=deliveries.c.next_attempt_at.type),
    )
)
RELEASE = (
    update(deliveries)
    .where(deliveries.c.id.in_(bindparam("_ids", expanding=True)), deliveries.c.state == "sending")
    .values(state="pending", lease_until=None)
)
SELECT_ONE = select(executions).where(executions.c.id == bindparam("_id"))
SELECT_MANY = select(executions).where(executions.c.id.in_(bindparam("_ids", expanding=True)))
SELECT_BY_KEY = select(executions).where(executions.c.idempotency_key == bindparam("_key"))


def where_clauses(where: ExecutionFilter) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = []
    if where.status:
        clauses.append(executions.c.status.in_(where.status))
    if where.action_ref:
        clauses.append(executions.c.action_ref == where.action_ref)
    if where.enforcement is not None:
        clauses.append(executions.c.enforcement == where.enforcement)
    if where.parent is not None:
        clauses.append(executions.c.parent == where.parent)
    if where.original_execution is not None:
        clauses.append(executions.c.original_execution == where.original_execution)
    if where.top_level_only:
        clauses.append(executions.c.parent.is_(None))
    if where.pack:
        escaped = where.pack.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        clauses.append(executions.c.action_ref.like(f"{escaped}.%", escape="\\"))
    if where.requester:
        clauses.append(executions.c.executor["identity"].as_string() == where.requester)
    if where.person:
        clauses.append(
            or_(
                executions.c.executor["identity"].as_string() == where.person,
                executions.c.executor["user_name"].as_string() == where.person,
            )
        )
    if where.action_like is not None:  # only actions matching one of these LIKE patterns
        clauses.append(
            or_(false(), *(executions.c.action_ref.like(p, escape="\\") for p in where.action_like))
        )
    return clauses


def claim_oldest_requested(
    limit: int, worker_id: str, now: datetime, *, skip_locked: bool
) -> ReturningUpdate[Any]:
    """Move up to ``limit`` of the oldest ``requested`` executions to ``running`` for
    ``worker_id``, returning their rows (a worker claiming from the database while the broker
    is away); ``skip_locked`` passes over rows another claim holds (PostgreSQL). Runs held by
    a concurrency policy are left to their slots (engine/concurrency_slots.py)."""
    pick = (
        select(executions.c.id)
        .where(executions.c.status == "requested", executions.c.concurrency_key.is_(None))
        .order_by(executions.c.id)
        .limit(limit)
    )
    if skip_locked:
        pick = pick.with_for_update(skip_locked=True)
    return (
        update(executions)
        .where(executions.c.id.in_(pick.scalar_subquery()), executions.c.status == "requested")
        .values(status="running", updated=now, started_at=now, worker=worker_id, heartbeat_at=now)
        .returning(*executions.c)
    )


class CoreExecutions:
    """What both dialects run alike, in SQLAlchemy Core (the hot statements are the
    subclasses')."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.totals = Totals(store)

    async def _one(self, statement: Any, params: Mapping[str, Any]) -> StoredExecution | None:
        async with self.store.read() as conn:
            row = (await conn.execute(statement, params)).first()
        return None if row is None else stored(row)

    async def get(self, execution_id: int) -> StoredExecution | None:
        return await self._one(SELECT_ONE, {"_id": execution_id})

    async def get_many(self, execution_ids: Sequence[int]) -> list[StoredExecution]:
        if not execution_ids:
            return []
        async with self.store.read() as conn:
            rows = (await conn.execute(SELECT_MANY, {"_ids": list(execution_ids)})).all()
        return [stored(r) for r in rows]

    async def find_by_key(self, idempotency_key: str) -> StoredExecution | None:
        return await self._one(SELECT_BY_KEY, {"_key": idempotency_key})

    async def list(
        self, where: ExecutionFilter, *, limit: int, offset: int
    ) -> builtins.list[StoredExecution]:
        query: Select[Any] = (
            select(executions)
            .where(*where_clauses(where))
            .order_by(executions.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.store.read(offload=True) as conn:
            rows = (await conn.execute(query)).all()
        return [stored(r) for r in rows]

    async def count(self, where: ExecutionFilter) -> int:
        return await self.totals.count(executions, where_clauses(where), where)

    async def count_by_status(self) -> dict[str, int]:
        async with self.store.read(offload=True) as conn:
            rows = (
                await conn.execute(
                    select(executions.c.status, func.count()).group_by(executions.c.status)
                )
            ).all()
        return {status: int(n) for status, n in rows}

    async def record_process(self, execution_id: int, pid: int, pid_start: int | None) -> None:
        async with self.store.write(single=True) as conn:
            await conn.execute(
                update(executions)
                .where(executions.c.id == execution_id)
                .values(pid=pid, pid_start=pid_start)
            )

    async def heartbeat(
        self, worker_id: str, live: Sequence[str], now: datetime
    ) -> builtins.list[tuple[int, str]]:
        async with self.store.write(single=True) as conn:
            rows = (
                await conn.execute(
                    update(executions)
                    .where(executions.c.worker == worker_id, executions.c.status.in_(live))
                    .values(heartbeat_at=now)
                    .returning(executions.c.id, executions.c.status)
                )
            ).all()
        return [(r.id, r.status) for r in rows]

    async def live_runs(
        self, live: Sequence[str], *, silent_since: datetime | None, workers: Sequence[str] | None
    ) -> builtins.list[tuple[int, str | None]]:
        where: builtins.list[ColumnElement[bool]] = [executions.c.status.in_(live)]
        if silent_since is not None:
            where.append(executions.c.heartbeat_at < silent_since)
        if workers is not None:
            where.append(executions.c.worker.in_(workers))
        async with self.store.read() as conn:
            rows = (
                await conn.execute(select(executions.c.id, executions.c.worker).where(*where))
            ).all()
        return [(r.id, r.worker) for r in rows]

    async def workers_with_runs(self, live: Sequence[str]) -> builtins.list[str]:
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(executions.c.worker)
                    .distinct()
                    .where(executions.c.status.in_(live), executions.c.worker.is_not(None))
                )
            ).all()
        return [r.worker for r in rows]

    async def deliveries(self, execution_id: int) -> builtins.list[Delivery]:
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(*_DELIVERY_C)
                    .where(deliveries.c.execution_id == execution_id)
                    .order_by(deliveries.c.id)
                )
            ).all()
        return [delivery(r) for r in rows]

    async def requeue_stale(
        self, status: str, cutoff: datetime, limit: int, now: datetime
    ) -> builtins.list[tuple[int, str]]:
        # Of the runs held by a concurrency policy, only each group's oldest: the others wait
        # for it (engine/concurrency_slots.py), and ringing them would only be refused.
        waiting = executions.alias("waiting")
        heads = (
            select(func.min(waiting.c.id))
            .where(waiting.c.concurrency_key.is_not(None), waiting.c.status == status)
            .group_by(waiting.c.concurrency_key)
        )
        is_stale = (
            executions.c.status == status,
            executions.c.updated < cutoff,
            or_(executions.c.concurrency_key.is_(None), executions.c.id.in_(heads)),
        )
        # The ids first, then the update by id: as one ``UPDATE ... WHERE id IN (SELECT ...
        # LIMIT)`` PostgreSQL planned a young table (no statistics yet) as a nested loop that
        # re-ran the subquery per row (measured: 0.3 s for 650 requested rows, every sweep).
        async with self.store.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(executions.c.id)
                        .where(*is_stale)
                        .order_by(executions.c.id)
                        .limit(limit)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return []
            rows = (
                await conn.execute(
                    update(executions)
                    .where(executions.c.id.in_(ids), *is_stale)
                    .values(updated=now)
                    .returning(executions.c.id, executions.c.action_ref)
                )
            ).all()
        return [(r.id, r.action_ref) for r in rows]

    # -- the outbox -------------------------------------------------------------------------

    async def due_deliveries(
        self, targets: Sequence[str], now: datetime, limit: int
    ) -> builtins.list[int]:
        async with self.store.read() as conn:
            ids = (
                await conn.execute(
                    CANDIDATES, {"_now": now, "_targets": list(targets), "_limit": limit}
                )
            ).scalars()
            return list(ids)

    async def take_deliveries(
        self, ids: Sequence[int], targets: Sequence[str], now: datetime, lease_until: datetime
    ) -> builtins.list[Delivery]:
        params = {
            "_now": now,
            "_targets": list(targets),
            "_ids": list(ids),
            "_lease_until": lease_until,
        }
        async with self.store.write(single=True) as conn:
            rows = (await conn.execute(TAKE, params)).all()
        return [delivery(r) for r in rows]

    async def delivered(self, ids: Sequence[int], now: datetime) -> None:
        async with self.store.write(single=True) as conn:
            await conn.execute(DELIVERED, {"_ids": list(ids), "_now": now})

    async def retry_delivery(
        self,
        delivery_id: int,
        *,
        state: str,
        attempts: int,
        error: str,
        next_attempt_at: datetime,
    ) -> None:
        params = {
            "_id": delivery_id,
            "_state": state,
            "_attempts": attempts,
            "_error": error,
            "_next": next_attempt_at,
        }
        async with self.store.write(single=True) as conn:
            await conn.execute(RETRY, params)

    async def release_deliveries(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self.store.write(single=True) as conn:
            await conn.execute(RELEASE, {"_ids": list(ids)})
