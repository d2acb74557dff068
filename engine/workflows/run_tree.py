"""A workflow run as chat shows it: the workflow's execution and a line per task run.

The workflow is the parent execution; each task run is a child execution whose
``workflow_task`` names its task (and its item, in a ``with_items`` task). The chat sinks ask
two things of a run: for news of a task run, which workflow card it belongs to
(:meth:`WorkflowTrees.task_of`; a nested workflow's tasks belong to the card of the workflow at
the top), and for a card or ``status <id>``, the tasks of a workflow
(:meth:`WorkflowTrees.tree`). Reading only: nothing here changes an execution.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from engine.errors import EngineError
from engine.packs import ActionSpec
from engine.records import Execution, ExecutionFilter, StoredExecution
from engine.storage.workflows import WORKFLOW_RUNTIME

if TYPE_CHECKING:
    from engine.runtime import Runtime

#: Task runs read for one tree at most (a workflow with more shows the newest ones).
MAX_TASK_RUNS = 1000
#: Nesting followed up to the top workflow at most.
MAX_DEPTH = 10


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One line of a workflow: the latest run of a task (of one item, for ``with_items``)."""

    execution_id: int
    task_name: str
    #: The item's index in a ``with_items`` task; None otherwise.
    task_index: int | None
    action_ref: str
    status: str
    #: How long it ran (its result's ``duration_ms``, else from its start and end); None
    #: while it has not ended.
    duration_ms: int | None
    #: Runs of this task (and item) so far: more than 1 after a retry or a loop.
    runs: int = 1
    error: str | None = None


@dataclass(frozen=True, slots=True)
class TaskOf:
    """A task run and the execution of the workflow whose card shows it (the top one)."""

    root_id: int
    task: TaskRun


@dataclass(frozen=True, slots=True)
class WorkflowTree:
    """A workflow's execution and its task lines, in the order the tasks started."""

    execution: Execution
    tasks: tuple[TaskRun, ...]
    #: Task runs left unread beyond :data:`MAX_TASK_RUNS`.
    unread: int = 0


class ExecutionRows(Protocol):
    """What is read of executions (:class:`engine.records.ExecutionRepository`)."""

    async def get(self, execution_id: int) -> StoredExecution | None: ...

    async def list(
        self, where: ExecutionFilter, *, limit: int, offset: int
    ) -> list[StoredExecution]: ...

    async def count(self, where: ExecutionFilter) -> int: ...


def duration_ms(row: StoredExecution | Execution) -> int | None:
    """How long a run that has ended took (None while it has not)."""
    ms = (row.result or {}).get("duration_ms")
    if isinstance(ms, int | float) and not isinstance(ms, bool):
        return int(ms)
    if row.started_at is not None and row.finished_at is not None:
        return max(int((row.finished_at - row.started_at).total_seconds() * 1000), 0)
    return None


def task_run(row: StoredExecution | Execution, runs: int = 1) -> TaskRun | None:
    """The line of a task run (None when ``row`` is not one)."""
    task = row.workflow_task
    if not isinstance(task, dict) or not task.get("task_name"):
        return None
    index = task.get("task_index")
    error = (row.result or {}).get("error")
    return TaskRun(
        execution_id=row.id,
        task_name=str(task["task_name"]),
        task_index=index if isinstance(index, int) and not isinstance(index, bool) else None,
        action_ref=row.action_ref,
        status=row.status,
        duration_ms=duration_ms(row) if row.finished_at is not None else None,
        runs=runs,
        error=str(error) if error else None,
    )


def task_lines(rows: Sequence[StoredExecution]) -> list[TaskRun]:
    """One line per task (and item): its latest run, counting the earlier ones; in the order
    each task first started."""
    first: dict[tuple[str, int | None], int] = {}
    latest: dict[tuple[str, int | None], StoredExecution] = {}
    runs: dict[tuple[str, int | None], int] = {}
    for row in sorted(rows, key=lambda r: r.id):
        line = task_run(row)
        if line is None:
            continue
        key = (line.task_name, line.task_index)
        first.setdefault(key, row.id)
        latest[key] = row
        runs[key] = runs.get(key, 0) + 1
    out = []
    for key in sorted(first, key=first.__getitem__):
        line = task_run(latest[key], runs[key])
        if line is not None:
            out.append(line)
    return out


class WorkflowTrees:
    """Reads workflow runs: ``rows`` the executions, ``is_workflow`` whether an action ref is
    a workflow (the catalog's cached specs, so an ordinary run costs no query)."""

    def __init__(self, rows: ExecutionRows, is_workflow: Callable[[str], Awaitable[bool]]) -> None:
        self.rows = rows
        self.is_workflow = is_workflow

    async def task_of(self, execution: Execution) -> TaskOf | None:
        """The task ``execution`` runs (its ``workflow_task``) and the top workflow's id; None
        when it runs none."""
        if execution.parent is None or execution.workflow_task is None:
            return None
        line = task_run(execution)
        if line is None:
            return None
        return TaskOf(await self._top(execution.parent), line)

    async def card_of(self, execution_id: int) -> int:
        """The execution whose card shows ``execution_id``: its top workflow's when it is a
        task run, else itself."""
        row = await self.rows.get(execution_id)
        if row is None or row.parent is None or task_run(row) is None:
            return execution_id
        return await self._top(row.parent)

    async def _top(self, workflow_id: int) -> int:
        """The workflow at the top of the one ``workflow_id`` is (a nested one is a task)."""
        root = workflow_id
        for _ in range(MAX_DEPTH):
            parent = await self.rows.get(root)
            if parent is None or parent.parent is None or parent.workflow_task is None:
                break
            root = parent.parent
        return root

    async def tree(self, execution: Execution) -> WorkflowTree | None:
        """The tasks of ``execution`` when it is a workflow (None when it is not)."""
        if not await self.is_workflow(execution.action_ref):
            return None
        where = ExecutionFilter(parent=execution.id)
        rows = await self.rows.list(where, limit=MAX_TASK_RUNS, offset=0)
        unread = 0
        if len(rows) >= MAX_TASK_RUNS:
            unread = max(await self.rows.count(where) - len(rows), 0)
        return WorkflowTree(execution, tuple(task_lines(rows)), unread)


def catalog_is_workflow(
    get_action: Callable[[str], Awaitable[ActionSpec]],
) -> Callable[[str], Awaitable[bool]]:
    """``is_workflow`` from the catalog's ``get_action`` (an action that is gone: not one)."""

    async def is_workflow(action_ref: str) -> bool:
        try:
            spec = await get_action(action_ref)
        except EngineError:
            return False
        return spec.runtime_ref == WORKFLOW_RUNTIME

    return is_workflow


def workflow_trees(runtime: Runtime) -> WorkflowTrees:
    """The workflow runs of ``runtime``'s database, told apart by its catalog."""
    return WorkflowTrees(
        runtime.service.executions, catalog_is_workflow(runtime.catalog.get_action)
    )
