"""`attune chat` shows a run's output lines as they are printed (``#N | line``), then its
status and its whole output, untouched, when it ends."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LIVE_PACK = ROOT / "tests" / "fixtures" / "packs" / "live_pack"
RUN_TIMEOUT_S = 60.0


async def test_output_lines_appear_while_the_run_lasts(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
        "ATTUNE_DATA_DIR": str(tmp_path),
        "ATTUNE_PACKS_PATH": f"{ROOT / 'packs'}:{LIVE_PACK}",
        "ATTUNE_PUBLIC_URL": "https://attune.example.com",
    }
    env.pop("ATTUNE_AMQP_URL", None)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "chat",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(b"run live_pack.ticker lines=10 interval_ms=300\n")
    await proc.stdin.drain()
    proc.stdin.close()  # at end of input, chat waits for the run to end
    seen: list[tuple[float, str]] = []
    try:
        async with asyncio.timeout(RUN_TIMEOUT_S):
            while raw := await proc.stdout.readline():
                seen.append((time.monotonic(), raw.decode().rstrip("\n")))
            _, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    lines = [line for _, line in seen]
    ticks = [f"tick {i} ✓" for i in range(10)]
    live = [line for line in lines if line.startswith("#1 | ") and "[stderr]" not in line]
    assert live == [f"#1 | {tick}" for tick in ticks[: len(live)]]
    assert len(live) >= 5, lines  # most lines were shown live (the last may go with the end)
    # The run's page, signed, once, before its output.
    pages = [i for i, line in enumerate(lines) if line.startswith("#1 page: ")]
    assert len(pages) == 1, lines
    assert re.fullmatch(
        r"#1 page: https://attune\.example\.com/ui/executions/1\?exp=\d+&sig=[\w-]+=*",
        lines[pages[0]],
    ), lines[pages[0]]
    assert pages[0] < lines.index(live[0])

    end = next(
        i for i, line in enumerate(lines) if line.startswith("#1 live_pack.ticker: completed")
    )
    first_live = next(i for i, line in enumerate(lines) if line.startswith("#1 | "))
    # The first line was shown well before the end (the run lasts 3 s).
    assert seen[end][0] - seen[first_live][0] >= 1.5, seen
    # The whole output, as before, after the status line; no live line after it.
    assert lines[end + 1 : end + 11] == ticks
    assert lines[end + 11] == "[stderr] ticker done"
    assert not [line for line in lines[end:] if line.startswith("#1 | ")]
