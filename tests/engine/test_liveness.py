"""The worker's sign of life on disk (engine/liveness.py), read by ``attune health --worker``."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
import time
from pathlib import Path

from engine.liveness import AliveFile, alive_dir, check_workers


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_fresh_beat_of_a_live_process_passes_and_is_private(tmp_path: Path) -> None:
    folder = alive_dir(tmp_path / "data")
    AliveFile(folder, "host:1").beat(running=2)
    verdict = check_workers(folder, max_age_s=5)
    assert verdict.ok, verdict.message
    assert "host:1 alive" in verdict.message
    (path,) = folder.iterdir()
    assert _mode(path) == 0o600
    assert _mode(folder) == 0o700
    assert json.loads(path.read_text())["running"] == 2


def test_a_stale_beat_fails_as_stuck(tmp_path: Path) -> None:
    AliveFile(tmp_path, "host:1").beat()
    verdict = check_workers(tmp_path, max_age_s=5, now=time.time() + 6)
    assert not verdict.ok
    assert "host:1 last beat 6 s ago (more than 5 s): it is stuck" in verdict.message


def test_a_dead_process_fails_at_once(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    AliveFile(tmp_path, f"host:{child.pid}", pid=child.pid).beat()
    verdict = check_workers(tmp_path, max_age_s=60)
    assert not verdict.ok
    assert f"worker host:{child.pid} is gone" in verdict.message


def test_a_reused_pid_does_not_count(tmp_path: Path) -> None:
    alive = AliveFile(tmp_path, "old-worker")
    alive.beat()
    record = json.loads(alive.path.read_text())
    record["start_ticks"] -= 1  # the pid is alive, but it is another process than the worker
    alive.path.write_text(json.dumps(record))
    verdict = check_workers(tmp_path, max_age_s=60)
    assert not verdict.ok
    assert "old-worker is gone" in verdict.message


def test_one_live_worker_among_dead_and_unreadable_files_passes(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    AliveFile(tmp_path, "dead", pid=child.pid).beat()
    (tmp_path / "worker-1.json").write_text("not json")
    verdict = check_workers(tmp_path, max_age_s=10)
    assert not verdict.ok
    assert "worker dead is gone" in verdict.message
    assert "worker-1.json is unreadable" in verdict.message
    AliveFile(tmp_path, "live").beat()
    verdict = check_workers(tmp_path, max_age_s=10)
    assert verdict.ok, verdict.message
    assert "worker live alive" in verdict.message


def test_nothing_written_and_removed_files_fail(tmp_path: Path) -> None:
    verdict = check_workers(tmp_path / "missing", max_age_s=10)
    assert not verdict.ok
    assert "no worker is running here" in verdict.message
    alive = AliveFile(tmp_path, "w")
    alive.beat()
    alive.remove()
    alive.remove()  # twice is fine
    assert not check_workers(tmp_path, max_age_s=10).ok
