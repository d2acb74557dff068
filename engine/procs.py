"""Process facts from /proc (Linux): enough to kill a process group a dead worker left behind
without ever hitting an unrelated process that reused the pid."""

from __future__ import annotations

import os
import signal
import socket


def this_host() -> str:
    return socket.gethostname()


def worker_host_pid(worker_id: str) -> tuple[str, int] | None:
    """``host:pid`` worker ids (the default) split; None for other shapes."""
    host, _, pid = worker_id.rpartition(":")
    return (host, int(pid)) if host and pid.isdigit() else None


def start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (field 22 of /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces.
    fields = stat[stat.rfind(")") + 2 :].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_group_if_same(pid: int, recorded_start: int | None) -> bool:
    """SIGKILL the process group ``pid`` that a run started, if it still exists.

    Safe against pid reuse: while a group has members its id is not handed to a new process,
    so a leader with another start time means the group is gone, and a missing leader with
    members left means they are the run's own (orphaned) children.
    """
    if recorded_start is None:
        return False
    current = start_ticks(pid)
    if current is not None and current != recorded_start:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    return True
