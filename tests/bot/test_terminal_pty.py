"""``attune chat`` on a real terminal: driven through a pseudo-terminal with pexpect, on a fresh
data folder (SQLite, in-process broker), as a person at a keyboard would use it.

What is checked is what the person would see: every byte of a 1 MB output, a line recalled with
the Up arrow in a second session, Tab completing an action ref and a parameter name, and news
arriving while a line is half typed leaving that line intact on the redrawn prompt.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKS = [ROOT / "packs", *(ROOT / "tests" / "fixtures" / "packs" / p for p in ("bulk_pack",))]
LIVE_PACK = ROOT / "tests" / "fixtures" / "packs" / "live_pack"
#: Bound on one expected piece of output (the first includes start-up and migrations).
EXPECT_TIMEOUT_S = 30.0
#: Bound on the exit after Ctrl-D.
EXIT_TIMEOUT_S = 20.0
MEGABYTE = 1_000_000
#: The pseudo-terminal's size.
COLUMNS_ROWS = (120, 24)
#: Escape sequences (CSI: colours, cursor moves, modes) a terminal interprets and hides.
_CSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]")
#: A colour (foreground or background) switched on.
#: Between the parts of a line: colour changes.
SGR = rb"(?:\x1b\[[0-9;]*m)*"
_COLOUR = re.compile(rb"\x1b\[[0-9;]*\b(3[0-8]|4[0-8]|9[0-7])\b[0-9;]*m")
UP = "\x1b[A"
#: A prompt_toolkit prompt starting: bracketed paste on, then only escape sequences, the prompt.
PROMPT_STARTED = rb"\x1b\[\?2004h(?:\x1b\[[0-?]*[ -/]*[@-~])*attune> "


def whole_line(pattern: bytes) -> bytes:
    """A line of output matching ``pattern`` whole (after the escape sequences a terminal
    hides, which prompt_toolkit may put at its start)."""
    return rb"\n(?:\x1b\[[0-?]*[ -/]*[@-~])*" + pattern + rb"\r\n"


def visible(raw: bytes) -> str:
    """What the terminal shows of ``raw``, roughly: escape sequences and carriage returns out."""
    return _CSI.sub(b"", raw).replace(b"\r", b"").decode("utf-8", errors="replace")


def megabyte_text(total: int = MEGABYTE) -> str:
    """What ``bulk_pack.megabyte`` prints (tests/fixtures/packs/bulk_pack)."""
    return "".join(f"L{i:07d} " + "x" * 90 + "\n" for i in range(total // 100 + 1))[:total]


class Terminal:
    """One ``attune chat`` on a pseudo-terminal; everything it printed is kept in ``raw``."""

    def __init__(self, child: pexpect.spawn, plain: bool) -> None:
        self.child = child
        self.plain = plain

    @property
    def raw(self) -> bytes:
        return self.child.logfile_read.getvalue()

    def expect(self, pattern: str | bytes, timeout_s: float = EXPECT_TIMEOUT_S) -> None:
        self.child.expect(pattern, timeout=timeout_s)

    def prompt(self) -> None:
        """Wait for a new prompt, ready for keys. prompt_toolkit draws a finished prompt once
        more when it ends, so ``attune> `` alone could be that one: a new prompt is the one
        drawn after bracketed paste is switched on (``ESC[?2004h``), which happens once the
        terminal is in raw mode, where Ctrl-C and Ctrl-D are keys, not signals."""
        self.expect("attune> " if self.plain else PROMPT_STARTED)

    def screen(self, upto_match: bool = False) -> pyte.Screen:
        """The terminal's screen after what was printed (up to the end of the last match)."""
        raw = self.raw
        if upto_match:
            raw = raw[: len(raw) - len(self.child.buffer)]
        screen = pyte.Screen(*COLUMNS_ROWS)
        pyte.ByteStream(screen).feed(raw)
        return screen

    def send(self, keys: str) -> None:
        self.child.send(keys)

    def leave(self) -> int:
        """Ctrl-D on an empty line; the exit status (bounded)."""
        self.child.sendcontrol("d")
        self.child.expect(pexpect.EOF, timeout=EXIT_TIMEOUT_S)
        self.child.close()
        return int(self.child.exitstatus if self.child.exitstatus is not None else -1)


class Recorder:
    """A bytes sink pexpect logs into (``logfile_read``)."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self._parts.append(data)

    def flush(self) -> None:
        return None

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


@pytest.fixture
def open_chat(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    """Start ``attune chat`` on a pseudo-terminal (24x120) in ``tmp_path``; every one started
    is killed at the end of the test if it has not exited."""
    started: list[pexpect.spawn] = []

    def start(*args: str, packs: list[Path] = PACKS, **extra: str) -> Terminal:
        env = {
            **os.environ,
            "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/chat.db",
            "ATTUNE_DATA_DIR": str(tmp_path / "data"),
            "ATTUNE_PACKS_PATH": ":".join(str(p) for p in packs),
            "XDG_STATE_HOME": str(tmp_path / "state"),
            "TERM": "xterm",
            # pexpect is no terminal emulator: it cannot answer the cursor position requests
            # prompt_toolkit sends (a real terminal does); without this each waits for a reply.
            "PROMPT_TOOLKIT_NO_CPR": "1",
            **extra,
        }
        for name in ("ATTUNE_AMQP_URL", "ATTUNE_CHAT_HISTORY", "NO_COLOR"):
            if name not in extra:
                env.pop(name, None)
        child = pexpect.spawn(
            sys.executable,
            ["-m", "bot.cli", "chat", *args],
            env=env,
            cwd=str(tmp_path),
            dimensions=COLUMNS_ROWS[::-1],
            maxread=65536,
            searchwindowsize=65536,
            timeout=EXPECT_TIMEOUT_S,
        )
        child.logfile_read = Recorder()
        started.append(child)
        return Terminal(child, plain="--plain" in args)

    yield start
    for child in started:
        if child.isalive():
            os.killpg(child.pid, signal.SIGKILL)  # it leads its own session and group
        child.close(force=True)


@pytest.mark.parametrize("mode", ["prompt", "plain"])
def test_a_megabyte_of_output_arrives_whole(open_chat: Callable[..., Terminal], mode: str) -> None:
    """The run's whole output is printed after its status line, every byte, in order: on the
    prompt, and in the plain line mode on a terminal (where it used to stop after about 20 KB:
    stdin made non-blocking made the shared terminal non-blocking)."""
    chat = open_chat(*(["--plain"] if mode == "plain" else []), ATTUNE_CHAT_WAIT_S="60")
    chat.prompt()
    chat.send("run bulk_pack.megabyte\r")
    chat.expect(r"bulk_pack\.megabyte: completed in \d+ ms")
    chat.expect(whole_line(rb"L0009999 x{90}"), timeout_s=60)
    chat.prompt()
    assert chat.leave() == 0
    shown = visible(chat.raw)
    status = re.search(r"^#1 bulk_pack\.megabyte: completed in \d+ ms\n", shown, re.M)
    assert status, shown[-2000:]
    expected = megabyte_text()
    body = shown[status.end() : status.end() + len(expected)]
    assert len(body) == len(expected), f"only {len(body)} of {len(expected)} bytes shown"
    first_difference = next(
        (i for i, (a, b) in enumerate(zip(body, expected, strict=True)) if a != b), None
    )
    assert first_difference is None, body[max(0, (first_difference or 0) - 200) :][:400]
    # Coloured on a terminal: the status line green.
    assert re.search(rb"\x1b\[32m#1 bulk_pack\.megabyte: completed", chat.raw)


def test_history_is_kept_across_sessions(
    open_chat: Callable[..., Terminal], tmp_path: Path
) -> None:
    first = open_chat()
    first.prompt()
    first.send("run core.echo message=from-the-first-session\r")
    first.expect(whole_line(rb"from-the-first-session"))
    first.prompt()
    first.send(" run core.echo message=typed-after-a-space\r")  # not written down, as bash
    first.expect(whole_line(rb"typed-after-a-space"))
    first.prompt()
    # A secret parameter's value is not written down either (the run itself does not matter).
    first.send("run core.http_request url=http://127.0.0.1:9/ auth_token=s3cr3t-t0ken\r")
    first.expect(r"Execution #3 queued: core\.http_request")
    first.prompt()
    assert first.leave() == 0
    kept = tmp_path / "state" / "attune" / "chat_history"
    assert kept.stat().st_mode & 0o777 == 0o600
    text = kept.read_text()
    assert "+run core.echo message=from-the-first-session" in text
    assert "typed-after-a-space" not in text
    assert "s3cr3t-t0ken" not in text

    second = open_chat()
    second.prompt()
    second.send(UP)
    second.expect("from-the-first-session")  # drawn on the prompt line
    second.send("\r")
    second.expect(r"Execution #4 queued: core\.echo message=from-the-first-session")
    second.expect(whole_line(rb"from-the-first-session"))
    second.prompt()
    # Ctrl-C clears a typed line (the line does not run); on an empty line it leaves at once.
    second.send("run core.echo message=never-run")
    second.expect("never-run")
    second.child.sendcontrol("c")
    second.prompt()
    second.child.sendcontrol("c")
    second.child.expect(pexpect.EOF, timeout=EXIT_TIMEOUT_S)
    second.child.close()
    assert second.child.exitstatus == 130
    assert "Execution #5" not in visible(second.raw)


def test_no_history_writes_no_file(open_chat: Callable[..., Terminal], tmp_path: Path) -> None:
    chat = open_chat("--no-history")
    chat.prompt()
    chat.send("run core.echo message=forgotten\r")
    chat.expect(whole_line(rb"forgotten"))
    chat.prompt()
    assert chat.leave() == 0
    assert not (tmp_path / "state").exists()


def test_tab_completes_action_refs_and_parameter_names(
    open_chat: Callable[..., Terminal],
) -> None:
    chat = open_chat(NO_COLOR="1")
    chat.prompt()
    chat.send("run bulk_pack.me\t")
    chat.expect("megabyte")
    chat.send(" tot\t")
    chat.expect("total_bytes=")
    chat.send("250\r")
    chat.expect(r"Execution #1 queued: bulk_pack\.megabyte total_bytes=250")
    chat.expect(r"#1 bulk_pack\.megabyte: completed")
    chat.expect(whole_line(rb"L0000002 x{41}"))  # 250 bytes: two lines and 50 of a third
    chat.prompt()
    # Commands too: the first word.
    chat.send("stat\t 1\r")
    chat.expect(r"#1 bulk_pack\.megabyte: completed")
    chat.prompt()
    # And the fixed words of the action aliases (packs/examples/aliases/greet.yaml).
    chat.send("gre\t")
    chat.expect("greet")
    chat.send(" tabby\r")
    chat.expect(whole_line(rb"Hello, tabby!"))
    chat.prompt()
    assert chat.leave() == 0
    assert not _COLOUR.search(chat.raw), "colour despite NO_COLOR"


def test_news_while_typing_leaves_the_typed_line_intact(
    open_chat: Callable[..., Terminal],
) -> None:
    """Live lines of a run arrive while a command is half typed: they are printed above the
    prompt, the prompt is drawn again with the half-typed line, and finishing the line runs
    exactly what was typed before and after the news."""
    chat = open_chat(packs=[*PACKS, LIVE_PACK], ATTUNE_CHAT_WAIT_S="0")
    chat.prompt()
    chat.send("run live_pack.ticker lines=12 interval_ms=300\r")
    chat.expect(rb"#1 \| " + SGR + rb"tick 1 ")
    chat.prompt()
    chat.send("run core.echo mess")
    chat.expect("mess")  # drawn
    typed_at = len(chat.raw)
    chat.expect(
        rb"#1 \| " + SGR + rb"tick \d+ "
    )  # news after the half-typed line was on the screen
    chat.expect(rb"attune> " + SGR + rb"run core\.echo mess")  # the prompt redrawn with it
    after = chat.raw[typed_at:]
    assert re.search(rb"#1 \| .*tick \d+ .*attune> .*run core\.echo mess", after, re.S), after
    # What the screen shows at that moment (a terminal emulator reads what was printed up to
    # the redrawn line): the news above, and the prompt with the half-typed line, cursor after it.
    screen = chat.screen(upto_match=True)
    rows = [row.rstrip() for row in screen.display]
    assert rows[screen.cursor.y] == "attune> run core.echo mess", rows
    assert screen.cursor.x == len("attune> run core.echo mess"), rows
    above = rows[: screen.cursor.y]
    assert [r for r in above if re.fullmatch(r"#1 \| tick \d+ ✓", r)], rows
    assert not [r for r in above if "run core.echo mess" in r], rows  # not left behind, torn
    chat.send("age=intact\r")
    chat.expect(r"Execution #2 queued: core\.echo message=intact")
    chat.expect(whole_line(rb"intact"))
    chat.expect(r"#1 live_pack\.ticker: completed")
    chat.prompt()
    assert chat.leave() == 0
