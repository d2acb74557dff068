"""Concurrency policies in the engine, on SQLite with the in-process broker and on PostgreSQL
with RabbitMQ (the backends of tests/engine/test_integration.py).

What a user sees: the stamps a shell action writes when it starts and ends (never more than
the limit overlap; a queued group starts first come, first served), the statuses and results
of the runs (a refused one ``cancelled`` naming the limit), and that a group whose run's
worker died is not blocked. The slot counts are read from ``concurrency_groups`` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from engine.concurrency import ConcurrencyPolicy
from engine.errors import Unavailable
from engine.inquiry_records import InquiryFilter
from engine.packs import ActionSpec
from engine.params import normalize_schema
from engine.runtime import Runtime
from engine.status import ExecutionStatus
from engine.storage.tables import concurrency_groups, executions
from tests.engine.test_integration import (
    ALICE,
    Backend,
    backend,
    pg_databases,
    unique,
    wait_status,
)
from tests.waiting import eventually

__all__ = ["backend", "pg_databases"]  # the fixtures, shared with test_integration

BACKENDS = pytest.mark.parametrize(
    "backend",
    [
        pytest.param(("sqlite", "memory"), id="sqlite+memory"),
        pytest.param(
            ("postgres", "rabbitmq"),
            id="postgres+rabbitmq",
            marks=[pytest.mark.postgres, pytest.mark.rabbitmq],
        ),
    ],
    indirect=True,
)

#: Writes ``start <id> <time>`` and ``end <id> <time>`` lines around a sleep.
STAMP_SCRIPT = """\
. "$ATTUNE_PARAMETERS_FILE"
printf 'start %s %s\\n' "$ATTUNE_EXECUTION_ID" "$(date +%s.%N)" >> "$path"
sleep "$delay"
printf 'end %s %s\\n' "$ATTUNE_EXECUTION_ID" "$(date +%s.%N)" >> "$path"
"""
RUN_S = 30.0


async def stamp_action(rt: Runtime, policy: ConcurrencyPolicy | None) -> str:
    name = unique("stamp")
    spec = ActionSpec(
        ref=f"cc.{name}",
        pack_ref="cc",
        name=name,
        runner_type="shell",
        script=STAMP_SCRIPT,
        param_schema=normalize_schema(
            {
                "path": {"type": "string", "required": True},
                "delay": {"type": "number", "default": 0},
                "host": {"type": "string", "default": "a"},
            }
        ),
        parameter_delivery="file",
        parameter_format="dotenv",
        concurrency=policy,
    )
    await rt.catalog.create_action(spec)
    return spec.ref


def intervals(path: Path) -> dict[int, tuple[float, float]]:
    """(start, end) of each run that wrote both stamps."""
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    for line in path.read_text().splitlines():
        what, execution_id, at = line.split()
        (starts if what == "start" else ends)[int(execution_id)] = float(at)
    return {i: (starts[i], ends[i]) for i in starts if i in ends}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The largest number of the intervals that overlap at one time."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


async def slots_held(rt: Runtime, ref: str) -> dict[str, int]:
    """Slots held by the groups of action ``ref`` (the database is shared by the module)."""
    async with rt.store.read() as conn:
        rows = (await conn.execute(select(concurrency_groups))).all()
    return {r.key: r.running for r in rows if r.key.split(" ")[0] == ref}


async def group_of(rt: Runtime, execution_id: int) -> str | None:
    async with rt.store.read() as conn:
        key: str | None = (
            await conn.execute(
                select(executions.c.concurrency_key).where(executions.c.id == execution_id)
            )
        ).scalar()
    return key


async def submit(rt: Runtime, ref: str, out: Path, delay: float, **more: Any) -> int:
    record = await rt.service.submit(ref, {"path": str(out), "delay": delay, **more}, ALICE)
    assert record.status == "requested"
    return record.id


@BACKENDS
@pytest.mark.parametrize("limit", [1, 2])
async def test_enqueue_holds_the_limit_first_come_first_served(
    backend: Backend, tmp_path: Path, limit: int
) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    ref = await stamp_action(rt, ConcurrencyPolicy(limit=limit))
    out = tmp_path / "stamps.txt"
    ids = [await submit(rt, ref, out, 0.3) for _ in range(5)]
    for execution_id in ids:
        done = await wait_status(rt, execution_id, "completed", timeout_s=RUN_S)
        assert done.result["succeeded"] is True
    spans = intervals(out)
    assert sorted(spans) == ids, "each run ran once"
    assert most_at_once(list(spans.values())) == limit, "never more than the limit at once"
    if limit == 1:
        by_start = sorted(spans, key=lambda i: spans[i][0])
        assert by_start == ids, "started in the order they were submitted"
    assert (await slots_held(rt, ref)).get(ref) == 0, "every slot given back"
    assert [await group_of(rt, i) for i in ids] == [None] * 5, "ended runs leave their group"


@BACKENDS
async def test_cancel_refuses_the_runs_over_the_limit(backend: Backend, tmp_path: Path) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    ref = await stamp_action(rt, ConcurrencyPolicy(limit=1, method="cancel"))
    out = tmp_path / "stamps.txt"
    first = await submit(rt, ref, out, 1.5)
    await wait_status(rt, first, "running")
    refused = [await submit(rt, ref, out, 0) for _ in range(2)]
    for execution_id in refused:
        record = await wait_status(rt, execution_id, "cancelled")
        assert record.result["error"] == (
            "Execution cancelled by policy: "
            "Concurrency limit exceeded: 1 running executions (limit: 1)"
        )
        assert record.result["message"].startswith("Policy violation: ")
        assert record.started_at is None
    await wait_status(rt, first, "completed", timeout_s=RUN_S)
    later = await submit(rt, ref, out, 0)
    await wait_status(rt, later, "completed", timeout_s=RUN_S)
    assert sorted(intervals(out)) == [first, later], "the refused runs never ran"
    assert (await slots_held(rt, ref)).get(ref) == 0


@BACKENDS
async def test_each_group_of_parameter_values_has_its_own_limit(
    backend: Backend, tmp_path: Path
) -> None:
    rt = await backend.runtime(worker_id="worker-1")
    ref = await stamp_action(rt, ConcurrencyPolicy(limit=1, parameters=("host",)))
    out = tmp_path / "stamps.txt"
    a1 = await submit(rt, ref, out, 1.0, host="a")
    b1 = await submit(rt, ref, out, 1.0, host="b")
    a2 = await submit(rt, ref, out, 0.1, host="a")
    for execution_id in (a1, b1, a2):
        await wait_status(rt, execution_id, "completed", timeout_s=RUN_S)
    spans = intervals(out)
    assert most_at_once([spans[a1], spans[b1]]) == 2, "hosts a and b ran at the same time"
    assert spans[a2][0] >= spans[a1][1], "the second run on host a waited for the first"


@BACKENDS
async def test_a_slot_comes_back_when_its_run_is_abandoned_not_when_a_waiter_is_cancelled(
    backend: Backend, tmp_path: Path
) -> None:
    """No worker: the test claims as workers would. A run whose worker died holds its slot
    until the sweep ends it ``abandoned``; then the next waiting run may take it."""
    rt = await backend.runtime()
    ref = await stamp_action(rt, ConcurrencyPolicy(limit=1))
    out = tmp_path / "stamps.txt"
    x, y, z = [await submit(rt, ref, out, 0) for _ in range(3)]
    svc = rt.service
    taken = await svc.claim(x, "ghost")
    assert taken is not None
    assert taken.id == x
    assert await svc.claim(y, "w") is None, "the slot is held"
    assert await svc.claim(x, "w") is None, "a claimed run is not claimed twice"
    assert (await svc.get(y)).status == "requested"
    assert await slots_held(rt, ref) == {ref: 1}

    await svc.cancel(y, "alice")
    assert (await svc.get(y)).status == "cancelled"
    assert await slots_held(rt, ref) == {ref: 1}, "a waiting run held no slot and gives none back"

    moved = await svc.abandon(workers=["ghost"])
    assert [r.id for r in moved] == [x]
    assert await slots_held(rt, ref) == {ref: 0}
    claimed = await svc.claim(z, "w")
    assert claimed is not None
    assert claimed.id == z
    assert await svc.finish(z, ExecutionStatus.COMPLETED, {"succeeded": True}) is not None
    assert await slots_held(rt, ref) == {ref: 0}
    assert [await group_of(rt, i) for i in (x, y, z)] == [None] * 3


@BACKENDS
async def test_only_the_oldest_waiting_run_takes_a_free_slot(
    backend: Backend, tmp_path: Path
) -> None:
    rt = await backend.runtime()
    ref = await stamp_action(rt, ConcurrencyPolicy(limit=1))
    plain = await stamp_action(rt, None)
    out = tmp_path / "stamps.txt"
    older, newer = [await submit(rt, ref, out, 0) for _ in range(2)]
    assert await group_of(rt, older) == ref
    free = await submit(rt, plain, out, 0)
    assert await group_of(rt, free) is None
    assert await rt.service.claim(newer, "w") is None, "an older run of the group waits"
    assert (await rt.service.get(newer)).status == "requested"
    # The database poll (broker away) takes plain runs and the oldest run of each group.
    claimed = await rt.service.claim_pending("w", 10)
    assert sorted(c.id for c in claimed) == [older, free]
    assert await slots_held(rt, ref) == {ref: 1}
    await rt.service.finish(older, ExecutionStatus.FAILED, {"succeeded": False})
    assert [c.id for c in await rt.service.claim_pending("w", 10)] == [newer]
    await rt.service.finish(newer, ExecutionStatus.COMPLETED, {"succeeded": True})
    await rt.service.finish(free, ExecutionStatus.COMPLETED, {"succeeded": True})
    assert await slots_held(rt, ref) == {ref: 0}


@BACKENDS
async def test_the_sweep_rings_again_only_the_oldest_waiting_run_of_a_group(
    backend: Backend, tmp_path: Path
) -> None:
    """Lost doorbells: the sweep of stale ``requested`` runs rings plain runs and each
    group's oldest (the others would only be refused: it is first in line)."""
    rt = await backend.runtime()
    ref = await stamp_action(rt, ConcurrencyPolicy(limit=1, parameters=("host",)))
    plain = await stamp_action(rt, None)
    out = tmp_path / "stamps.txt"
    a = [await submit(rt, ref, out, 0, host="a") for _ in range(3)]
    b = [await submit(rt, ref, out, 0, host="b") for _ in range(2)]
    free = await submit(rt, plain, out, 0)
    rung = await rt.service.requeue_stale(0)
    assert sorted(rung) == [a[0], b[0], free]
    for execution_id in [*a, *b, free]:
        await rt.service.cancel(execution_id, "test")  # leaves nothing requested behind


