"""Live output's records and repository: cutting text at UTF-8 byte offsets, chunks stored
and read back on both dialects, and :class:`LiveOutput` reading from the chunks while a run
lasts and from its result once it ended, at the same offsets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from engine.errors import NotFound
from engine.live_output import LiveOutput, OutputHub
from engine.output import MAX_CHUNK_BYTES, OutputChunk, last_lines, slice_chunks, split_text
from engine.records import Execution
from engine.storage import Store, build_store
from engine.storage.output import output_repository
from tests.engine.test_integration import PostgresDatabases

WAIT_S = 30.0

_INSERT_EXECUTION = text(
    "INSERT INTO executions (id, action_ref, status, config, executor, timeout_s,"
    " created, updated) VALUES (:id, 'core.echo', 'running', '{}', '{}', 60,"
    " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
)


def chunks_of(text_: str, sizes: list[int], execution_id: int = 1) -> list[OutputChunk]:
    """``text_`` cut into chunks of ``sizes`` characters (the rest in the last)."""
    out, offset, start = [], 0, 0
    for size in [*sizes, len(text_)]:
        piece = text_[start : start + size]
        if not piece:
            break
        out.append(OutputChunk(execution_id, "stdout", offset, piece))
        offset += len(piece.encode())
        start += size
    return out


# -- pure ---------------------------------------------------------------------------------------


def test_slices_join_back_to_the_text_at_any_limit() -> None:
    text_ = "héllo wörld ✓ 🎉\nline two\n" * 3
    chunks = chunks_of(text_, [3, 5, 1, 7])
    for limit in (1, 2, 3, 5, 64):
        offset, parts = 0, []
        while True:
            content, start, following = slice_chunks(chunks, offset, limit)
            assert start == offset
            if following == offset:
                break
            assert len(content.encode()) <= max(limit, 4)
            parts.append(content)
            offset = following
        assert "".join(parts) == text_
        assert offset == len(text_.encode())


def test_an_offset_inside_a_character_moves_to_the_next_one() -> None:
    chunks = chunks_of("a✓b", [])
    content, start, following = slice_chunks(chunks, 2, 10)  # ✓ is bytes 1-3
    assert (content, start, following) == ("b", 4, 5)


def test_duplicate_chunks_are_read_once_and_a_gap_stops_the_text() -> None:
    first, second = chunks_of("abcdef", [3])
    assert slice_chunks([first, first, second, second], 0, 100) == ("abcdef", 0, 6)
    late = OutputChunk(1, "stdout", 10, "xyz")
    assert slice_chunks([first, late], 0, 100) == ("abc", 0, 3)
    assert slice_chunks([late], 3, 100) == ("xyz", 10, 13)
    assert slice_chunks([], 5, 100) == ("", 5, 5)


def test_split_text_respects_the_byte_limit_and_characters() -> None:
    text_ = "✓" * 10 + "a"
    pieces = split_text(text_, 4)
    assert "".join(pieces) == text_
    assert all(len(p.encode()) <= 4 for p in pieces)
    assert split_text("🎉", 2) == ["🎉"]
    assert split_text("") == []


def test_last_lines() -> None:
    assert last_lines("a\nb\nc", 2) == "b\nc"
    assert last_lines("a\nb\n", 1) == "b\n"
    assert last_lines("", 3) == ""


# -- repository, both dialects ------------------------------------------------------------------


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
    store = build_store(url, pool_size=2)
    try:
        await asyncio.wait_for(store.upgrade(), WAIT_S)
        async with store.write() as conn:
            for execution_id in (1, 2):
                await conn.execute(_INSERT_EXECUTION, {"id": execution_id})
        yield store
    finally:
        await store.close()
        await databases.drop()


async def test_chunks_are_appended_read_from_an_offset_tailed_and_dropped(
    any_store: Store,
) -> None:
    repo = output_repository(any_store)
    text_ = "".join(f"line {i} ✓\n" for i in range(100))
    chunks = chunks_of(text_, [7] * 50)
    other = OutputChunk(2, "stdout", 0, "not mine\n")
    err = OutputChunk(1, "stderr", 0, "oops\n")
    await repo.append([*chunks[:10], other, err])
    await repo.append(chunks[10:])

    got = await repo.read(1, "stdout", 0, 1000)
    assert slice_chunks(got, 0, 10**6)[0] == text_
    middle = len(text_.encode()) // 2
    from_middle = await repo.read(1, "stdout", middle, 1000)
    assert from_middle[0].offset <= middle < from_middle[0].end
    assert slice_chunks(from_middle, middle, 10**6)[0] == text_.encode()[middle:].decode()
    assert len(await repo.read(1, "stdout", 0, 3)) == 3

    tail = await repo.tail(1, "stdout", 20)
    assert tail
    assert tail[-1].end == len(text_.encode())
    assert sum(len(c.data.encode()) for c in tail) >= 20
    end_text = slice_chunks(tail, tail[0].offset, 10**6)[0]
    assert text_.endswith(end_text)
    assert [c.data for c in await repo.read(1, "stderr", 0, 10)] == ["oops\n"]

    assert await repo.drop(1) == len(chunks) + 1
    assert await repo.read(1, "stdout", 0, 10) == []
    assert [c.data for c in await repo.read(2, "stdout", 0, 10)] == ["not mine\n"]


async def test_a_big_chunk_is_found_from_an_offset_inside_it(any_store: Store) -> None:
    repo = output_repository(any_store)
    big = "x" * MAX_CHUNK_BYTES
    await repo.append([OutputChunk(1, "stdout", 0, big), OutputChunk(1, "stdout", len(big), "y")])
    got = await repo.read(1, "stdout", MAX_CHUNK_BYTES - 1, 10)
    assert slice_chunks(got, MAX_CHUNK_BYTES - 1, 10) == ("xy", MAX_CHUNK_BYTES - 1, len(big) + 1)


# -- LiveOutput ---------------------------------------------------------------------------------


class FakeExecutions:
    def __init__(self) -> None:
        self.rows: dict[int, Execution] = {}

    def put(self, execution_id: int, status: str, result: dict[str, Any] | None = None) -> None:
        now = datetime.now(UTC)
        self.rows[execution_id] = Execution(
            id=execution_id,
            action_ref="t.a",
            status=status,
            config={},
            parent=None,
            enforcement=None,
            result=result,
            created=now,
            updated=now,
            started_at=now,
            finished_at=None,
            executor=None,
            requester={},
        )

    async def get(self, execution_id: int) -> Execution:
        try:
            return self.rows[execution_id]
        except KeyError:
            raise NotFound(f"execution {execution_id} not found") from None


async def test_live_output_reads_chunks_while_running_and_the_result_after(
    any_store: Store,
) -> None:
    executions = FakeExecutions()
    live = LiveOutput(output_repository(any_store), executions)
    text_ = "one ✓\ntwo\nthree\n"
    executions.put(1, "running")
    await live.repository.append(chunks_of(text_, [4, 6]))

    first = await live.read(1, "stdout", 0, 5)
    assert (first.content, first.offset, first.running, first.truncated) == ("one ", 0, True, False)
    rest = await live.read(1, "stdout", first.next_offset)
    assert first.content + rest.content == text_
    assert await live.tail(1, "stdout", max_lines=2) == "two\nthree\n"
    nothing = await live.read(1, "stderr", 0)
    assert (nothing.content, nothing.next_offset, nothing.running) == ("", 0, True)

    result = {"stdout": text_ + "four\n", "stderr": "", "stdout_truncated": True}
    executions.put(1, "completed", result)
    await live.repository.drop(1)
    after = await live.read(1, "stdout", rest.next_offset)
    assert (after.content, after.running, after.truncated) == ("four\n", False, True)
    assert after.next_offset == len((text_ + "four\n").encode())
    assert await live.tail(1, "stdout", max_lines=1) == "four\n"

    # An abandoned run's result has no output: its chunks are read.
    executions.put(2, "abandoned", {"succeeded": False, "error": "abandoned"})
    await live.repository.append([OutputChunk(2, "stdout", 0, "partial\n")])
    left = await live.read(2, "stdout", 0)
    assert (left.content, left.running) == ("partial\n", False)

    with pytest.raises(NotFound):
        await live.read(99, "stdout", 0)


async def test_the_hub_wakes_waiters_at_once_and_forgets_them() -> None:
    hub = OutputHub()
    waiter = asyncio.create_task(hub.wait(5, 10.0))
    await asyncio.sleep(0)
    assert hub.waiting == 1
    hub.notify(5)
    assert await asyncio.wait_for(waiter, 1.0) is True
    assert await hub.wait(5, 0.01) is False
    assert hub.waiting == 0
    hub.notify(6)  # nobody waits: nothing kept
    assert hub.waiting == 0
