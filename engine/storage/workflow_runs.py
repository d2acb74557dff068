"""The ``workflow_executions`` and ``workflow_tasks`` rows (:mod:`engine.workflows.run_records`),
on either dialect.

Every advance of a run is a conditional UPDATE on its ``revision`` (first in its transaction,
so on PostgreSQL it also holds the row until commit: a concurrent advance waits, then finds the
revision moved and reports a conflict); the task runs it counts and records commit with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, insert, select, update

from engine.storage.store import Conn, Store
from engine.storage.tables import executions
from engine.storage.tables import workflow_executions as runs
from engine.storage.tables import workflow_tasks as tasks_t
from engine.workflows.run_records import (
    OPEN_STATES,
    Advanced,
    NewTaskRun,
    TaskRun,
    WorkflowRun,
    WorkflowRunRepository,
)


def _run(row: Any) -> WorkflowRun:
    return WorkflowRun(
        id=int(row.id),
        execution=int(row.execution),
        workflow_ref=row.workflow_ref,
        definition=dict(row.definition or {}),
        progress=dict(row.progress or {}),
        revision=int(row.revision),
        status=row.status,
        error=row.error,
        created=row.created,
        updated=row.updated,
    )


def _task(row: Any) -> TaskRun:
    return TaskRun(
        id=int(row.id),
        workflow_execution=int(row.workflow_execution),
        dispatch_key=row.dispatch_key,
        task_name=row.task_name,
        task_index=row.task_index,
        execution_id=None if row.execution_id is None else int(row.execution_id),
        due_at=row.due_at,
        counted=bool(row.counted),
        created=row.created,
    )


class _AlreadyCounted(Exception):
    """Rolls an advance back: one of its ends was folded in by another process."""


async def _record_tasks(conn: Conn, run_id: int, new: Sequence[NewTaskRun], now: datetime) -> None:
    if not new:
        return
    keys = [t.dispatch_key for t in new]
    taken = set(
        (
            await conn.execute(
                select(tasks_t.c.dispatch_key).where(
                    tasks_t.c.workflow_execution == run_id, tasks_t.c.dispatch_key.in_(keys)
                )
            )
        ).scalars()
    )
    rows = [
        {
            "workflow_execution": run_id,
            "dispatch_key": t.dispatch_key,
            "task_name": t.task_name,
            "task_index": t.task_index,
            "due_at": t.due_at,
            "counted": False,
            "created": now,
        }
        for t in new
        if t.dispatch_key not in taken
    ]
    if rows:
        await conn.execute(insert(tasks_t), rows)


class SqlWorkflowRuns:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def begin(
        self,
        execution_id: int,
        worker_id: str,
        workflow_ref: str,
        definition: dict[str, Any],
        progress: dict[str, Any],
        status: str,
        error: str | None,
        tasks: Sequence[NewTaskRun],
        now: datetime,
    ) -> WorkflowRun | None:
        async with self.store.write() as conn:
            existing = (
                await conn.execute(select(runs).where(runs.c.execution == execution_id))
            ).first()
            if existing is not None:
                return _run(existing)
            parked = await conn.execute(
                update(executions)
                .where(
                    executions.c.id == execution_id,
                    executions.c.status.in_(("running", "canceling")),
                    executions.c.worker == worker_id,
                )
                .values(worker=None, heartbeat_at=None, pid=None, pid_start=None, updated=now)
            )
            if not parked.rowcount:
                return None
            run_id = (
                await conn.execute(
                    insert(runs)
                    .values(
                        execution=execution_id,
                        workflow_ref=workflow_ref,
                        definition=definition,
                        progress=progress,
                        revision=0,
                        status=status,
                        error=error,
                        created=now,
                        updated=now,
                    )
                    .returning(runs.c.id)
                )
            ).scalar_one()
            await _record_tasks(conn, int(run_id), tasks, now)
            row = (await conn.execute(select(runs).where(runs.c.id == run_id))).one()
        return _run(row)

    async def get(self, run_id: int) -> WorkflowRun | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(runs).where(runs.c.id == run_id))).first()
        return None if row is None else _run(row)

    async def of_execution(self, execution_id: int) -> WorkflowRun | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(runs).where(runs.c.execution == execution_id))).first()
        return None if row is None else _run(row)

    async def task_of_execution(self, execution_id: int) -> TaskRun | None:
        async with self.store.read() as conn:
            row = (
                await conn.execute(select(tasks_t).where(tasks_t.c.execution_id == execution_id))
            ).first()
        return None if row is None else _task(row)

    async def tasks(self, run_id: int) -> list[TaskRun]:
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(tasks_t)
                    .where(tasks_t.c.workflow_execution == run_id)
                    .order_by(tasks_t.c.id)
                )
            ).all()
        return [_task(r) for r in rows]

    async def unsubmitted(self, run_id: int) -> list[TaskRun]:
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(tasks_t)
                    .where(
                        tasks_t.c.workflow_execution == run_id,
                        tasks_t.c.counted.is_(False),
                        tasks_t.c.execution_id.is_(None),
                    )
                    .order_by(tasks_t.c.id)
                )
            ).all()
        return [_task(r) for r in rows]

    async def advance(
        self,
        run_id: int,
        revision: int,
        progress: dict[str, Any],
        status: str,
        error: str | None,
        counted: Sequence[int],
        tasks: Sequence[NewTaskRun],
        now: datetime,
    ) -> Advanced:
        try:
            async with self.store.write() as conn:
                moved = await conn.execute(
                    update(runs)
                    .where(runs.c.id == run_id, runs.c.revision == revision)
                    .values(
                        progress=progress,
                        status=status,
                        error=error,
                        revision=revision + 1,
                        updated=now,
                    )
                )
                if not moved.rowcount:
                    return "conflict"
                for task_id in counted:
                    done = await conn.execute(
                        update(tasks_t)
                        .where(tasks_t.c.id == task_id, tasks_t.c.counted.is_(False))
                        .values(counted=True)
                    )
                    if not done.rowcount:
                        raise _AlreadyCounted
                await _record_tasks(conn, run_id, tasks, now)
        except _AlreadyCounted:
            return "counted"
        return "advanced"

    async def submitted(self, task_id: int, execution_id: int) -> None:
        async with self.store.write() as conn:
            await conn.execute(
                update(tasks_t)
                .where(tasks_t.c.id == task_id, tasks_t.c.execution_id.is_(None))
                .values(execution_id=execution_id)
            )

    async def ended_uncounted(self, terminal: Sequence[str], limit: int) -> list[TaskRun]:
        query = (
            select(tasks_t)
            .join(executions, executions.c.id == tasks_t.c.execution_id)
            .where(tasks_t.c.counted.is_(False), executions.c.status.in_(terminal))
            .order_by(tasks_t.c.id)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_task(r) for r in rows]

    async def due_unsubmitted(
        self, now: datetime, created_before: datetime, limit: int
    ) -> list[TaskRun]:
        query = (
            select(tasks_t)
            .join(runs, runs.c.id == tasks_t.c.workflow_execution)
            .where(
                tasks_t.c.counted.is_(False),
                tasks_t.c.due_at <= now,
                tasks_t.c.execution_id.is_(None),
                tasks_t.c.created <= created_before,
                runs.c.status.in_(OPEN_STATES),
            )
            .order_by(tasks_t.c.due_at)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_task(r) for r in rows]

    async def unfinished(self, live: Sequence[str], limit: int) -> list[WorkflowRun]:
        query = (
            select(runs)
            .join(executions, executions.c.id == runs.c.execution)
            .where(runs.c.status.not_in(OPEN_STATES), executions.c.status.in_(live))
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_run(r) for r in rows]

    async def cancel_asked(self, limit: int) -> list[WorkflowRun]:
        query = (
            select(runs)
            .join(executions, executions.c.id == runs.c.execution)
            .where(and_(runs.c.status == "running", executions.c.status == "canceling"))
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_run(r) for r in rows]


def workflow_run_repository(store: Store) -> WorkflowRunRepository:
    return SqlWorkflowRuns(store)
