"""Reads behind the change stream (:mod:`engine.changes`) and the outbox gauges of
``/metrics``: executions in ``(updated, id)`` order past a point (found through the indexes
every change writes anyway, and the partial ``ix_executions_finished_at``), and the open or
failed deliveries counted by sink."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, select, tuple_, union

from engine.records import StoredExecution
from engine.status import ExecutionStatus
from engine.storage.executions import stored
from engine.storage.store import Store
from engine.storage.tables import deliveries, executions

_AFTER = tuple_(executions.c.updated, executions.c.id) > tuple_(
    bindparam("_updated", type_=executions.c.updated.type), bindparam("_id")
)
#: How far before the mark a creation or an end is looked for: ``created`` and ``finished_at``
#: are stamped with the change that sets them, a moment before its ``updated``.
_STAMP_SLACK = timedelta(seconds=60)
_SINCE = bindparam("_since", type_=executions.c.updated.type)
#: Statuses an execution can leave (changes to it come while it holds one of them).
_ACTIVE = sorted(s.value for s in ExecutionStatus if not s.is_terminal)


def _changed(*columns: Any) -> Any:
    """The executions changed past the mark, without an index on ``updated`` (which would cost
    every status change a write): a change made since is the creation of the execution
    (``ix_executions_created``), its end (the partial ``ix_executions_finished_at``), or a move
    of one that has not ended (``ix_executions_status_id``; few)."""
    created = select(*columns).where(executions.c.created > _SINCE, _AFTER)
    ended = select(*columns).where(executions.c.finished_at > _SINCE, _AFTER)
    active = select(*columns).where(executions.c.status.in_(_ACTIVE), _AFTER)
    return union(created, ended, active).subquery()


_KEYS = _changed(executions.c.id, executions.c.updated)
#: ``(id, updated)`` of the executions changed past the mark, oldest change first.
KEYS_SINCE = (
    select(_KEYS.c.id, _KEYS.c.updated)
    .order_by(_KEYS.c.updated, _KEYS.c.id)
    .limit(bindparam("_limit"))
)
BY_IDS = select(executions).where(executions.c.id.in_(bindparam("_ids", expanding=True)))
SINCE_ONE = (
    select(executions)
    .where(_AFTER, executions.c.id == bindparam("_only"))
    .order_by(executions.c.updated, executions.c.id)
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
        if only is not None:
            params = {"_updated": updated, "_id": execution_id, "_limit": limit, "_only": only}
            async with self.store.read() as conn:
                rows = (await conn.execute(SINCE_ONE, params)).all()
            return [stored(r) for r in rows]
        keys = await self.keys_after(updated, execution_id, limit)
        found = {r.id: r for r in await self.rows([i for i, _ in keys])}
        return [found[i] for i, _ in keys if i in found]

    async def keys_after(
        self, updated: datetime, execution_id: int, limit: int
    ) -> list[tuple[int, datetime]]:
        """:meth:`after`'s ``(id, updated)`` pairs only."""
        params = {
            "_updated": updated,
            "_id": execution_id,
            "_since": updated - _STAMP_SLACK,
            "_limit": limit,
        }
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
