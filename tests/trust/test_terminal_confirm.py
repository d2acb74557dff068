"""Confirmations in the terminal chat: ``attune chat`` (SQLite, in-process broker) driven line by
line through a pipe, with a pack folder holding an action marked ``confirm: true``."""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.e2e.conftest import engine_env

pytestmark = pytest.mark.e2e

#: Bound on one expected line (the first includes start-up and database migrations).
LINE_TIMEOUT_S = 20.0
#: Bound on the exit after end of input.
EXIT_TIMEOUT_S = 15.0
CODE = re.compile(r"confirm ([0-9a-f]{8})\b")

PACK_YAML = "ref: ops\nlabel: Ops\ndescription: Trust tests\nversion: 1.0.0\n"
DEPLOY_YAML = """\
name: deploy
description: Deploy to a host (asks first).
runner_type: shell
entry_point: deploy.sh
confirm: true
parameters:
  target:
    type: string
    required: true
  pause:
    type: number
    default: 0
"""
DEPLOY_SH = """\
#!/bin/sh
params=$(cat)
pause=$(printf '%s' "$params" | sed -n 's/.*"pause": *\\([0-9.]*\\).*/\\1/p')
sleep "${pause:-0}"
printf 'deployed %s\\n' "$(printf '%s' "$params" | sed -n 's/.*"target": *"\\([^"]*\\)".*/\\1/p')"
"""


class Chat:
    """``attune chat`` with its stdin and stdout as pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._cursor = 0

    async def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def expect(self, pattern: str, timeout_s: float = LINE_TIMEOUT_S) -> re.Match[str]:
        """Read lines until one (not consumed by an earlier expect) matches ``pattern``."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        while True:
            while self._cursor < len(self.seen):
                line = self.seen[self._cursor]
                self._cursor += 1
                match = regex.search(line)
                if match:
                    return match
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line matching {pattern!r} within {timeout_s} s; got {self.seen}")
            assert self.proc.stdout is not None
            try:
                raw = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            except TimeoutError:
                continue
            if not raw:
                pytest.fail(f"attune chat ended before {pattern!r}; got {self.seen}")
            self.seen.append(raw.decode(errors="replace").rstrip("\n"))

    async def finish(self) -> tuple[int, list[str]]:
        """Close stdin (end of input); wait (bounded) for the exit; return (code, all lines)."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.close()
        try:
            rest = await asyncio.wait_for(self.proc.stdout.read(), EXIT_TIMEOUT_S)
            code = await asyncio.wait_for(self.proc.wait(), EXIT_TIMEOUT_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            pytest.fail(f"attune chat did not exit within {EXIT_TIMEOUT_S} s; got {self.seen}")
        self.seen += rest.decode(errors="replace").splitlines()
        return code, self.seen


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    pack = tmp_path / "packs" / "ops"
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text(PACK_YAML)
    (pack / "actions" / "deploy.yaml").write_text(DEPLOY_YAML)
    script = pack / "actions" / "deploy.sh"
    script.write_text(DEPLOY_SH)
    script.chmod(0o755)
    return pack.parent


@pytest.fixture
async def chat(tmp_path: Path, packs: Path) -> AsyncIterator[Chat]:
    env = engine_env(tmp_path, ATTUNE_PACKS_PATH=str(packs), ATTUNE_LOG_FORMAT="text")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "chat",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    session = Chat(proc)
    try:
        yield session
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_confirm_runs_it_and_abort_does_not(chat: Chat) -> None:
    await chat.send("run ops.deploy target=web1")
    asked = await chat.expect(r"asks for confirmation")
    line = asked.string
    assert "ops.deploy" in line, line
    assert "target=web1" in line, line
    code = CODE.search(line)
    assert code, line
    assert f"abort {code.group(1)}" in line
    assert "`" not in line, "markdown left in terminal text"

    await chat.send(f"confirm {code.group(1)}")
    queued = await chat.expect(r"Execution #(\d+) queued: ops\.deploy")
    execution_id = queued.group(1)
    await chat.expect(rf"^#{execution_id} ops\.deploy: completed")
    await chat.expect(r"^deployed web1$")

    await chat.send("run ops.deploy target=web2")
    second = CODE.search((await chat.expect(r"asks for confirmation")).string)
    assert second
    assert second.group(1) != code.group(1)
    await chat.send(f"abort {second.group(1)}")
    await chat.expect(r"^Aborted: ops\.deploy will not run\.$")
    await chat.send(f"confirm {second.group(1)}")
    await chat.expect(r"already aborted")
    await chat.send(f"confirm {code.group(1)}")  # used once already
    await chat.expect(r"already confirmed")
    await chat.send("confirm 0000ffff")
    await chat.expect(r"(?i)no request waits for confirmation under code 0000ffff")

    exit_code, lines = await chat.finish()
    assert exit_code == 0, lines
    assert not any("web2" in x and "deployed" in x for x in lines), lines
    assert sum(bool(re.match(r"Execution #\d+ queued", x)) for x in lines) == 1, lines


async def test_end_of_input_waits_for_a_confirmed_run(chat: Chat) -> None:
    await chat.send("run ops.deploy target=web3 pause=1.5")
    code = CODE.search((await chat.expect(r"asks for confirmation")).string)
    assert code
    await chat.send(f"confirm {code.group(1)}")
    execution_id = (await chat.expect(r"Execution #(\d+) queued")).group(1)
    exit_code, lines = await chat.finish()
    assert exit_code == 0, lines
    assert f"#{execution_id} ops.deploy: completed" in "\n".join(lines), lines
    assert "deployed web3" in lines, lines
