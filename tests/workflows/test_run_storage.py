"""The stored state of running workflows, on both dialects: a run is begun once with its
execution parked; every advance is won by one writer of a revision; a task run is recorded
once per key and its end counted once; the sweep's queries find what a crash left."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text

from engine.clock import now_utc
from engine.storage import Store, build_store
from engine.storage.tables import executions
from engine.storage.workflow_runs import workflow_run_repository
from engine.workflows.run_records import NewTaskRun
from tests.engine.test_integration import PostgresDatabases

WAIT_S = 30.0
_INSERT = text(
    "INSERT INTO executions (id, action_ref, status, config, executor, timeout_s, worker,"
    " heartbeat_at, created, updated) VALUES (:id, 'p.wf', :status, '{}', '{}', 60, :worker,"
    " '2026-01-01 00:00:00', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    databases = PostgresDatabases()
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    else:
        url = await databases.get(request.getfixturevalue("postgres_url"))
    store = build_store(url)
    try:
        await asyncio.wait_for(store.upgrade(), WAIT_S)
        yield store
    finally:
        await store.close()
        await databases.drop()


async def _execution(store: Store, id_: int, status: str = "running", worker: str = "w1") -> None:
    async with store.write() as conn:
        await conn.execute(_INSERT, {"id": id_, "status": status, "worker": worker})


def _task(key: str, name: str = "a", due_in_s: float = 0.0) -> NewTaskRun:
    return NewTaskRun(key, name, None, now_utc() + timedelta(seconds=due_in_s))


async def test_begin_parks_the_execution_once(any_store: Store) -> None:
    repo = workflow_run_repository(any_store)
    await _execution(any_store, 1)
    assert await repo.begin(1, "other", "p.wf", {}, {}, "running", None, [], now_utc()) is None
    run = await repo.begin(
        1, "w1", "p.wf", {"tasks": []}, {"x": 1}, "running", None, [_task("a:-:1:0")], now_utc()
    )
    assert run is not None
    assert (run.execution, run.revision, run.progress) == (1, 0, {"x": 1})
    async with any_store.read() as conn:
        row = (await conn.execute(select(executions).where(executions.c.id == 1))).one()
    assert (row.status, row.worker, row.heartbeat_at) == ("running", None, None)
    again = await repo.begin(1, "w1", "p.wf", {}, {}, "running", None, [], now_utc())
    assert again == run
    assert [t.dispatch_key for t in await repo.tasks(run.id)] == ["a:-:1:0"]


async def test_one_writer_wins_each_revision_and_an_end_counts_once(any_store: Store) -> None:
    repo = workflow_run_repository(any_store)
    await _execution(any_store, 1)
    run = await repo.begin(1, "w1", "p.wf", {}, {}, "running", None, [_task("a:-:1:0")], now_utc())
    assert run is not None
    (first,) = await repo.tasks(run.id)
    # Ten writers fold the same end at the same revision: one wins.
    outcomes = await asyncio.gather(
        *[
            repo.advance(
                run.id,
                0,
                {"n": i},
                "running",
                None,
                [first.id],
                [_task("b:-:1:0", "b"), _task("a:-:1:0")],
                now_utc(),
            )
            for i in range(10)
        ]
    )
    assert sorted(outcomes).count("advanced") == 1
    assert set(outcomes) == {"advanced", "conflict"}
    fresh = await repo.get(run.id)
    assert fresh is not None
    assert fresh.revision == 1
    tasks = await repo.tasks(run.id)
    assert [(t.dispatch_key, t.counted) for t in tasks] == [("a:-:1:0", True), ("b:-:1:0", False)]
    # Counted already: the advance changes nothing (its revision stays).
    assert (
        await repo.advance(run.id, 1, {}, "running", None, [first.id], [], now_utc()) == "counted"
    )
    again = await repo.get(run.id)
    assert again is not None
    assert (again.revision, again.progress) == (1, fresh.progress)


async def test_the_sweeps_queries(any_store: Store) -> None:
    repo = workflow_run_repository(any_store)
    await _execution(any_store, 1)
    await _execution(any_store, 2, "completed", worker="w2")
    await _execution(any_store, 3, "running", worker="w2")
    run = await repo.begin(
        1,
        "w1",
        "p.wf",
        {},
        {},
        "running",
        None,
        [_task("a:-:1:0"), _task("b:-:1:0", "b"), _task("c:-:1:0", "c", 60)],
        now_utc() - timedelta(seconds=10),
    )
    assert run is not None
    a, b, c = await repo.tasks(run.id)
    await repo.submitted(a.id, 2)
    await repo.submitted(b.id, 3)
    await repo.submitted(b.id, 99)  # set once
    assert (await repo.task_of_execution(3)) == (await repo.tasks(run.id))[1]
    ended = await repo.ended_uncounted(["completed", "failed"], 10)
    assert [t.id for t in ended] == [a.id]
    now = now_utc()
    assert await repo.due_unsubmitted(now, now, 10) == []  # c is due in a minute
    later = now + timedelta(seconds=120)
    assert [t.id for t in await repo.due_unsubmitted(later, now, 10)] == [c.id]
    assert await repo.due_unsubmitted(later, now - timedelta(seconds=60), 10) == []  # too new
    assert await repo.unfinished(["running"], 10) == []
    assert await repo.cancel_asked(10) == []
    async with any_store.write() as conn:
        await conn.execute(text("UPDATE executions SET status = 'canceling' WHERE id = 1"))
    assert [r.id for r in await repo.cancel_asked(10)] == [run.id]
    assert await repo.advance(run.id, 0, {}, "completed", None, [], [], now_utc()) == "advanced"
    assert [r.id for r in await repo.unfinished(["canceling"], 10)] == [run.id]
    assert await repo.due_unsubmitted(later, now, 10) == []  # the run has ended
