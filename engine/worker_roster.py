"""The workers, as Attune's ``/api/v1/workers`` lists them (``WorkerSummary``: status, health,
load, runtimes).

We keep no registry of workers. This process's worker (when it runs one) is described from
itself; the workers of other processes are known from the executions they hold (``running`` or
``canceling``) and the heartbeat they keep on them, so an idle worker of another process is not
listed. A worker's id is derived from its name (``host:pid``), the same in every process.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from engine import procs
from engine.clock import now_utc
from engine.errors import InvalidRequest, NotFound
from engine.runtimes import RUNTIMES
from engine.status import ExecutionStatus
from engine.storage import Store
from engine.storage.reports import reports_repository
from engine.worker import Worker

_LIVE = (ExecutionStatus.RUNNING.value, ExecutionStatus.CANCELING.value)
#: Attune's filter values (``role``, ``status``, ``health_state``).
ROLES = ("action", "sensor")
STATUSES = ("active", "inactive", "busy", "error")
HEALTH_STATES = ("active", "busy", "cordoned", "offline", "error", "inactive")


def worker_id(name: str) -> int:
    """A worker's id: stable across processes and restarts, below 2**53 (exact in JSON)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=6).digest(), "big") + 1


@functools.cache
def process_started() -> datetime:
    """When this process started (from /proc; now where that cannot be read)."""
    ticks = procs.start_ticks(os.getpid())
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return now_utc()
    if ticks is None:
        return now_utc()
    return datetime.fromtimestamp(boot + ticks / os.sysconf("SC_CLK_TCK"), UTC)


@dataclass(frozen=True)
class Held:
    """What the executions tell of a worker: what it holds and when it last said so."""

    running: int = 0
    canceling: int = 0
    last_heartbeat: datetime | None = None
    first_started: datetime | None = None


def summary(
    name: str,
    held: Held,
    *,
    own: Worker | None,
    stale_after_s: float,
    now: datetime,
) -> dict[str, Any]:
    """Attune's ``WorkerSummary`` of one worker (pure); ``own`` is this process's worker
    when ``name`` is it (then alive by definition: it answers)."""
    active = held.running + held.canceling
    beat = now if own is not None else held.last_heartbeat
    age = max(0, int((now - beat).total_seconds())) if beat is not None else None
    stale = age is None or age > stale_after_s
    status = "busy" if active else "active"
    health = "offline" if stale else status
    host_pid = procs.worker_host_pid(name)
    host = host_pid[0] if host_pid else None
    limit = own.concurrency if own is not None else None
    return {
        "id": worker_id(name),
        "name": name,
        "worker_type": "local" if own is not None or host == procs.this_host() else "remote",
        "worker_role": "action",
        "host": host,
        "port": None,
        "status": status,
        "last_heartbeat": beat,
        "heartbeat_age_seconds": age,
        "heartbeat_stale": stale,
        "cordoned": False,
        "cordon_reason": None,
        "cordoned_by": None,
        "cordoned_at": None,
        "health_state": health,
        "supported_runtimes": [
            {"name": info.runner, "versions": info.versions()} for info in RUNTIMES
        ],
        "load": {
            "requested": 0,
            "scheduling": 0,
            "scheduled": 0,
            "running": held.running,
            "canceling": held.canceling,
            "total_active": active,
            "max_concurrent_executions": limit,
            "utilization_percent": round(active * 100 / limit) if limit else None,
            "queue_depth": None,
            "sensor_processes_running": None,
            "sensor_processes_monitored": None,
            "active_rules": None,
            "max_concurrent_sensors": None,
        },
        "created": process_started() if own is not None else held.first_started or now,
        "updated": beat or now,
    }


def _one_of(name: str, value: str | None, allowed: Iterable[str]) -> str | None:
    if value is None or value == "":
        return None
    if value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}")
    return value


@dataclass(frozen=True)
class WorkerFilter:
    """Attune's ``WorkerQueryParams`` filters (validated as Attune's: 400 for unknown values)."""

    role: str | None = None
    status: str | None = None
    cordoned: bool | None = None
    health_state: str | None = None

    @classmethod
    def parse(cls, query: dict[str, str]) -> WorkerFilter:
        cordoned = query.get("cordoned")
        if cordoned not in (None, "", "true", "false"):
            raise InvalidRequest("cordoned must be true or false")
        return cls(
            role=_one_of("role", query.get("role"), ROLES),
            status=_one_of("status", query.get("status"), STATUSES),
            cordoned=None if not cordoned else cordoned == "true",
            health_state=_one_of("health_state", query.get("health_state"), HEALTH_STATES),
        )

    def keeps(self, worker: dict[str, Any]) -> bool:
        return (
            (self.role is None or worker["worker_role"] == self.role)
            and (self.status is None or worker["status"] == self.status)
            and (self.cordoned is None or worker["cordoned"] == self.cordoned)
            and (self.health_state is None or worker["health_state"] == self.health_state)
        )


class Roster:
    def __init__(self, store: Store, own: Worker | None, *, stale_after_s: float) -> None:
        self.repo = reports_repository(store)
        self.own = own
        self.stale_after_s = stale_after_s

    async def _held(self) -> dict[str, Held]:
        held: dict[str, Held] = {}
        for load in await self.repo.worker_loads(_LIVE):
            name, status, count = load.worker, load.status, load.count
            beat, started = load.last_heartbeat, load.first_started
            was = held.get(name, Held())
            held[name] = Held(
                running=was.running + (count if status == ExecutionStatus.RUNNING else 0),
                canceling=was.canceling + (count if status == ExecutionStatus.CANCELING else 0),
                last_heartbeat=max(filter(None, (was.last_heartbeat, beat)), default=None),
                first_started=min(filter(None, (was.first_started, started)), default=None),
            )
        return held

    async def list(self, only: WorkerFilter | None = None) -> list[dict[str, Any]]:
        """Every known worker, this process's first, then by name."""
        held = await self._held()
        now = now_utc()
        names = sorted(held)
        own_name = self.own.worker_id if self.own is not None else None
        if own_name is not None:
            names = [own_name, *(n for n in names if n != own_name)]
        workers = [
            summary(
                name,
                held.get(name, Held()),
                own=self.own if name == own_name else None,
                stale_after_s=self.stale_after_s,
                now=now,
            )
            for name in names
        ]
        return [w for w in workers if only is None or only.keeps(w)]

    async def get(self, ident: int) -> dict[str, Any]:
        for worker in await self.list():
            if worker["id"] == ident:
                return worker
        raise NotFound(f"worker with id {ident} not found")
