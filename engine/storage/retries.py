"""The retry chain's statements (engine/retries.py), in SQLAlchemy Core on every dialect.

An ended run whose retry is due carries ``retry_due_at`` (written by the statement that ended
it). Taking the retry is one transaction: the conditional clear of ``retry_due_at`` (``WHERE
retry_due_at IS NOT NULL``: of any number of sweeps, and of a cancel racing them, exactly one
clears it) and, only for the one that cleared it, the insert of the new execution with its
audit entry and its chat card's outbox row, as a submission writes them. A process that dies
between the two leaves both undone: the retry stays due and the next sweep takes it.

The retries are rare (transient failures of actions with ``max_retries``): these statements
are written for clarity, not for the hot path's speed.
"""

from __future__ import annotations

import builtins
import dataclasses
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import insert, select, update

from engine.audit_records import AuditEntry
from engine.records import NEW_EXECUTION_COLUMNS, NewExecution, StoredExecution, chat_target
from engine.storage.audit import audit_repository
from engine.storage.executions import stored
from engine.storage.store import Store
from engine.storage.tables import deliveries, executions

#: Builds the retry of an ended run (None: not retried after all) and its audit entry.
Build = Callable[[StoredExecution], tuple[NewExecution, AuditEntry] | None]


def retry_repository(store: Store) -> RetryRepository:
    """The retry marks' repository of ``store`` (the same statements on every dialect)."""
    return RetryRepository(store)


class RetryRepository:
    """Due retries: find them, take one (clear and submit, atomically), call one off."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.audit = audit_repository(store)

    async def due(self, now: datetime, limit: int) -> builtins.list[StoredExecution]:
        """Up to ``limit`` ended runs whose retry is due by ``now``, soonest first (through
        the partial index on ``retry_due_at``)."""
        query = (
            select(executions)
            .where(executions.c.retry_due_at.is_not(None), executions.c.retry_due_at <= now)
            .order_by(executions.c.retry_due_at, executions.c.id)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [stored(r) for r in rows]

    async def take(
        self, execution_id: int, build: Build
    ) -> tuple[StoredExecution, StoredExecution | None] | None:
        """Clear the due retry of ``execution_id`` and, in the same transaction, record the
        execution ``build`` makes of the cleared row (its audit entry and chat card with it).
        None when the retry was no longer pending (another sweep took it, a cancel called it
        off); ``(ended, None)`` when ``build`` declined (the retry is dropped)."""
        clear = (
            update(executions)
            .where(executions.c.id == execution_id, executions.c.retry_due_at.is_not(None))
            .values(retry_due_at=None)
            .returning(*executions.c)
        )
        async with self.store.write() as conn:
            row = (await conn.execute(clear)).first()
            if row is None:
                return None
            ended = stored(row)
            built = build(ended)
            if built is None:
                return ended, None
            new, entry = built
            values = {name: getattr(new, name) for name in NEW_EXECUTION_COLUMNS}
            made = stored(
                (
                    await conn.execute(insert(executions).values(values).returning(*executions.c))
                ).one()
            )
            target = chat_target(new.chat)
            if target is not None:
                await conn.execute(
                    insert(deliveries).values(
                        execution_id=made.id,
                        target=target,
                        event="created",
                        state="pending",
                        attempts=0,
                        next_attempt_at=new.created,
                        created=new.created,
                    )
                )
            entry = dataclasses.replace(entry, execution_id=made.id, parameters=made.config)
            await self.audit.add(entry, conn)
        return ended, made

    async def call_off(self, execution_id: int) -> StoredExecution | None:
        """Clear the pending retry of ``execution_id``: its row, or None when none was
        pending (none was due, or a sweep already took it)."""
        clear = (
            update(executions)
            .where(executions.c.id == execution_id, executions.c.retry_due_at.is_not(None))
            .values(retry_due_at=None)
            .returning(*executions.c)
        )
        async with self.store.write(single=True) as conn:
            row = (await conn.execute(clear)).first()
        return None if row is None else stored(row)

    async def retry_of(self, ended: StoredExecution) -> int | None:
        """The id of the retry submitted for the ended run, if any: the next run of its chain
        (same original, one more retry), a later run of the same action (so the search walks
        the index on ``(action_ref, id)`` from the ended run on, not the table)."""
        original = ended.original_execution or ended.id
        query = (
            select(executions.c.id)
            .where(
                executions.c.action_ref == ended.action_ref,
                executions.c.id > ended.id,
                executions.c.original_execution == original,
                executions.c.retry_count == ended.retry_count + 1,
            )
            .order_by(executions.c.action_ref, executions.c.id)
            .limit(1)
        )
        async with self.store.read() as conn:
            found = (await conn.execute(query)).scalar()
        return None if found is None else int(found)
