"""The dashboard's analytics, as Attune's ``/api/v1/analytics/*`` answers them: counts per hour
over a time window, computed from our executions, events and enforcements tables.

Attune keeps a history of every status change and aggregates it; we keep the moments that
matter on the execution itself, so a status transition is read from them: ``started_at`` is the
move to ``running``, ``finished_at`` the move to the final status. (The move to ``canceling``
has no time of its own and is not counted; Attune counts no transition for a creation either.)
Workers keep no status history here, so ``worker_status`` is always empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, func, select

from engine.status import ExecutionStatus
from engine.storage import Conn, Store
from engine.storage.buckets import hour_bucket
from engine.storage.tables import enforcements, events, executions

#: Window of a request that names none, and the longest one (Attune's: one day, one year).
DEFAULT_HOURS = 24
MAX_HOURS = 8760
#: Final statuses the failure rate is made of (Attune's: cancelled and abandoned are not).
_RATED = (ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.TIMEOUT)


@dataclass(frozen=True)
class TimeRange:
    since: datetime
    until: datetime


def time_range(
    since: datetime | None, until: datetime | None, hours: int | None, now: datetime
) -> TimeRange:
    """The window of a request, by Attune's rules: ``since`` and ``until`` when given;
    otherwise ``hours`` (default 24, at most a year) back from ``until`` or from now."""
    if since is not None:
        return TimeRange(since, until or now)
    span = timedelta(hours=min(max(DEFAULT_HOURS if hours is None else hours, 1), MAX_HOURS))
    end = until or now
    return TimeRange(end - span, end)


def _point(bucket: datetime, label: str | None, value: int) -> dict[str, Any]:
    return {"bucket": bucket, "label": label, "value": int(value)}


def failure_rate(window: TimeRange, ended: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Attune's ``FailureRateResponse`` from the final-status points of the window."""
    counts = {status.value: 0 for status in _RATED}
    for point in ended:
        if point["label"] in counts:
            counts[point["label"]] += point["value"]
    completed, failed, timed_out = (counts[s.value] for s in _RATED)
    total = completed + failed + timed_out
    return {
        "since": window.since,
        "until": window.until,
        "total_terminal": total,
        "failed_count": failed,
        "timeout_count": timed_out,
        "completed_count": completed,
        "failure_rate_pct": (failed + timed_out) * 100.0 / total if total else 0.0,
    }


class Analytics:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def _hourly(
        self, conn: Conn, column: Any, *, label: Any = None, where: Sequence[Any] = ()
    ) -> list[dict[str, Any]]:
        """Rows whose ``column`` falls in the window (``where`` holds it), counted per hour
        (and per ``label`` when given), oldest first."""
        bucket = hour_bucket(column)
        keys: list[Any] = [bucket] if label is None else [bucket, label]
        query = select(*keys, func.count()).where(*where).group_by(*keys).order_by(*keys)
        rows = (await conn.execute(query)).all()
        if label is None:
            return [_point(r[0], None, r[1]) for r in rows]
        return [_point(r[0], r[1], r[2]) for r in rows]

    @staticmethod
    def _within(column: Any, window: TimeRange) -> list[ColumnElement[bool]]:
        return [column >= window.since, column <= window.until]

    async def execution_throughput(self, window: TimeRange) -> list[dict[str, Any]]:
        """Executions created per hour."""
        async with self.store.read(offload=True) as conn:
            return await self._throughput(conn, window)

    async def _throughput(self, conn: Conn, window: TimeRange) -> list[dict[str, Any]]:
        c = executions.c.created
        return await self._hourly(conn, c, where=self._within(c, window))

    async def execution_status(self, window: TimeRange) -> list[dict[str, Any]]:
        """Status transitions per hour, labelled with the status moved to."""
        async with self.store.read(offload=True) as conn:
            started, ended = await self._transitions(conn, window)
        return _merge(started, ended)

    async def _transitions(
        self, conn: Conn, window: TimeRange
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        s, f = executions.c.started_at, executions.c.finished_at
        started = [
            _point(p["bucket"], ExecutionStatus.RUNNING.value, p["value"])
            for p in await self._hourly(conn, s, where=self._within(s, window))
        ]
        ended = await self._hourly(
            conn, f, label=executions.c.status, where=self._within(f, window)
        )
        return started, ended

    async def failure_rate(self, window: TimeRange) -> dict[str, Any]:
        async with self.store.read(offload=True) as conn:
            _, ended = await self._transitions(conn, window)
        return failure_rate(window, ended)

    async def event_volume(self, window: TimeRange) -> list[dict[str, Any]]:
        """Events received per hour."""
        async with self.store.read(offload=True) as conn:
            return await self._events(conn, window)

    async def _events(self, conn: Conn, window: TimeRange) -> list[dict[str, Any]]:
        c = events.c.received_at
        return await self._hourly(conn, c, where=self._within(c, window))

    async def enforcement_volume(self, window: TimeRange) -> list[dict[str, Any]]:
        """Enforcements made per hour."""
        async with self.store.read(offload=True) as conn:
            return await self._enforcements(conn, window)

    async def _enforcements(self, conn: Conn, window: TimeRange) -> list[dict[str, Any]]:
        c = enforcements.c.created
        return await self._hourly(conn, c, where=self._within(c, window))

    async def dashboard(self, window: TimeRange) -> dict[str, Any]:
        """Attune's ``DashboardAnalyticsResponse``: every series of the window at once."""
        async with self.store.read(offload=True) as conn:
            throughput = await self._throughput(conn, window)
            started, ended = await self._transitions(conn, window)
            event_volume = await self._events(conn, window)
            enforcement_volume = await self._enforcements(conn, window)
        return {
            "since": window.since,
            "until": window.until,
            "execution_throughput": throughput,
            "execution_status": _merge(started, ended),
            "event_volume": event_volume,
            "enforcement_volume": enforcement_volume,
            "worker_status": [],
            "failure_rate": failure_rate(window, ended),
        }


def _merge(*series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points of several series in one, ordered by bucket then label (as Attune orders)."""
    merged = [point for points in series for point in points]
    return sorted(merged, key=lambda p: (p["bucket"], p["label"] or ""))