@BACKENDS
async def test_a_run_waiting_for_an_answer_keeps_its_slot_until_it_ends(backend: Backend) -> None:
    """A run parked on an inquiry (``core.ask``'s runner) is still ``running``: it holds its
    slot without its worker, and gives it back when the answer ends it."""
    rt = await backend.runtime(worker_id="worker-1")
    name = unique("ask")
    spec = ActionSpec(
        ref=f"cc.{name}",
        pack_ref="cc",
        name=name,
        runner_type="builtin",
        entry_point="ask",
        concurrency=ConcurrencyPolicy(limit=1),
    )
    await rt.catalog.create_action(spec)
    first = (await rt.service.submit(spec.ref, {"prompt": "go?"}, ALICE)).id
    second = (await rt.service.submit(spec.ref, {"prompt": "again?"}, ALICE)).id

    async def asked(execution_id: int) -> Any:
        found, _ = await rt.inquiries.list(InquiryFilter(execution=execution_id))
        return found[0] if found else None

    inquiry = await eventually(lambda: asked(first), "the first run to ask")
    assert (await rt.service.get(first)).status == "running"
    assert (await rt.service.get(second)).status == "requested", "the slot is held"
    assert await slots_held(rt, spec.ref) == {spec.ref: 1}
    await rt.inquiries.answer(inquiry, {"approved": True}, "alice")
    await wait_status(rt, first, "completed")
    later = await eventually(lambda: asked(second), "the second run to ask once the first ended")
    await rt.inquiries.answer(later, {"approved": False}, "alice")
    await wait_status(rt, second, "completed")
    assert await slots_held(rt, spec.ref) == {spec.ref: 0}


