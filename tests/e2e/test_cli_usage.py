"""The ``attune`` command line as a user meets it: ``--version``, ``--help`` of every command
explaining each argument with examples, ``serve --host/--port`` listening where they say
(over the settings), and a bad ``key=value`` exiting 2 with one line naming it."""

from __future__ import annotations

import contextlib
import io
import re
import socket
from importlib import metadata
from pathlib import Path

import aiohttp
import pytest

from bot.cli import main
from tests.e2e.conftest import (
    _LISTENING,
    START_TIMEOUT_S,
    engine_env,
    run_cli,
    spawn,
    stop,
    wait_for_line,
)

#: An entry of a help section: its name, then (on the line or the next) what it is.
_ENTRY = re.compile(r"^  (\S.*?)(?:\s{2,}(\S.*))?$")
#: A sub-command's line under the COMMAND/TASK entry.
_SUBCOMMAND = re.compile(r"^    (\S+)")


def _help(path: list[str]) -> str:
    """``attune PATH --help`` in this process (argparse exits 0 after printing it)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exited:
        main([*path, "--help"])
    assert exited.value.code == 0, path
    return out.getvalue()


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = sections.setdefault(line[:-1], [])
        elif not line.strip():
            current = None
        elif current is not None:
            current.append(line)
    return sections


def _unexplained(lines: list[str]) -> list[str]:
    """The entries of a help section with no text saying what they are."""
    missing = []
    for i, line in enumerate(lines):
        entry = _ENTRY.match(line)
        if entry is None or line.startswith("   "):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if entry.group(2) is None and not following.startswith("   "):
            missing.append(entry.group(1))
    return missing


def _walk(path: list[str], seen: dict[str, str]) -> None:
    text = _help(path)
    seen[" ".join(path)] = text
    positional = _sections(text).get("positional arguments", [])
    if any(line.strip() in ("COMMAND", "TASK") for line in positional):
        for line in positional:
            sub = _SUBCOMMAND.match(line)
            if sub:
                _walk([*path, sub.group(1)], seen)


def test_every_command_explains_its_arguments_with_examples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    helps: dict[str, str] = {}
    _walk([], helps)
    # Every command of the README's table, and their sub-commands.
    for command in (
        "serve",
        "worker",
        "health",
        "run",
        "chat",
        "callback-secret",
        "audit",
        "purge",
        "db upgrade",
        "pack register",
        "pack list",
        "pack remove",
        "token create",
        "user create",
        "user list",
        "user set-role",
        "user set-password",
        "user disable",
        "user enable",
    ):
        assert command in helps, sorted(helps)
    for command, text in helps.items():
        sections = _sections(text)
        for name in ("positional arguments", "options"):
            assert not _unexplained(sections.get(name, [])), (command, text)
        description = text.split("\n\n")[1]
        assert description.strip(), text
        assert not description.startswith(" "), text
        if command and "TASK" not in text.split("\n\n")[0]:  # a command that runs something
            examples = sections.get("examples", [])
            assert any(f"attune {command}" in x for x in examples), (command, text)
    assert "--host HOST" in helps["serve"]
    assert "--port PORT" in helps["serve"]


async def test_version_is_the_installed_package_version(tmp_path: Path) -> None:
    code, out, err = await run_cli(["--version"], engine_env(tmp_path), tmp_path)
    assert code == 0, err
    assert out == f"attune {metadata.version('attune-chatops')}\n"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.e2e
async def test_serve_listens_where_host_and_port_say(tmp_path: Path) -> None:
    """The flags win over ATTUNE_HTTP_HOST / ATTUNE_HTTP_PORT."""
    port, setting_port = _free_port(), _free_port()
    env = engine_env(tmp_path, ATTUNE_HTTP_HOST="localhost", ATTUNE_HTTP_PORT=str(setting_port))
    proc = spawn("serve", ["serve", "--host", "127.0.0.1", "--port", str(port)], env, tmp_path)
    try:
        listening = await wait_for_line(proc, _LISTENING, START_TIMEOUT_S)
        assert listening.group(1) == f"http://127.0.0.1:{port}"
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
            http.get(f"http://127.0.0.1:{port}/health") as answer,
        ):
            assert answer.status == 200, await answer.text()
        with socket.socket() as other:
            other.settimeout(5)
            with pytest.raises(ConnectionRefusedError):
                other.connect(("127.0.0.1", setting_port))
    finally:
        problem = await stop(proc)
    assert problem is None, problem


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["run", "core.echo", "oops"], "attune run: expected key=value, got oops"),
        (["run", "core.echo", "=hi"], "attune run: expected key=value, got =hi"),
        (  # refused before any request is made
            ["run", "core.echo", "message", "--url", "http://127.0.0.1:9", "--token", "t"],
            "attune run: expected key=value, got message",
        ),
        (["serve", "--port", "70000"], "argument --port: 70000 is not a port: 0 to 65535"),
    ],
)
async def test_bad_arguments_exit_2_with_one_line_naming_them(
    tmp_path: Path, args: list[str], says: str
) -> None:
    code, out, err = await run_cli(args, engine_env(tmp_path), tmp_path)
    assert code == 2, (out, err)
    assert says in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "attune.db").exists(), "a bad argument touched the database"
