"""Reads behind the change stream (:mod:`engine.changes`) and the outbox gauges of
``/metrics``: executions in ``(updated, id)`` order past a point (index
``ix_executions_updated_id``), and the open or failed deliveries counted by sink."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, func, select, tuple_

from engine.records import StoredExecution
from engine.storage.executions import stored
from engine.storage.store import Store
from engine.storage.tables import deliveries, executions

_AFTER = tuple_(executions.c.updated, executions.c.id) > tuple_(
    bindparam("_updated", type_=executions.c.updated.type), bindparam("_id")
)
_ORDER = (executions.c.updated, executions.c.id)
SINCE = select(executions).where(_AFTER).order_by(*_ORDER).limit(bindparam("_limit"))
#: The same, ids and times only (read from the index alone).
KEYS_SINCE = (
    select(executions.c.id, executions.c.updated)
    .where(_AFTER)
    .order_by(*_ORDER)
    .limit(bindparam("_limit"))
)
BY_IDS = select(executions).where(executions.c.id.in_(bindparam("_ids", expanding=True)))
SINCE_ONE = (
    select(executions)
    .where(_AFTER, executions.c.id == bindparam("_only"))
    .order_by(*_ORDER)
    .limit(bindparam("_limit"))
)
#: Deliveries not yet delivered, and those given up on, by target and state (the
#: ``ix_deliveries_state_next`` index serves the state range; delivered rows are not read).
DELIVERY_TOTALS = (
    select(deliveries.c.target, deliveries.c.state, func.count())
    .where(deliveries.c.state.in_(("pending", "sending", "failed")))
    .group_by(deliveries.c.target, deliveries.c.state)
)


class ExecutionChanges:
    """Executions changed past a point, oldest change first."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def after(
        self,
        updated: datetime,
        execution_id: int,
        limit: int,
        *,
        only: int | None = None,
    ) -> list[StoredExecution]:
        """Up to ``limit`` executions whose ``(updated, id)`` is past ``(updated,
        execution_id)``, in that order; ``only``: that execution alone."""
        params = {"_updated": updated, "_id": execution_id, "_limit": limit}
        statement = SINCE
        if only is not None:
            statement, params["_only"] = SINCE_ONE, only
        async with self.store.read() as conn:
            rows = (await conn.execute(statement, params)).all()
        return [stored(r) for r in rows]

    async def keys_after(
        self, updated: datetime, execution_id: int, limit: int
    ) -> list[tuple[int, datetime]]:
        """:meth:`after`'s ``(id, updated)`` pairs only."""
        params = {"_updated": updated, "_id": execution_id, "_limit": limit}
        async with self.store.read() as conn:
            rows = (await conn.execute(KEYS_SINCE, params)).all()
        return [(r.id, r.updated) for r in rows]

    async def rows(self, ids: list[int]) -> list[StoredExecution]:
        """The executions of ``ids`` (those that still exist), in no order."""
        if not ids:
            return []
        async with self.store.read() as conn:
            found = (await conn.execute(BY_IDS, {"_ids": ids})).all()
        return [stored(r) for r in found]


async def delivery_totals(store: Store) -> dict[tuple[str, str], int]:
    """``{(target, state): count}`` of deliveries pending, sending or failed."""
    async with store.read(offload=True) as conn:
        rows = (await conn.execute(DELIVERY_TOTALS)).all()
    return {(target, state): int(n) for target, state, n in rows}
