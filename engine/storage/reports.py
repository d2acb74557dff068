"""Reads for the reports over executions, events, enforcements and the audit log, and the
batched deletes of ``attune purge`` (SQLAlchemy Core; the hour bucket is spelled per dialect in
:mod:`engine.storage.buckets`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select

from engine.report_records import (
    HistoryFacts,
    HourCount,
    Purgeable,
    ReportsRepository,
    Series,
    WorkerLoad,
)
from engine.storage.buckets import hour_bucket
from engine.storage.store import Conn, Store
from engine.storage.tables import audit, deliveries, enforcements, events, executions

#: Each series: the time column it counts by, and the label it counts per (if any).
_SERIES: dict[Series, tuple[Any, Any]] = {
    "executions.created": (executions.c.created, None),
    "executions.started": (executions.c.started_at, None),
    "executions.finished": (executions.c.finished_at, executions.c.status),
    "events.received": (events.c.received_at, None),
    "enforcements.created": (enforcements.c.created, None),
}


async def _hourly(conn: Conn, series: Series, since: datetime, until: datetime) -> list[HourCount]:
    column, label = _SERIES[series]
    bucket = hour_bucket(column)
    keys: list[Any] = [bucket] if label is None else [bucket, label]
    where: list[ColumnElement[bool]] = [column >= since, column <= until]
    query = select(*keys, func.count()).where(*where).group_by(*keys).order_by(*keys)
    rows = (await conn.execute(query)).all()
    if label is None:
        return [HourCount(r[0], None, int(r[1])) for r in rows]
    return [HourCount(r[0], r[1], int(r[2])) for r in rows]


class SqlReports:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def hourly(
        self, series: Sequence[Series], since: datetime, until: datetime
    ) -> list[list[HourCount]]:
        async with self.store.read(offload=True) as conn:
            return [await _hourly(conn, one, since, until) for one in series]

    async def worker_loads(self, statuses: Sequence[str]) -> list[WorkerLoad]:
        query = (
            select(
                executions.c.worker,
                executions.c.status,
                func.count(),
                func.max(executions.c.heartbeat_at),
                func.min(executions.c.started_at),
            )
            .where(executions.c.status.in_(list(statuses)), executions.c.worker.is_not(None))
            .group_by(executions.c.worker, executions.c.status)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [
            WorkerLoad(
                worker=str(r[0]),
                status=str(r[1]),
                count=int(r[2]),
                last_heartbeat=r[3],
                first_started=r[4],
            )
            for r in rows
        ]

    async def history_facts(
        self, execution_id: int, created: datetime, until: datetime
    ) -> HistoryFacts | None:
        async with self.store.read() as conn:
            worker = (
                await conn.execute(
                    select(executions.c.worker).where(executions.c.id == execution_id)
                )
            ).first()
            if worker is None:
                return None
            # Bounded by the execution's lifetime, so the audit log's time index does the work.
            cancel_asked_at = (
                await conn.execute(
                    select(audit.c.at)
                    .where(
                        audit.c.at >= created,
                        audit.c.at <= until,
                        audit.c.execution_id == execution_id,
                        audit.c.verb == "cancel",
                        audit.c.outcome == "accepted",
                    )
                    .order_by(audit.c.at)
                    .limit(1)
                )
            ).scalar()
        return HistoryFacts(worker=worker.worker, cancel_asked_at=cancel_asked_at)

    async def purge_batch(
        self, what: Purgeable, cutoff: datetime, ended: Sequence[str], limit: int
    ) -> int:
        table: Any
        cascade: list[tuple[Any, Any]] = []
        if what == "executions":
            table = executions
            where = [executions.c.status.in_(list(ended)), executions.c.finished_at < cutoff]
            cascade = [(deliveries, deliveries.c.execution_id)]
        elif what == "events":
            table = events
            where = [events.c.processed_at.is_not(None), events.c.received_at < cutoff]
            cascade = [(enforcements, enforcements.c.event_id)]
        else:
            table = audit
            where = [audit.c.at < cutoff]
        async with self.store.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(table.c.id).where(*where).order_by(table.c.id).limit(limit)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return 0
            for child, column in cascade:
                await conn.execute(delete(child).where(column.in_(ids)))
            await conn.execute(delete(table).where(table.c.id.in_(ids)))
        return len(ids)


def reports_repository(store: Store) -> ReportsRepository:
    return SqlReports(store)
