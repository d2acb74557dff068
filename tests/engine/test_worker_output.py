"""The worker and live output (embedded runtime, SQLite): a run's output is readable while it
lasts and its chunks go once the result is stored; a worker stopped mid-run leaves the output
readable as that of the ended run; a database that refuses the chunks fails nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from config import Settings
from engine.gate import Requester, Submitted
from engine.output import OutputChunk
from engine.runtime import Runtime, build_runtime
from engine.status import TERMINAL, ExecutionStatus
from tests.waiting import eventually

LIVE_PACK = Path(__file__).resolve().parents[1] / "fixtures" / "packs" / "live_pack"
ADMIN = Requester(identity="tester", role="admin", source="api")


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'w.db'}",
            data_dir=tmp_path / "data",
            packs_path=str(tmp_path),
            admin_password="admin-password-1",
            kill_grace_s=1,
        )
    )
    await runtime.register_pack(LIVE_PACK)
    try:
        yield runtime
    finally:
        await runtime.close(grace_s=0)


async def _start(rt: Runtime, **params: int) -> int:
    outcome = await rt.gate.run(ADMIN, "live_pack.ticker", dict(params))
    assert isinstance(outcome, Submitted)
    return outcome.record.id


async def _ended(rt: Runtime, execution_id: int) -> str:
    async def status() -> str:
        return (await rt.service.get(execution_id)).status

    return await eventually(
        status, "the run to end", 20.0, interval_s=0.02, done=lambda s: s in TERMINAL
    )


async def test_chunks_while_running_none_after(rt: Runtime) -> None:
    await rt.start_worker("w1")
    execution_id = await _start(rt, lines=6, interval_ms=150)

    async def stored() -> list[OutputChunk]:
        return await rt.live_output.repository.read(execution_id, "stdout", 0, 100)

    chunks = await eventually(stored, "the first line stored", 10.0, interval_s=0.02)
    assert chunks[0].data.startswith("tick 0 ✓\n")
    assert (await rt.service.get(execution_id)).status == "running"
    assert await _ended(rt, execution_id) == "completed"
    # The chunks are removed right after the end is recorded.
    await eventually(stored, "the chunks removed", 10.0, interval_s=0.02, done=lambda c: not c)
    piece = await rt.live_output.read(execution_id, "stdout", 0)
    assert piece.content == "".join(f"tick {i} ✓\n" for i in range(6))
    assert piece.running is False


async def test_a_worker_stopped_mid_run_leaves_the_output_readable(rt: Runtime) -> None:
    worker = await rt.start_worker("w1")
    execution_id = await _start(rt, lines=100, interval_ms=100)

    async def first_line() -> str:
        return (await rt.live_output.read(execution_id, "stdout", 0)).content

    await eventually(first_line, "the first line", 10.0, interval_s=0.02)
    await worker.stop(grace_s=0)
    record = await rt.service.get(execution_id)
    assert record.status == ExecutionStatus.ABANDONED.value
    assert "stdout" not in (record.result or {})
    piece = await rt.live_output.read(execution_id, "stdout", 0)
    assert piece.content.startswith("tick 0 ✓\n")
    assert piece.running is False


async def test_a_database_refusing_the_chunks_fails_nothing(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def refuse(chunks: Sequence[OutputChunk]) -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError("no room")

    rt.live_output.repository.append = refuse  # type: ignore[method-assign]
    await rt.start_worker("w1")
    execution_id = await _start(rt, lines=3, interval_ms=100)
    assert await _ended(rt, execution_id) == "completed"
    record = await rt.service.get(execution_id)
    assert (record.result or {})["stdout"] == "".join(f"tick {i} ✓\n" for i in range(3))
    assert calls >= 2
    assert "live output not stored" in caplog.text
