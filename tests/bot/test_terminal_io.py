"""The terminal chat's I/O pieces, without a terminal: whole writes to a descriptor that is full
and non-blocking, lines read without making stdin non-blocking, colour only where wanted, and
where the history is kept."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot import terminal_prompt
from bot.terminal_io import LineReader, Paint, colour_wanted, write_whole
from bot.terminal_prompt import ChatHistory, history_path, open_history

#: Bytes written through a pipe whose reader is slow (a pipe holds 64 KiB).
BIG_BYTES = 1_000_000


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_fd, write_fd = os.pipe()
    try:
        yield read_fd, write_fd
    finally:
        for fd in (read_fd, write_fd):
            with contextlib.suppress(OSError):  # closed by the test already
                os.close(fd)


def test_write_whole_waits_on_a_full_non_blocking_descriptor(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    os.set_blocking(write_fd, False)  # as a terminal shared with a non-blocking stdin was
    received = bytearray()

    def slow_reader() -> None:
        while chunk := os.read(read_fd, 4096):
            received.extend(chunk)
            time.sleep(0.0005)

    reader = threading.Thread(target=slow_reader)
    reader.start()
    data = bytes(range(256)) * (BIG_BYTES // 256)
    write_whole(write_fd, data)
    os.close(write_fd)
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert bytes(received) == data


async def test_line_reader_leaves_the_descriptor_blocking(pipe: tuple[int, int]) -> None:
    read_fd, write_fd = pipe
    reader = LineReader(read_fd)
    os.write(write_fd, b"first\nsec")
    assert await reader.readline() == b"first\n"
    assert os.get_blocking(read_fd)
    pending = asyncio.create_task(reader.readline())
    await asyncio.sleep(0)  # it waits on the loop, not in a blocked read
    assert not pending.done()
    os.write(write_fd, b"ond\nlast")
    assert await asyncio.wait_for(pending, 5) == b"second\n"
    os.close(write_fd)
    assert await asyncio.wait_for(reader.readline(), 5) == b"last"
    assert await reader.readline() == b""
    assert os.get_blocking(read_fd)


async def test_line_reader_cancels_cleanly(pipe: tuple[int, int]) -> None:
    read_fd, _ = pipe
    reader = LineReader(read_fd)
    waiting = asyncio.create_task(reader.readline())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_line_reader_reads_a_file_and_dev_null(tmp_path: Path) -> None:
    commands = tmp_path / "commands.txt"
    commands.write_bytes(b"help\nactions\n")
    with commands.open("rb") as f:
        reader = LineReader(f.fileno())
        assert [await reader.readline() for _ in range(3)] == [b"help\n", b"actions\n", b""]
    with open(os.devnull, "rb") as null:
        assert await LineReader(null.fileno()).readline() == b""


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert colour_wanted(_Tty(), {"TERM": "xterm"})
    assert not colour_wanted(io.StringIO(), {"TERM": "xterm"})
    assert not colour_wanted(_Tty(), {"TERM": "xterm", "NO_COLOR": "1"})
    assert colour_wanted(_Tty(), {"TERM": "xterm", "NO_COLOR": ""})  # empty: not set
    assert not colour_wanted(_Tty(), {"TERM": "dumb"})
    line = "#4 ops.deploy: failed in 3 ms"
    assert Paint(False).status(line, "failed") == line
    assert Paint(True).status(line, "failed") == f"\x1b[31m{line}\x1b[0m"
    assert Paint(True).refusal("Unknown command x.\nUsage:") == (
        "\x1b[31mUnknown command x.\x1b[0m\nUsage:"
    )


def test_history_path_flag_then_setting_then_xdg_state(tmp_path: Path) -> None:
    home_state = Path("~/.local/state").expanduser() / "attune" / "chat_history"
    assert history_path(None, {}) == home_state
    assert history_path(None, {"XDG_STATE_HOME": "/s"}) == Path("/s/attune/chat_history")
    assert history_path(None, {"ATTUNE_CHAT_HISTORY": "/h/file"}) == Path("/h/file")
    assert history_path(None, {"ATTUNE_CHAT_HISTORY": "off"}) is None
    assert history_path(None, {"ATTUNE_CHAT_HISTORY": ""}) is None
    assert history_path("/flag", {"ATTUNE_CHAT_HISTORY": "/h/file"}) == Path("/flag")
    assert history_path("off", {"ATTUNE_CHAT_HISTORY": "/h/file"}) is None  # --no-history


def test_history_file_is_private_and_leaves_out_secrets(tmp_path: Path) -> None:
    path = tmp_path / "state" / "attune" / "chat_history"
    history = ChatHistory(path, keep=lambda line: "password=" not in line)
    for line in ("run ops.deploy host=web1", " run x.y a=1", "run ops.login password=hunter2"):
        history.append_string(line)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    text = path.read_text()
    assert "host=web1" in text
    assert "a=1" not in text
    assert "hunter2" not in text
    # All three are still recalled in this session.
    assert len(history.get_strings()) == 3


def test_an_unusable_history_file_is_said_and_memory_used(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    history, note = open_history(blocker / "chat_history", keep=lambda _line: True)
    assert note is not None
    assert str(blocker / "chat_history") in note
    history.append_string("help")
    assert history.get_strings() == ["help"]


def test_a_long_history_is_cut_to_its_newest_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(terminal_prompt, "HISTORY_TRIM_BYTES", 2000)
    monkeypatch.setattr(terminal_prompt, "HISTORY_KEPT_LINES", 10)
    path = tmp_path / "chat_history"
    first = ChatHistory(path, keep=lambda _line: True)
    for i in range(100):
        first.store_string(f"run core.echo message=line-{i}")
    assert path.stat().st_size > 2000
    again = ChatHistory(path, keep=lambda _line: True)
    assert list(again.load_history_strings()) == [
        f"run core.echo message=line-{i}" for i in range(99, 89, -1)
    ]
    assert path.stat().st_mode & 0o777 == 0o600
