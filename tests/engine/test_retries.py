"""Retries of transient failures (engine/retries.py): the back-off as pure functions, and the
retry chain on SQLite and PostgreSQL in-process (no worker: runs are claimed and ended through
the service as a worker does, so every ending is the one the test chose).

Observed as a user would: execution records (``original_execution``, ``retry_count``,
``retry_reason``, ``retry_due_at``), the parameters a retry runs with, the audit log, the chat
card's outbox row, and how many executions a chain has.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from config import Settings
from engine.errors import Conflict
from engine.packs import ActionSpec
from engine.params import REDACTED, normalize_schema
from engine.records import Executor
from engine.retries import Retries, RetryPolicy, retry_of
from engine.runtime import Runtime, build_runtime
from engine.status import ExecutionStatus
from tests.e2e.conftest import _fresh_postgres_database
from tests.waiting import eventually

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALICE = Executor(identity="alice", source="api", channel="#ops", extra={"role": "operator"})
CHAT = {"sink": "terminal", "session": "s-1"}


# -- the back-off, pure -----------------------------------------------------------------------


def test_the_back_off_doubles_from_the_base_up_to_the_cap() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=10.0, jitter=0.0)
    assert [policy.delay_s(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_jitter_takes_up_to_its_fraction_off_the_wait() -> None:
    policy = RetryPolicy(base_s=2.0, cap_s=300.0, jitter=0.2)
    assert policy.delay_s(1, rand=lambda: 0.0) == 4.0
    assert policy.delay_s(1, rand=lambda: 0.5) == pytest.approx(3.6)
    assert policy.delay_s(1, rand=lambda: 0.999999) == pytest.approx(3.2, abs=1e-5)


@pytest.mark.parametrize("status", [ExecutionStatus.TIMEOUT, ExecutionStatus.ABANDONED])
def test_a_transient_ending_with_retries_left_is_due_after_the_back_off(
    status: ExecutionStatus,
) -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=300.0, jitter=0.0)
    assert policy.due_at(status, 0, 3, T0) == T0 + timedelta(seconds=1)
    assert policy.due_at(status, 2, 3, T0) == T0 + timedelta(seconds=4)
    assert policy.due_at(status, 3, 3, T0) is None, "max_retries used up"
    assert policy.due_at(status, 0, 0, T0) is None, "an action without retries"


@pytest.mark.parametrize(
    "status",
    [
        ExecutionStatus.FAILED,
        ExecutionStatus.COMPLETED,
        ExecutionStatus.CANCELLED,
    ],
)
def test_other_endings_are_never_retried(status: ExecutionStatus) -> None:
    assert RetryPolicy().due_at(status, 0, 5, T0) is None


# -- the chain, on both databases -------------------------------------------------------------


@pytest.fixture(
    scope="module",
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    """One database per backend for the module (every test uses actions of its own)."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('retries')}/r.db"
        return
    async with _fresh_postgres_database() as url:
        yield url


