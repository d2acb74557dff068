"""``attune purge``: keep the tables bounded. Deletes ended executions (their deliveries go with
them), processed events and their enforcements, and audit entries, older than a cutoff, in
batches so no transaction holds the database for long."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

from engine.status import TERMINAL
from engine.storage import Store
from engine.storage.tables import audit, deliveries, enforcements, events, executions, now_utc

#: Rows deleted per transaction.
BATCH = 5000


async def _delete_in_batches(
    store: Store, table: Any, where: list[Any], cascade: list[tuple[Any, Any]] | None = None
) -> int:
    total = 0
    while True:
        async with store.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(table.c.id).where(*where).order_by(table.c.id).limit(BATCH)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return total
            for child, column in cascade or []:
                await conn.execute(delete(child).where(column.in_(ids)))
            await conn.execute(delete(table).where(table.c.id.in_(ids)))
        total += len(ids)


async def purge(
    store: Store, older_than_days: float, *, include_audit: bool = False
) -> dict[str, int]:
    """Delete what ended more than ``older_than_days`` ago; return the counts per table."""
    cutoff = now_utc() - timedelta(days=older_than_days)
    ended = [s.value for s in TERMINAL]
    counts = {
        "executions": await _delete_in_batches(
            store,
            executions,
            [executions.c.status.in_(ended), executions.c.finished_at < cutoff],
            cascade=[(deliveries, deliveries.c.execution_id)],
        ),
        "events": await _delete_in_batches(
            store,
            events,
            [events.c.processed_at.is_not(None), events.c.received_at < cutoff],
            cascade=[(enforcements, enforcements.c.event_id)],
        ),
    }
    if include_audit:
        counts["audit"] = await _delete_in_batches(store, audit, [audit.c.at < cutoff])
    return counts
