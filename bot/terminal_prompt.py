"""The prompt of ``attune chat`` on a terminal (prompt_toolkit): line editing (Emacs keys, as
bash), history kept across sessions in a private file, Tab completion of commands and refs,
and news printed above the prompt, which is then drawn again with the line being typed intact.

Everything printed goes through prompt_toolkit's stdout proxy: while the prompt is shown, a
write is printed above it and the prompt redrawn (``run_in_terminal``); output is written whole
with the descriptor blocking (prompt_toolkit's ``flush_stdout``), however long it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import cast

from prompt_toolkit import PromptSession
from prompt_toolkit.completion import Completer
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.patch_stdout import patch_stdout
from prompt_toolkit.shortcuts import CompleteStyle
from prompt_toolkit.styles import Style

from bot.terminal_io import PROMPT, Paint, Writable

#: ``ATTUNE_CHAT_HISTORY`` (or ``--history``) values that turn the history file off.
HISTORY_OFF = frozenset({"", "off", "none", "no", "false", "0"})
#: A history file past this size is cut to its newest :data:`HISTORY_KEPT_LINES` lines when a
#: chat starts, so it does not grow without bound.
HISTORY_TRIM_BYTES = 1024 * 1024
HISTORY_KEPT_LINES = 5000


def history_path(option: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the chat keeps its history: ``--history`` when given, else
    ``ATTUNE_CHAT_HISTORY``, else ``$XDG_STATE_HOME/attune/chat_history`` (``XDG_STATE_HOME``
    defaulting to ``~/.local/state``). ``None``: no history file (a value in
    :data:`HISTORY_OFF`, or ``--no-history``, which the command line passes as ``"off"``)."""
    env = os.environ if environ is None else environ
    chosen = option if option is not None else env.get("ATTUNE_CHAT_HISTORY")
    if chosen is not None:
        if chosen.strip().lower() in HISTORY_OFF:
            return None
        return Path(chosen).expanduser()
    state = env.get("XDG_STATE_HOME") or str(Path("~/.local/state").expanduser())
    return Path(state) / "attune" / "chat_history"


class ChatHistory(FileHistory):
    """prompt_toolkit's history file, kept private (0600, its folder 0700 when made here),
    leaving out what should not be written down: a line that starts with a space (as bash's
    ``ignorespace``) and one that ``keep`` refuses (one giving a secret parameter). Those are
    still recalled with the arrows in this session."""

    def __init__(self, path: Path, keep: Callable[[str], bool]) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.close(fd)
        super().__init__(path)
        self._keep = keep
        if path.stat().st_size > HISTORY_TRIM_BYTES:
            self._trim(path)

    def _trim(self, path: Path) -> None:
        """Keep the newest :data:`HISTORY_KEPT_LINES` lines (the file is written anew, 0600,
        and put in place in one rename)."""
        newest_first = list(self.load_history_strings())[:HISTORY_KEPT_LINES]
        fresh = path.with_name(path.name + ".new")
        fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            for string in reversed(newest_first):
                f.write(b"\n# kept\n")
                f.write("".join(f"+{line}\n" for line in string.split("\n")).encode())
        os.replace(fresh, path)

    def store_string(self, string: str) -> None:
        if string.startswith(" ") or not self._keep(string):
            return
        super().store_string(string)


def open_history(path: Path | None, keep: Callable[[str], bool]) -> tuple[History, str | None]:
    """The session's history, and a note for the user when the file could not be used (the
    chat then keeps this session's lines in memory only)."""
    if path is None:
        return InMemoryHistory(), None
    try:
        return ChatHistory(path, keep), None
    except OSError as exc:
        return InMemoryHistory(), f"history not kept: {path}: {exc.strerror or exc}"


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("c-c")
    def _interrupt(event: KeyPressEvent) -> None:
        """Ctrl-C drops a typed line, as a shell does (it stays on the screen, not run, not in
        the history; a new prompt follows); on an empty line it leaves at once."""
        if event.app.current_buffer.text:
            event.app.exit(result="")
        else:
            event.app.exit(exception=KeyboardInterrupt())

    return bindings


class PromptConsole:
    """The chat's input and output on a terminal. ``open()`` before use, ``close()`` after:
    while open, ``sys.stdout`` and ``sys.stderr`` print above the prompt."""

    def __init__(self, completer: Completer, history: History, colour: bool) -> None:
        self.paint = Paint(colour)
        style = Style.from_dict({"prompt": "ansicyan bold"})
        self._session: PromptSession[str] = PromptSession(
            history=history,
            completer=completer,
            complete_while_typing=False,
            complete_style=CompleteStyle.READLINE_LIKE,
            key_bindings=_key_bindings(),
            style=style,
            color_depth=None if colour else ColorDepth.MONOCHROME,
        )
        self._message = FormattedText([("class:prompt", PROMPT)]) if colour else PROMPT
        self._stack = contextlib.ExitStack()
        self.out: Writable = sys.stdout

    def open(self) -> Writable:
        streams = (sys.stdout, sys.stderr)
        self._stack.enter_context(patch_stdout(raw=True))
        self.out = cast(Writable, sys.stdout)  # the proxy
        # Log lines (warnings) printed above the prompt too, not across it.
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in streams:
                was = handler.setStream(sys.stderr)
                if was is not None:
                    self._stack.callback(handler.setStream, was)
        return self.out

    async def read_line(self) -> str | None:
        """The next line typed; ``None`` at Ctrl-D. Ctrl-C on an empty line raises
        ``KeyboardInterrupt``."""
        try:
            return await self._session.prompt_async(self._message)
        except EOFError:
            return None

    def close(self) -> None:
        """Print what is still queued, and give stdout back."""
        self._stack.close()