async def _runtime(url: str, tmp_path: Path, **knobs: float) -> Runtime:
    return await build_runtime(
        Settings(
            database_url=url,
            data_dir=tmp_path,
            packs_path=str(tmp_path),
            admin_password="x" * 12,
            **knobs,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
async def rt(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    # A back-off of a minute: nothing is due unless a test makes it so.
    runtime = await _runtime(
        database_url, tmp_path, retry_backoff_base_s=60.0, retry_backoff_max_s=60.0
    )
    yield runtime
    await runtime.close()


async def _action(rt: Runtime, max_retries: int, script: str = "exit 0") -> str:
    name = f"flaky_{uuid.uuid4().hex[:8]}"
    spec = ActionSpec(
        ref=f"rt.{name}",
        pack_ref="rt",
        name=name,
        runner_type="shell",
        script=script,
        param_schema=normalize_schema(
            {"host": {"type": "string"}, "token": {"type": "string", "secret": True}}
        ),
        max_retries=max_retries,
    )
    await rt.catalog.create_action(spec)
    return spec.ref


async def _run_and_end(
    rt: Runtime, execution_id: int, status: ExecutionStatus, *, retry_count: int = 0
) -> None:
    """Claim the execution and end it ``status`` as the worker does (the retry planned by the
    policy from the action it ran and the claim's ``retry_count``)."""
    claimed = await rt.service.claim(execution_id, "w-1")
    assert claimed is not None
    assert claimed.retry_count == retry_count
    due = await rt.service.retry_policy.due_for(
        rt.catalog, claimed.action_ref, claimed.retry_count, status
    )
    ended = await rt.service.finish(
        execution_id, status, {"succeeded": False, "error": status.value}, retry_due_at=due
    )
    assert ended is not None


async def _make_due(rt: Runtime, execution_id: int) -> None:
    """Bring the pending retry's time forward (the test does not wait out the back-off)."""
    from sqlalchemy import update

    from engine.storage.tables import executions

    async with rt.store.write() as conn:
        await conn.execute(
            update(executions)
            .where(executions.c.id == execution_id, executions.c.retry_due_at.is_not(None))
            .values(retry_due_at=datetime.now(UTC) - timedelta(seconds=1))
        )


async def _chain(rt: Runtime, original: int) -> list[int]:
    items, _ = await rt.service.list(original_execution=original)
    return sorted(r.id for r in items)


async def test_a_timed_out_run_is_retried_as_the_same_request_linked_to_its_chain(
    rt: Runtime,
) -> None:
    ref = await _action(rt, max_retries=2)
    first = await rt.service.submit(
        ref,
        {"host": "web1", "token": "s3cret"},
        ALICE,
        chat=CHAT,
        callback_url="http://127.0.0.1:9/hook",
    )
    await _run_and_end(rt, first.id, ExecutionStatus.TIMEOUT)
    ended = await rt.service.get(first.id)
    assert ended.status == "timeout"
    assert ended.retry_due_at is not None
    # 60 s less up to 20 % jitter, from about when it ended.
    assert 47.5 <= (ended.retry_due_at - ended.finished_at).total_seconds() <= 60.5  # type: ignore[operator]
    assert await Retries(rt.service, rt.service.retry_marks).sweep() == [], "not due yet"

    await _make_due(rt, first.id)
    [second_id] = await Retries(rt.service, rt.service.retry_marks).sweep()
    second = await rt.service.get(second_id)
    assert (second.status, second.action_ref) == ("requested", ref)
    assert (second.original_execution, second.retry_count, second.retry_reason) == (
        first.id,
        1,
        "timeout",
    )
    assert second.config == {"host": "web1", "token": REDACTED}
    assert (await rt.service.parameters_of(second_id))[1] == {"host": "web1", "token": "s3cret"}
    assert second.requester["identity"] == "alice"
    assert second.requester["max_retries"] == 2
    assert (await rt.service.get_with_route(second_id))[1].callback_url == (
        "http://127.0.0.1:9/hook"
    )
    assert [(d.target, d.event) for d in await rt.service.deliveries(second_id)] == [
        ("terminal:s-1", "created")
    ]
    assert (await rt.service.get(first.id)).retry_due_at is None
    entries, _ = await rt.audit.list(verb="retry")
    assert [(e["actor"], e["execution_id"], e["target"]) for e in entries] == [
        ("alice", second_id, ref)
    ]
    assert f"retry 1 of 2 of #{first.id}" in entries[0]["detail"]

    # The second ends abandoned: retried again, the chain still named by the first run.
    await _run_and_end(rt, second_id, ExecutionStatus.ABANDONED, retry_count=1)
    await _make_due(rt, second_id)
    [third_id] = await Retries(rt.service, rt.service.retry_marks).sweep()
    third = await rt.service.get(third_id)
    assert (third.original_execution, third.retry_count, third.retry_reason) == (
        first.id,
        2,
        "abandoned",
    )
    # The third times out too: max_retries (2) is used up, no retry is planned.
    await _run_and_end(rt, third_id, ExecutionStatus.TIMEOUT, retry_count=2)
    assert (await rt.service.get(third_id)).retry_due_at is None
    assert await _chain(rt, first.id) == [second_id, third_id]
    scraped = rt.metrics.render().decode()
    for reason in ("timeout", "abandoned"):
        assert f'attune_execution_retries_total{{action="{ref}",reason="{reason}"}} 1.0' in scraped


async def test_a_failed_run_is_not_retried(rt: Runtime) -> None:
    ref = await _action(rt, max_retries=3)
    first = await rt.service.submit(ref, {"host": "web1"}, ALICE)
    await _run_and_end(rt, first.id, ExecutionStatus.FAILED)
    ended = await rt.service.get(first.id)
    assert (ended.status, ended.retry_due_at) == ("failed", None)
    assert await _chain(rt, first.id) == []


async def test_an_action_without_retries_is_not_retried(rt: Runtime) -> None:
    ref = await _action(rt, max_retries=0)
    first = await rt.service.submit(ref, {}, ALICE)
    await _run_and_end(rt, first.id, ExecutionStatus.TIMEOUT)
    assert (await rt.service.get(first.id)).retry_due_at is None


async def test_a_run_whose_worker_died_is_abandoned_with_its_retry_planned(rt: Runtime) -> None:
    ref = await _action(rt, max_retries=1)
    first = await rt.service.submit(ref, {}, ALICE)
    assert await rt.service.claim(first.id, "w-dead") is not None
    [moved] = await rt.service.abandon(workers=["w-dead"])
    assert moved.id == first.id
    ended = await rt.service.get(first.id)
    assert ended.status == "abandoned"
    assert ended.retry_due_at is not None


async def test_a_run_whose_worker_stops_during_it_is_abandoned_with_its_retry_planned(
    rt: Runtime,
) -> None:
    ref = await _action(rt, max_retries=1, script="sleep 30")
    worker = await rt.start_worker("w-stopping", housekeeping=False)
    first = await rt.service.submit(ref, {}, ALICE)
    await eventually(
        lambda: rt.service.get(first.id),
        "the run to start",
        10,
        done=lambda r: r.status == "running",
    )
    await worker.stop(grace_s=0)
    ended = await rt.service.get(first.id)
    assert ended.status == "abandoned"
    assert ended.retry_due_at is not None


async def test_two_sweeps_racing_submit_the_retry_once(
    rt: Runtime, database_url: str, tmp_path: Path
) -> None:
    # A second runtime on the same database: another ``attune serve`` process.
    other = await _runtime(database_url, tmp_path / "other")
    try:
        ref = await _action(rt, max_retries=1)
        runs = [await rt.service.submit(ref, {"host": f"h{i}"}, ALICE) for i in range(5)]
        for run in runs:
            await _run_and_end(rt, run.id, ExecutionStatus.TIMEOUT)
            await _make_due(rt, run.id)
        sweeps = [
            Retries(rt.service, rt.service.retry_marks),
            Retries(rt.service, rt.service.retry_marks),
            Retries(other.service, other.service.retry_marks),
        ]
        made = await asyncio.gather(*(s.sweep() for s in sweeps))
        chains = [await _chain(rt, run.id) for run in runs]
        assert [len(chain) for chain in chains] == [1] * len(runs), "each retried once"
        assert sorted(i for ids in made for i in ids) == sorted(c[0] for c in chains)
    finally:
        await other.close()


async def test_cancel_calls_a_pending_retry_off(rt: Runtime) -> None:
    ref = await _action(rt, max_retries=2)
    first = await rt.service.submit(ref, {}, ALICE)
    await _run_and_end(rt, first.id, ExecutionStatus.TIMEOUT)
    record = await rt.service.cancel(first.id, "alice")
    assert (record.status, record.retry_due_at) == ("timeout", None)
    await _make_due(rt, first.id)  # nothing left to bring forward
    assert await Retries(rt.service, rt.service.retry_marks).sweep() == []
    assert await _chain(rt, first.id) == []
    with pytest.raises(Conflict, match="already timeout"):
        await rt.service.cancel(first.id, "alice")


async def test_cancel_after_the_retry_was_submitted_names_the_retry(rt: Runtime) -> None:
    ref = await _action(rt, max_retries=2)
    first = await rt.service.submit(ref, {}, ALICE)
    await _run_and_end(rt, first.id, ExecutionStatus.TIMEOUT)
    await _make_due(rt, first.id)
    [second_id] = await Retries(rt.service, rt.service.retry_marks).sweep()
    with pytest.raises(Conflict, match=f"its retry is execution {second_id}"):
        await rt.service.cancel(first.id, "alice")


async def test_a_retry_due_after_its_action_was_disabled_is_dropped(rt: Runtime) -> None:
    ref = await _action(rt, max_retries=2)
    first = await rt.service.submit(ref, {}, ALICE)
    await _run_and_end(rt, first.id, ExecutionStatus.TIMEOUT)
    action = await rt.catalog.action(ref)
    await rt.catalog.update_action(ref, action.spec.model_copy(update={"max_retries": 0}))
    rt.catalog.forget()
    await _make_due(rt, first.id)
    assert await Retries(rt.service, rt.service.retry_marks).sweep() == []
    assert (await rt.service.get(first.id)).retry_due_at is None, "dropped, not left due"
    assert await _chain(rt, first.id) == []


def test_retry_of_keeps_the_request_and_counts_the_chain() -> None:
    from engine.records import NewExecution, StoredExecution

    ended = StoredExecution(
        id=12,
        action_ref="ops.flaky",
        status="abandoned",
        config={"a": 1},
        secrets="sealed",
        parent=3,
        enforcement=7,
        executor={"identity": "bob", "source": "slack", "channel": "C1"},
        result=None,
        timeout_s=5.0,
        callback_url="http://127.0.0.1:9/hook",
        chat={"sink": "slack", "channel": "C1"},
        worker="w",
        heartbeat_at=None,
        pid=None,
        pid_start=None,
        idempotency_key="key-1",
        created=T0,
        updated=T0,
        started_at=T0,
        finished_at=T0,
        retry_count=1,
        original_execution=10,
    )
    prepared = NewExecution(
        action_ref="ops.flaky",
        status="requested",
        config={"a": 1},
        secrets="sealed-again",
        parent=None,
        enforcement=None,
        executor={"identity": "bob", "source": "slack", "channel": "C1"},
        timeout_s=600.0,
        callback_url=None,
        chat=None,
        idempotency_key=None,
        created=T0,
        updated=T0,
    )
    new, entry = retry_of(ended, prepared, 3)
    assert (new.original_execution, new.retry_count, new.retry_reason) == (10, 2, "abandoned")
    assert (new.parent, new.enforcement, new.callback_url, new.chat) == (
        3,
        7,
        "http://127.0.0.1:9/hook",
        {"sink": "slack", "channel": "C1"},
    )
    assert (new.config, new.secrets, new.timeout_s) == ({"a": 1}, "sealed-again", 600.0)
    assert new.executor == {"identity": "bob", "source": "slack", "channel": "C1", "max_retries": 3}
    assert new.idempotency_key is None, "the key was the first request's"
    assert (entry.actor, entry.source, entry.verb) == ("bob", "slack", "retry")
    assert entry.detail == "retry 2 of 3 of #10: #12 ended abandoned"


async def test_a_run_asked_to_cancel_is_not_retried_however_it_ends(rt: Runtime) -> None:
    """The user asked it to stop: its worker dying (abandoned) or its time running out
    (timeout) before the kill lands must not run it again."""
    ref = await _action(rt, max_retries=2)
    died = await rt.service.submit(ref, {}, ALICE)
    assert await rt.service.claim(died.id, "w-dead") is not None
    assert (await rt.service.cancel(died.id, "alice")).status == "canceling"
    [moved] = await rt.service.abandon(workers=["w-dead"])
    assert (moved.id, moved.status, moved.retry_due_at) == (died.id, "abandoned", None)

    late = await rt.service.submit(ref, {}, ALICE)
    claimed = await rt.service.claim(late.id, "w-1")
    assert claimed is not None
    assert (await rt.service.cancel(late.id, "alice")).status == "canceling"
    # The worker ends it as it ends any run past its time (engine/worker.py ``_finish``).
    due = await rt.service.retry_policy.due_for(
        rt.catalog, ref, claimed.retry_count, ExecutionStatus.TIMEOUT
    )
    ended = await rt.service.finish(
        late.id, ExecutionStatus.TIMEOUT, {"succeeded": False}, retry_due_at=due
    )
    assert ended is not None
    assert (ended.status, ended.retry_due_at) == ("timeout", None)
    for run in (died, late):
        await _make_due(rt, run.id)
    assert await Retries(rt.service, rt.service.retry_marks).sweep() == []
    assert await _chain(rt, died.id) == []
    assert await _chain(rt, late.id) == []


async def test_a_retry_that_cannot_be_prepared_does_not_hold_up_the_others(rt: Runtime) -> None:
    """One ended run whose secrets no longer open (the secret key was changed) fails its
    retry at every sweep: the retries due after it are still submitted."""
    from sqlalchemy import update

    from engine.storage.tables import executions

    ref = await _action(rt, max_retries=1)
    stuck = await rt.service.submit(ref, {"host": "web1", "token": "s3cret"}, ALICE)
    fine = await rt.service.submit(ref, {"host": "web2"}, ALICE)
    for run in (stuck, fine):
        await _run_and_end(rt, run.id, ExecutionStatus.TIMEOUT)
    await _make_due(rt, stuck.id)
    await _make_due(rt, fine.id)
    async with rt.store.write() as conn:
        await conn.execute(
            update(executions).where(executions.c.id == stuck.id).values(secrets="not-fernet")
        )
    [retry_id] = await Retries(rt.service, rt.service.retry_marks).sweep()
    assert (await rt.service.get(retry_id)).original_execution == fine.id
    assert (await rt.service.get(stuck.id)).retry_due_at is not None, "left due, not dropped"
    assert await _chain(rt, stuck.id) == []


async def test_the_retry_of_a_run_under_a_concurrency_policy_waits_for_its_slot(
    rt: Runtime,
) -> None:
    from engine.concurrency import ConcurrencyPolicy

    name = f"limited_{uuid.uuid4().hex[:8]}"
    spec = ActionSpec(
        ref=f"rt.{name}",
        pack_ref="rt",
        name=name,
        runner_type="shell",
        script="exit 0",
        param_schema=normalize_schema({"host": {"type": "string"}}),
        max_retries=1,
        concurrency=ConcurrencyPolicy(limit=1, parameters=("host",)),
    )
    await rt.catalog.create_action(spec)
    first = await rt.service.submit(spec.ref, {"host": "web1"}, ALICE)
    await _run_and_end(rt, first.id, ExecutionStatus.TIMEOUT)
    holder = await rt.service.submit(spec.ref, {"host": "web1"}, ALICE)
    assert await rt.service.claim(holder.id, "w-1") is not None
    await _make_due(rt, first.id)
    [retry_id] = await Retries(rt.service, rt.service.retry_marks).sweep()
    assert await rt.service.claim(retry_id, "w-1") is None, "web1's one slot is held"
    assert (await rt.service.get(retry_id)).status == "requested"
    await rt.service.finish(holder.id, ExecutionStatus.COMPLETED, {"succeeded": True})
    claimed = await rt.service.claim(retry_id, "w-1")
    assert claimed is not None
    assert claimed.retry_count == 1
    await rt.service.finish(retry_id, ExecutionStatus.COMPLETED, {"succeeded": True})
