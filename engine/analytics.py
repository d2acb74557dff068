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

from engine.report_records import HourCount, Series
from engine.status import ExecutionStatus
from engine.storage import Store
from engine.storage.reports import reports_repository

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


def _points(counts: list[HourCount]) -> list[dict[str, Any]]:
    return [_point(c.bucket, c.label, c.value) for c in counts]


class Analytics:
    def __init__(self, store: Store) -> None:
        self.repo = reports_repository(store)

    async def _series(self, window: TimeRange, *series: Series) -> list[list[dict[str, Any]]]:
        counted = await self.repo.hourly(series, window.since, window.until)
        return [_points(counts) for counts in counted]

    async def execution_throughput(self, window: TimeRange) -> list[dict[str, Any]]:
        """Executions created per hour."""
        (created,) = await self._series(window, "executions.created")
        return created

    @staticmethod
    def _started(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Starts are moves to ``running``."""
        return [_point(p["bucket"], ExecutionStatus.RUNNING.value, p["value"]) for p in points]

    async def execution_status(self, window: TimeRange) -> list[dict[str, Any]]:
        """Status transitions per hour, labelled with the status moved to."""
        started, ended = await self._series(window, "executions.started", "executions.finished")
        return _merge(self._started(started), ended)

    async def failure_rate(self, window: TimeRange) -> dict[str, Any]:
        (ended,) = await self._series(window, "executions.finished")
        return failure_rate(window, ended)

    async def event_volume(self, window: TimeRange) -> list[dict[str, Any]]:
        """Events received per hour."""
        (received,) = await self._series(window, "events.received")
        return received

    async def enforcement_volume(self, window: TimeRange) -> list[dict[str, Any]]:
        """Enforcements made per hour."""
        (made,) = await self._series(window, "enforcements.created")
        return made

    async def dashboard(self, window: TimeRange) -> dict[str, Any]:
        """Attune's ``DashboardAnalyticsResponse``: every series of the window at once."""
        throughput, started, ended, event_volume, enforcement_volume = await self._series(
            window,
            "executions.created",
            "executions.started",
            "executions.finished",
            "events.received",
            "enforcements.created",
        )
        return {
            "since": window.since,
            "until": window.until,
            "execution_throughput": throughput,
            "execution_status": _merge(self._started(started), ended),
            "event_volume": event_volume,
            "enforcement_volume": enforcement_volume,
            "worker_status": [],
            "failure_rate": failure_rate(window, ended),
        }


def _merge(*series: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points of several series in one, ordered by bucket then label (as Attune orders)."""
    merged = [point for points in series for point in points]
    return sorted(merged, key=lambda p: (p["bucket"], p["label"] or ""))
