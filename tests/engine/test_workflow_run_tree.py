"""Which workflow card a task run belongs to, and a workflow's task lines, read from stored
executions on SQLite and PostgreSQL (engine/workflows/run_tree.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.clock import now_utc
from engine.records import NewExecution
from engine.storage import Store, build_store
from engine.storage.executions import execution_repository
from engine.workflows.run_tree import WorkflowTrees
from tests.e2e.conftest import _fresh_postgres_database

WORKFLOWS = {"ops.runbook", "ops.inner"}


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        found = build_store(f"sqlite+aiosqlite:///{tmp_path}/t.db")
        await found.upgrade()
        yield found
        await found.close()
        return
    async with _fresh_postgres_database() as url:
        found = build_store(url)
        await found.upgrade()
        yield found
        await found.close()


async def is_workflow(action_ref: str) -> bool:
    return action_ref in WORKFLOWS


def new(
    action_ref: str, status: str, parent: int | None = None, task: dict[str, Any] | None = None
) -> NewExecution:
    now = now_utc()
    return NewExecution(
        action_ref=action_ref, status=status, config={}, secrets=None, parent=parent,
        enforcement=None, executor={"identity": "U1", "source": "slack"}, timeout_s=60,
        callback_url=None, chat=None, idempotency_key=None, created=now, updated=now,
        workflow_task=task,
    )  # fmt: skip


async def test_task_runs_belong_to_the_top_workflows_card(store: Store) -> None:
    repo = execution_repository(store)

    async def add(*args: Any) -> int:
        return (await repo.submit(new(*args), None, None)).id

    root = await add("ops.runbook", "running")
    check = await add(
        "core.noop", "completed", root, {"workflow_execution": 1, "task_name": "check"}
    )
    each = {"workflow_execution": 1, "task_name": "each"}
    items = [await add("core.noop", "running", root, each | {"task_index": i}) for i in range(3)]
    inner = await add("ops.inner", "running", root, {"workflow_execution": 1, "task_name": "sub"})
    deep = await add("core.echo", "requested", inner, {"workflow_execution": 2, "task_name": "x"})
    other = await add("core.noop", "completed", root)  # a child that runs no task
    trees = WorkflowTrees(repo, is_workflow)

    record = (await repo.get(deep)).record()  # type: ignore[union-attr]
    found = await trees.task_of(record)
    assert found is not None
    assert (found.root_id, found.task.task_name, found.task.status) == (root, "x", "requested")
    assert await trees.card_of(items[1]) == root
    assert await trees.card_of(root) == root
    assert await trees.card_of(other) == other
    assert await trees.task_of((await repo.get(root)).record()) is None  # type: ignore[union-attr]

    tree = await trees.tree((await repo.get(root)).record())  # type: ignore[union-attr]
    assert tree is not None
    assert [(t.execution_id, t.task_name, t.task_index, t.status) for t in tree.tasks] == [
        (check, "check", None, "completed"),
        *((eid, "each", i, "running") for i, eid in enumerate(items)),
        (inner, "sub", None, "running"),
    ]
    plain = (await repo.get(check)).record()  # type: ignore[union-attr]
    assert await trees.tree(plain) is None, "not a workflow"
