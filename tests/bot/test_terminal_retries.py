"""`attune chat` on its own (in-process broker: it runs its session's commands itself) runs
their retries too, and prints the retry's end naming its chain."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_attune_chat_retries_a_run_that_timed_out(tmp_path: Path) -> None:
    pack = tmp_path / "packs" / "flaky"
    (pack / "actions").mkdir(parents=True)
    (pack / "pack.yaml").write_text("ref: flaky\nlabel: Flaky\nversion: 1.0.0\n")
    (pack / "actions" / "hang.yaml").write_text(
        "name: hang\nrunner_type: shell\nentry_point: hang.sh\ntimeout_seconds: 0.5\n"
        "max_retries: 1\n"
    )
    (pack / "actions" / "hang.sh").write_text("#!/bin/sh\nsleep 30\n")
    env = {
        **os.environ,
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
        "ATTUNE_DATA_DIR": str(tmp_path),
        "ATTUNE_PACKS_PATH": f"{ROOT / 'packs'}:{tmp_path / 'packs'}",
        "ATTUNE_KILL_GRACE_S": "0.5",
        "ATTUNE_RETRY_BACKOFF_BASE_S": "0.2",
        "ATTUNE_RETRY_POLL_S": "0.1",
        # The second command holds the session (up to its wait) while the first's chain runs:
        # two runs of 0.5 s and a back-off of 0.2 s, in a session held up to 8 s.
        "ATTUNE_CHAT_WAIT_S": "20",
    }
    env.pop("ATTUNE_AMQP_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        input="run flaky.hang\nrun examples.wait seconds=8\n",
        text=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, done.stderr
    assert "#1 flaky.hang: timeout" in out, out
    assert "#3 flaky.hang: timeout" in out, out
    assert "(retry 1 of 1 of #1)" in out, out
    assert "Traceback" not in out + done.stderr
