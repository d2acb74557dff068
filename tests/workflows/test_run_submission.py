"""A task run is started once however many processes submit it: three submissions of the same
recorded task run at once (a process that crashed after submitting, the sweep, the advancer)
make one child execution, and the task run names it. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import asdict
from pathlib import Path

import pytest

from config import Settings
from engine.clock import now_utc
from engine.records import Executor
from engine.runtime import Runtime, build_runtime
from engine.workflows.plan import Launch
from engine.workflows.run_records import NewTaskRun
from engine.workflows.runs import WorkflowRuns
from tests.e2e.conftest import _fresh_postgres_database
from tests.workflows.test_pack_sync import write


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    packs = tmp_path / "packs"
    write(
        packs,
        {
            "ops/pack.yaml": "ref: ops\n",
            "ops/workflows/twice.yaml": (
                "tasks:\n  - {name: a, action: core.echo, input: {message: hi}}\n"
            ),
        },
    )

    async def build(url: str) -> Runtime:
        settings = Settings(
            database_url=url, data_dir=tmp_path, packs_path=str(packs), admin_password="x" * 12
        )
        return await build_runtime(settings)

    if request.param == "sqlite":
        rt = await build(f"sqlite+aiosqlite:///{tmp_path}/t.db")
        try:
            yield rt
        finally:
            await rt.close()
        return
    async with _fresh_postgres_database() as url:
        rt = await build(url)
        try:
            yield rt
        finally:
            await rt.close()


async def test_concurrent_submissions_of_one_task_run_make_one_child(runtime: Runtime) -> None:
    runs = WorkflowRuns(runtime.store, runtime.service, runtime.catalog)
    wf = await runtime.service.submit("ops.twice", {}, Executor("tester", "api"))
    claimed = await runtime.service.claim(wf.id, "w-test")
    assert claimed is not None
    # Recorded and parked, but not submitted (as if the process died right after).
    launch = Launch("a", "core.echo", {"message": "hi"})
    run = await runs.repo.begin(
        wf.id,
        "w-test",
        "ops.twice",
        {},
        {"launches": {"a:-:1:0": asdict(launch)}},
        "running",
        None,
        [NewTaskRun("a:-:1:0", "a", None, now_utc())],
        now_utc(),
    )
    assert run is not None
    (task,) = await runs.repo.tasks(run.id)
    parent = await runtime.service.get_with_route(wf.id)
    await asyncio.gather(*[runs._submit(run, task, parent) for _ in range(3)])
    kids, total = await runtime.service.list(parent=wf.id)
    assert total == 1
    (child,) = kids
    assert child.workflow_task == {
        "workflow_execution": run.id,
        "task_name": "a",
        "task_index": None,
        "retry_count": 0,
        "max_retries": 0,
        "timeout_seconds": None,
    }
    (task,) = await runs.repo.tasks(run.id)
    assert task.execution_id == child.id
