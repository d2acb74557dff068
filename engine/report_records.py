"""Records of the read-side reports over executions, events, enforcements and the audit log
(the dashboard's analytics, an execution's history, the workers' roster, ``attune purge``),
and the repository that reads (and purges) them.

Pure Python: the SQL is in :mod:`engine.storage.reports`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

#: What the dashboard counts per hour: executions created, started (moved to ``running``) and
#: finished (labelled with their final status), events received, enforcements made.
Series = Literal[
    "executions.created",
    "executions.started",
    "executions.finished",
    "events.received",
    "enforcements.created",
]
#: What ``attune purge`` deletes.
Purgeable = Literal["executions", "events", "audit"]


@dataclass(frozen=True, slots=True)
class HourCount:
    """Rows of a series in one hour (and with one ``label``, for labelled series)."""

    bucket: datetime
    label: str | None
    value: int


@dataclass(frozen=True, slots=True)
class WorkerLoad:
    """Executions a worker holds in one status, and its heartbeat and first start on them."""

    worker: str
    status: str
    count: int
    last_heartbeat: datetime | None
    first_started: datetime | None


@dataclass(frozen=True, slots=True)
class HistoryFacts:
    """What an execution's history needs beyond its record."""

    worker: str | None
    #: When a cancel was accepted for it, if one was.
    cancel_asked_at: datetime | None


class ReportsRepository(Protocol):
    async def hourly(
        self, series: Sequence[Series], since: datetime, until: datetime
    ) -> list[list[HourCount]]:
        """Each series counted per hour within ``[since, until]``, oldest first (by label
        within an hour); one read for all of them."""
        ...

    async def worker_loads(self, statuses: Sequence[str]) -> list[WorkerLoad]:
        """Per worker and status, the executions in ``statuses`` that name a worker."""
        ...

    async def history_facts(
        self, execution_id: int, created: datetime, until: datetime
    ) -> HistoryFacts | None:
        """The execution's worker, and when a cancel of it was accepted between its creation
        and ``until``; None when there is no such execution."""
        ...

    async def purge_batch(
        self, what: Purgeable, cutoff: datetime, ended: Sequence[str], limit: int
    ) -> int:
        """Delete up to ``limit`` rows older than ``cutoff``, oldest ids first, in one
        transaction (ended executions with their deliveries; processed events with their
        enforcements; audit entries); how many were deleted."""
        ...
