"""CPU time spent by a deployment's processes, from ``/proc`` (Linux).

``attune`` processes (serve, workers) are counted with the children they waited for (a shell
action's processes); in cluster mode PostgreSQL's and RabbitMQ's processes are counted too, all
of them, since their work for the deployment is spread over backends and schedulers. A process
that starts during a measurement counts from zero; one that exits during it loses what it spent
(PostgreSQL's pooled backends live through a round, so little is lost). The machine is shared:
what other tenants make PostgreSQL or RabbitMQ do is counted as well.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
#: The parts a deployment's own processes are labelled with.
OWN_PARTS = ("serve", "worker")
#: Process names (``/proc/<pid>/comm``) of the services a cluster deployment uses.
SERVICE_NAMES = {"postgres": "postgresql", "beam.smp": "rabbitmq", "erl_child_setup": "rabbitmq"}


def _ticks(pid: int) -> int | None:
    """utime + stime + cutime + cstime of ``pid``, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: fields follow the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(f) for f in fields[11:15])


def _comm(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def _pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def service_pids() -> dict[int, str]:
    """Every running PostgreSQL and RabbitMQ process: pid -> service."""
    found: dict[int, str] = {}
    for pid in _pids():
        service = SERVICE_NAMES.get(_comm(pid) or "")
        if service is not None:
            found[pid] = service
    return found


def with_descendants(own: dict[int, str]) -> dict[int, str]:
    """``own`` and every living process descended from one of them, with its ancestor's part
    (``attune serve``'s template workers, a worker's running actions)."""
    parents = {pid: _parent(pid) for pid in _pids()}
    found = dict(own)
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if pid not in found and parent in found:
                found[pid] = found[parent]
                grew = True
    return found


@dataclass
class Snapshot:
    """Ticks per pid, each pid labelled with the part it belongs to."""

    ticks: dict[int, int]
    parts: dict[int, str]


def snapshot(own: Iterable[tuple[int, str]], *, services: bool) -> Snapshot:
    parts = with_descendants(dict(own))
    if services:
        parts |= service_pids()
    ticks = {pid: t for pid in parts if (t := _ticks(pid)) is not None}
    return Snapshot(ticks, parts)


def spent_s(before: Snapshot, *, services: bool) -> dict[str, float]:
    """CPU seconds each part spent since ``before`` (processes found again now, plus any new
    service process), and their ``total``."""
    after = snapshot(
        ((pid, part) for pid, part in before.parts.items() if part in OWN_PARTS),
        services=services,
    )
    spent: dict[str, float] = {}
    for pid, now in after.ticks.items():
        part = after.parts[pid]
        spent[part] = spent.get(part, 0.0) + (now - before.ticks.get(pid, 0)) / _TICKS_PER_S
    spent["total"] = sum(spent.values())
    return spent
