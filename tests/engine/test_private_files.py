"""Issue 12: what the server creates is for its owner only, whatever the umask: the
SQLite database (0600), the data folder holding the secret key (0700, the key 0600) and the
folder the runs' private folders are made in (0700)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from config import Settings
from engine.packs import ActionSpec
from engine.runners import RunRequest
from engine.runners.process import ProcessRunner
from engine.runtime import build_runtime


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_database_and_the_data_folder_are_private_after_a_start(tmp_path: Path) -> None:
    (tmp_path / "packs").mkdir()
    old = os.umask(0o022)  # the usual umask: files would be 0644 and folders 0755
    try:
        runtime = await build_runtime(
            Settings(
                database_url=f"sqlite+aiosqlite:///{tmp_path / 'attune.db'}",
                data_dir=tmp_path / "data",
                packs_path=str(tmp_path / "packs"),
                admin_login="admin",
                admin_password="admin-password-1",
            )
        )
        await runtime.close()
    finally:
        os.umask(old)
    data = tmp_path / "data"
    assert _mode(tmp_path / "attune.db") == 0o600
    assert _mode(data) == 0o700
    key_files = [p for p in data.iterdir() if p.is_file()]
    assert key_files, list(data.iterdir())
    assert all(_mode(p) == 0o600 for p in key_files), {p.name: oct(_mode(p)) for p in key_files}


async def test_a_runs_folder_and_the_folder_holding_it_are_private(tmp_path: Path) -> None:
    work = tmp_path / "data" / "work"
    runner = ProcessRunner(output_cap_bytes=64 * 1024, kill_grace_s=0.5, work_dir=work)
    (tmp_path / "actions").mkdir()
    (tmp_path / "actions" / "modes.sh").write_text(
        f'#!/bin/sh\nstat -c %a "{tmp_path / "data"}" "{work}" "{work}"/run-*\n'
    )
    action = ActionSpec(
        ref="test.modes",
        pack_ref="test",
        name="modes",
        runner_type="shell",
        entry_point="modes.sh",
        base_dir=str(tmp_path),
    )
    old = os.umask(0o022)
    try:
        result = await runner.run(
            RunRequest(
                execution_id=7, action=action, parameters={}, timeout_s=10.0, cancel=asyncio.Event()
            )
        )
    finally:
        os.umask(old)
    assert result.outcome == "completed", result
    assert str(result.stdout).split() == ["700", "700", "700"], result