@BACKENDS
async def test_the_database_poll_keeps_what_it_claimed_when_a_group_claim_fails(
    backend: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim with a slot that fails (the database stops answering) after plain runs and
    another group's run were claimed: those are still handed to the worker, not left
    ``running`` with no one running them (holding their group's slot)."""
    rt = await backend.runtime()
    ref_a = await stamp_action(rt, ConcurrencyPolicy(limit=1))
    ref_b = await stamp_action(rt, ConcurrencyPolicy(limit=1))
    plain = await stamp_action(rt, None)
    out = tmp_path / "stamps.txt"
    free = await submit(rt, plain, out, 0)
    a = await submit(rt, ref_a, out, 0)
    b = await submit(rt, ref_b, out, 0)
    real = rt.service.slots.claim
    calls = 0

    async def fails_second(execution_id: int, worker_id: str) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Unavailable("the database does not answer")
        return await real(execution_id, worker_id)

    monkeypatch.setattr(rt.service.slots, "claim", fails_second)
    claimed = await rt.service.claim_pending("w", 10)
    assert sorted(c.id for c in claimed) == [free, a], "what was claimed is handed over"
    assert (await rt.service.get(b)).status == "requested", "the failed one waits"
    monkeypatch.setattr(rt.service.slots, "claim", real)
    assert [c.id for c in await rt.service.claim_pending("w", 10)] == [b]
    for execution_id in (free, a, b):
        await rt.service.finish(execution_id, ExecutionStatus.COMPLETED, {"succeeded": True})
    assert await slots_held(rt, ref_a) == {ref_a: 0}
    assert await slots_held(rt, ref_b) == {ref_b: 0}


@BACKENDS
async def test_a_claimed_run_whose_secrets_do_not_open_ends_failed_and_frees_its_slot(
    backend: Backend, tmp_path: Path
) -> None:
    """The secret key changed since the run was submitted: the claim cannot hand it to the
    worker. It ends ``failed`` saying why, instead of staying ``running`` with no one running
    it (holding its group's only slot)."""
    rt = await backend.runtime()
    name = unique("sealed")
    spec = ActionSpec(
        ref=f"cc.{name}",
        pack_ref="cc",
        name=name,
        runner_type="shell",
        script="exit 0",
        param_schema=normalize_schema({"token": {"type": "string", "secret": True}}),
        concurrency=ConcurrencyPolicy(limit=1),
    )
    await rt.catalog.create_action(spec)
    sealed = (await rt.service.submit(spec.ref, {"token": "s3cret"}, ALICE)).id
    nxt = (await rt.service.submit(spec.ref, {"token": "other"}, ALICE)).id
    async with rt.store.write() as conn:
        await conn.execute(
            update(executions).where(executions.c.id == sealed).values(secrets="not-fernet")
        )
    assert await rt.service.claim(sealed, "w") is None
    ended = await rt.service.get(sealed)
    assert ended.status == "failed"
    assert "cannot be decrypted" in ended.result["error"]
    assert await slots_held(rt, spec.ref) == {spec.ref: 0}
    claimed = await rt.service.claim(nxt, "w")
    assert claimed is not None
    assert claimed.parameters == {"token": "other"}
    await rt.service.finish(nxt, ExecutionStatus.COMPLETED, {"succeeded": True})


@BACKENDS
async def test_under_a_cancel_policy_a_claim_rings_the_next_waiting_run(
    backend: Backend, tmp_path: Path
) -> None:
    """The run behind one that took the last slot is rung at once, and refused then, not left
    waiting until a run ends (its own message came first and found the older run ahead)."""
    rt = await backend.runtime()
    ref = await stamp_action(rt, ConcurrencyPolicy(limit=1, method="cancel"))
    out = tmp_path / "stamps.txt"
    older, newer = [await submit(rt, ref, out, 0) for _ in range(2)]
    rung: list[int] = []
    rt.service.slots.publish_soon = lambda _topic, payload: rung.append(payload["execution_id"])
    assert await rt.service.claim(newer, "w") is None, "an older run is first in line"
    assert rung == [older]
    assert await rt.service.claim(older, "w") is not None
    await eventually(lambda: rung == [older, newer], "the next waiting run rung", 5)
    assert await rt.service.claim(newer, "w") is None
    refused = await rt.service.get(newer)
    assert refused.status == "cancelled"
    assert "limit: 1" in refused.result["error"]
    await rt.service.finish(older, ExecutionStatus.COMPLETED, {"succeeded": True})
    assert await slots_held(rt, ref) == {ref: 0}
