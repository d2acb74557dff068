"""Running workflows as stored: pure records and the repository's Protocol (the SQL is in
:mod:`engine.storage.workflow_runs`).

A :class:`WorkflowRun` is a workflow's execution with its progress (the planning core's state)
and ``revision``: every advance is a conditional update on it, so two processes folding ends
into the same run never both win. A :class:`TaskRun` is one task run the plan decided to start,
recorded once (unique ``dispatch_key``) before it is submitted, so no task runs twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

#: ``workflow_executions.status``: ``canceling`` starts nothing new and ends ``cancelled``
#: once no task runs.
RunState = Literal["running", "canceling", "completed", "failed", "cancelled"]
OPEN_STATES = ("running", "canceling")


@dataclass(frozen=True, slots=True)
class WorkflowRun:
    id: int
    #: The workflow's own execution (the parent of its task runs).
    execution: int
    workflow_ref: str
    #: The definition it started with (later edits do not change a run).
    definition: dict[str, Any]
    progress: dict[str, Any]
    revision: int
    status: str
    error: str | None
    created: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class NewTaskRun:
    """A task run to record: its key (task, item, run, attempt), and when it may start."""

    dispatch_key: str
    task_name: str
    task_index: int | None
    due_at: datetime


@dataclass(frozen=True, slots=True)
class TaskRun:
    id: int
    workflow_execution: int
    dispatch_key: str
    task_name: str
    task_index: int | None
    execution_id: int | None
    due_at: datetime
    counted: bool
    created: datetime


#: What :meth:`WorkflowRunRepository.advance` did.
Advanced = Literal["advanced", "conflict", "counted"]


class WorkflowRunRepository(Protocol):
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
        """In one transaction: the run, its first task runs, and its execution parked (no
        worker, heartbeat or process: it waits on its tasks, not on a worker). None when the
        execution is no longer this worker's; the existing run when one was made already."""

    async def get(self, run_id: int) -> WorkflowRun | None: ...

    async def of_execution(self, execution_id: int) -> WorkflowRun | None: ...

    async def task_of_execution(self, execution_id: int) -> TaskRun | None:
        """The task run an execution was started for (None: not a workflow's task)."""

    async def tasks(self, run_id: int) -> list[TaskRun]:
        """A run's task runs, oldest first."""

    async def unsubmitted(self, run_id: int) -> list[TaskRun]:
        """A run's task runs not submitted nor counted (due or not)."""

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
        """If the run is still at ``revision``: the new progress and status (revision + 1),
        the task runs ``counted`` marked counted (``counted`` when one already was: nothing
        changes) and the new ``tasks`` recorded (those whose key exists are skipped)."""

    async def submitted(self, task_id: int, execution_id: int) -> None:
        """The execution started for a task run."""

    async def ended_uncounted(self, terminal: Sequence[str], limit: int) -> list[TaskRun]:
        """Task runs whose execution ended (in ``terminal``) whose end is not folded in."""

    async def due_unsubmitted(
        self, now: datetime, created_before: datetime, limit: int
    ) -> list[TaskRun]:
        """Task runs of open runs not submitted, due by ``now`` and recorded before
        ``created_before`` (a newer one is being submitted by whoever recorded it)."""

    async def unfinished(self, live: Sequence[str], limit: int) -> list[WorkflowRun]:
        """Runs whose progress ended while their execution is still ``live``."""

    async def cancel_asked(self, limit: int) -> list[WorkflowRun]:
        """Runs still ``running`` whose execution is ``canceling``."""
