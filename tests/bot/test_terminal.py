"""`attune chat` in a terminal: the same handler and the same outbox, printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_attune_chat_prints_acks_and_results(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
        "ATTUNE_DATA_DIR": str(tmp_path),
        "ATTUNE_PACKS_PATH": str(ROOT / "packs"),
        "ATTUNE_AMQP_URL": "",
    }
    env.pop("ATTUNE_AMQP_URL")
    commands = "\n".join(
        [
            'run core.echo message="hello from the terminal"',
            "run examples.fail",
            "run examples.greet",
            "bogus",
            'run core.echo message="unbalanced',
            "",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        input=commands,
        text=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "Execution #1 queued: core.echo" in out
    assert "Execution #2 queued: examples.fail" in out
    assert "#1 core.echo: completed" in out
    assert "hello from the terminal" in out
    assert "#2 examples.fail: failed" in out
    assert "something went wrong (exit 3)" in out
    assert "missing required parameter 'name'" in out
    assert "Unknown command bogus" in out
    assert "unbalanced" in out
    assert "Traceback" not in out + done.stderr


def _chat(tmp_path: Path, commands: list[str], wait_s: str) -> str:
    env = {
        **os.environ,
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
        "ATTUNE_DATA_DIR": str(tmp_path),
        "ATTUNE_PACKS_PATH": str(ROOT / "packs"),
        "ATTUNE_CHAT_WAIT_S": wait_s,
    }
    env.pop("ATTUNE_AMQP_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        input="\n".join([*commands, ""]),
        text=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_quick_run_is_answered_before_the_next_prompt(tmp_path: Path) -> None:
    """ATTUNE_CHAT_WAIT_S: a run that ends within it has its result printed before the next
    command is taken; a slower one does not hold the next command longer than that."""
    out = _chat(
        tmp_path, ["run examples.wait seconds=1", "run core.echo message=after-it"], wait_s="10"
    )
    assert out.index("#1 examples.wait: completed") < out.index("Execution #2 queued"), out
    assert out.index("Execution #2 queued") < out.index("#2 core.echo: completed"), out


def test_a_slow_run_does_not_hold_the_prompt_beyond_the_wait(tmp_path: Path) -> None:
    out = _chat(
        tmp_path, ["run examples.wait seconds=3", "run core.echo message=meanwhile"], wait_s="0.3"
    )
    assert out.index("Execution #2 queued") < out.index("#1 examples.wait: completed"), out
    assert "meanwhile" in out
