"""A worker's sign of life on disk, for container health checks (``attune health --worker``).

A worker that does housekeeping (``attune worker``, and the worker inside ``attune serve``)
rewrites ``<data dir>/alive/worker-<pid>.json`` (0600, in a 0700 folder) at start and at every
heartbeat tick, and removes it when it stops. The check reads those files: it passes when one
names a process that still exists (same pid and start time, so a reused pid does not count) and
whose last beat is younger than the bound. A worker whose event loop is stuck, or whose
heartbeat hangs on the database, stops beating and fails the check once the bound passes; a
dead worker fails it at once. Reading a few small files keeps the check cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from engine import procs
from engine.private_files import PRIVATE_FILE_MODE, make_private_dir

#: Folder of the sign-of-life files, under the data dir.
ALIVE_DIR = "alive"


def alive_dir(data_dir: Path) -> Path:
    return data_dir.resolve() / ALIVE_DIR


class AliveFile:
    """One worker's file: ``beat()`` rewrites it (atomically), ``remove()`` deletes it."""

    def __init__(self, folder: Path, worker_id: str, pid: int | None = None) -> None:
        self.folder = folder
        self.worker_id = worker_id
        self.pid = os.getpid() if pid is None else pid
        self.path = folder / f"worker-{self.pid}.json"
        self._started = procs.start_ticks(self.pid)

    def beat(self, running: int = 0) -> None:
        make_private_dir(self.folder)
        record = {
            "worker_id": self.worker_id,
            "pid": self.pid,
            "start_ticks": self._started,
            "beat_at": time.time(),
            "running": running,
        }
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(record, fh)
        os.chmod(tmp, PRIVATE_FILE_MODE)
        os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


@dataclass(frozen=True)
class Verdict:
    ok: bool
    message: str


def _same_process(pid: int, started: object) -> bool:
    if not procs.is_alive(pid):
        return False
    if isinstance(started, int):
        return procs.start_ticks(pid) == started
    return True


def check_workers(folder: Path, max_age_s: float, now: float | None = None) -> Verdict:
    """Whether a worker that writes into ``folder`` is alive and beat within ``max_age_s``."""
    now = time.time() if now is None else now
    problems: list[str] = []
    try:
        files = sorted(folder.glob("worker-*.json"))
    except OSError as exc:
        return Verdict(False, f"cannot read {folder}: {exc.strerror or exc}")
    for path in files:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            pid = int(record["pid"])
            beat_at = float(record["beat_at"])
            worker_id = str(record.get("worker_id") or pid)
        except (OSError, ValueError, KeyError, TypeError):
            problems.append(f"{path.name} is unreadable")
            continue
        if not _same_process(pid, record.get("start_ticks")):
            problems.append(f"worker {worker_id} is gone")
            continue
        age = now - beat_at
        if age > max_age_s:
            problems.append(
                f"worker {worker_id} last beat {age:.0f} s ago (more than {max_age_s:g} s): "
                "it is stuck"
            )
            continue
        return Verdict(True, f"worker {worker_id} alive (last beat {max(age, 0):.1f} s ago)")
    if not problems:
        return Verdict(False, f"no worker is running here (nothing in {folder})")
    return Verdict(False, "; ".join(problems))
