"""A run's live output on its way to storage: decoded as the final result is (split
characters, invalid bytes, NUL), coalesced to one write per interval with one in flight, a
lone line written at once, failures retried without failing anything, and the process
runner feeding it exactly what it keeps (never past the cap)."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from engine.live_output import OutputHub, OutputWriter
from engine.output import OutputChunk, Stream, slice_chunks
from engine.packs import ActionSpec
from engine.runners import RunRequest, RunResult, storable
from engine.runners.process import ProcessRunner
from tests.waiting import eventually


class Recorder:
    """An in-memory repository that notes each write, can be slow, and can fail."""

    def __init__(self, delay_s: float = 0.0, fail_first: int = 0) -> None:
        self.chunks: list[OutputChunk] = []
        self.write_times: list[float] = []
        self.delay_s = delay_s
        self.fail_first = fail_first
        self.in_flight = 0
        self.most_in_flight = 0

    async def append(self, chunks: Sequence[OutputChunk]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.fail_first > 0:
                self.fail_first -= 1
                raise ConnectionError("database down")
            self.chunks.extend(chunks)
            self.write_times.append(time.monotonic())
        finally:
            self.in_flight -= 1

    async def read(
        self, execution_id: int, stream: Stream, offset: int, max_rows: int
    ) -> list[OutputChunk]:
        return [c for c in self.chunks if c.stream == stream][:max_rows]

    async def tail(self, execution_id: int, stream: Stream, max_bytes: int) -> list[OutputChunk]:
        return [c for c in self.chunks if c.stream == stream]

    async def drop(self, execution_id: int) -> int:
        count = len(self.chunks)
        self.chunks.clear()
        return count

    def text(self, stream: Stream = "stdout") -> str:
        mine = sorted((c for c in self.chunks if c.stream == stream), key=lambda c: c.offset)
        return slice_chunks(mine, 0, 10**9)[0]


async def test_split_characters_invalid_bytes_and_nul_decode_as_the_result_does() -> None:
    repo = Recorder()
    writer = OutputWriter(1, repo, interval_s=0.01)
    raw = "a ✓ b 🎉\n".encode() + b"\xff\xfe bad \x00 nul " + "é".encode()[:1]
    for i in range(len(raw)):  # one byte at a time: every character split
        writer.feed("stdout", raw[i : i + 1])
    writer.feed("stderr", b"err\n")
    await writer.close()
    expected = RunResult(outcome="completed", stdout=raw.decode("utf-8", errors="replace"))
    assert repo.text() == expected.as_record()["stdout"] == storable(expected.stdout)
    assert repo.text("stderr") == "err\n"
    writer.feed("stdout", b"after close")
    await asyncio.sleep(0.02)
    assert "after close" not in repo.text()


async def test_a_short_run_writes_nothing_its_result_holds_the_output() -> None:
    repo = Recorder()
    writer = OutputWriter(1, repo, interval_s=0.5)
    writer.feed("stdout", b"done\n")
    await writer.close(result_follows=True)
    assert repo.write_times == []
    assert not writer.touched  # so the worker has no chunks to remove either


async def test_a_lone_line_is_written_at_once_and_a_flood_is_coalesced() -> None:
    repo = Recorder(delay_s=0.005)
    hub = OutputHub()
    writer = OutputWriter(1, repo, hub, interval_s=0.1)
    started = time.monotonic()
    writer.feed("stdout", b"first\n")
    # The first write waits one interval from the start (a shorter run writes nothing).
    assert await hub.wait(1, 5.0) is True
    assert time.monotonic() - started >= 0.09
    assert repo.text() == "first\n"
    await asyncio.sleep(0.15)  # a quiet spell
    woken = asyncio.create_task(hub.wait(1, 5.0))
    quiet_ended = time.monotonic()
    writer.feed("stdout", b"second\n")
    assert await woken is True
    assert time.monotonic() - quiet_ended < 0.1
    assert repo.text() == "first\nsecond\n"

    lines = [f"line {i}\n".encode() for i in range(5000)]
    flood_started = time.monotonic()
    for i, line in enumerate(lines):
        writer.feed("stdout", line)
        if i % 500 == 0:
            await asyncio.sleep(0.03)  # about 0.3 s of printing
    await writer.close()
    elapsed = time.monotonic() - flood_started
    assert repo.text() == "first\nsecond\n" + b"".join(lines).decode()
    assert repo.most_in_flight == 1
    # One write per interval at most (plus the one the flood's first line may start at once
    # and the last one of close()).
    assert len(repo.write_times) <= 1 + elapsed / 0.1 + 2
    gaps = [b - a for a, b in zip(repo.write_times[1:], repo.write_times[2:], strict=False)]
    assert all(gap >= 0.09 for gap in gaps[:-1]), gaps


async def test_a_failed_write_is_tried_again_and_never_raises() -> None:
    repo = Recorder(fail_first=2)
    writer = OutputWriter(1, repo, interval_s=0.01)
    writer.feed("stdout", b"one\n")
    await eventually(lambda: repo.fail_first == 0, "two failed writes")
    writer.feed("stdout", b"two\n")
    await eventually(lambda: repo.text() == "one\ntwo\n", "both lines stored after the failures")
    await writer.close()
    assert repo.text() == "one\ntwo\n"


async def test_close_gives_up_on_a_stuck_database(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("engine.live_output.CLOSE_TIMEOUT_S", 0.1)
    repo = Recorder(delay_s=10.0)
    writer = OutputWriter(1, repo, interval_s=0.01)
    writer.feed("stdout", b"x\n")
    started = time.monotonic()
    await writer.close()
    assert time.monotonic() - started < 2.0
    assert repo.in_flight == 0


def _shell_action(tmp_path: Path, script: str) -> ActionSpec:
    return ActionSpec(ref="t.live", pack_ref="t", name="live", runner_type="shell", script=script)


async def test_the_process_runner_feeds_what_it_keeps_up_to_the_cap(tmp_path: Path) -> None:
    fed: list[tuple[str, bytes]] = []
    runner = ProcessRunner(output_cap_bytes=1024, kill_grace_s=1.0, work_dir=tmp_path / "w")
    script = (
        "printf 'hello ✓\\n'; printf 'to stderr\\n' >&2; "
        f"{sys.executable} -c \"import sys; sys.stdout.write('x' * 5000)\""
    )
    request = RunRequest(
        execution_id=1,
        action=_shell_action(tmp_path, script),
        parameters={},
        timeout_s=10,
        on_output=lambda stream, data: fed.append((stream, data)),
    )
    result = await runner.run(request)
    assert result.outcome == "completed", result.error
    out = b"".join(d for s, d in fed if s == "stdout")
    err = b"".join(d for s, d in fed if s == "stderr")
    assert len(out) == 1024
    assert result.stdout_truncated
    assert out.decode(errors="replace") == result.stdout
    assert err.decode() == result.stderr == "to stderr\n"


async def test_a_failing_sink_does_not_fail_the_run(tmp_path: Path) -> None:
    runner = ProcessRunner(output_cap_bytes=4096, kill_grace_s=1.0, work_dir=tmp_path / "w")

    def broken(stream: str, data: bytes) -> None:
        raise RuntimeError("sink broke")

    request = RunRequest(
        execution_id=1,
        action=_shell_action(tmp_path, "echo one; echo two"),
        parameters={},
        timeout_s=10,
        on_output=broken,
    )
    result = await runner.run(request)
    assert result.outcome == "completed"
    assert result.stdout == "one\ntwo\n"
