"""``attune purge``: keep the tables bounded. Deletes ended executions (their deliveries go with
them), processed events and their enforcements, and audit entries, older than a cutoff, in
batches so no transaction holds the database for long."""

from __future__ import annotations

from datetime import datetime, timedelta

from engine.clock import now_utc
from engine.report_records import Purgeable, ReportsRepository
from engine.status import TERMINAL
from engine.storage import Store
from engine.storage.reports import reports_repository

#: Rows deleted per transaction.
BATCH = 5000


async def _delete_in_batches(
    repo: ReportsRepository, what: Purgeable, cutoff: datetime, ended: list[str]
) -> int:
    total = 0
    while True:
        deleted = await repo.purge_batch(what, cutoff, ended, BATCH)
        if not deleted:
            return total
        total += deleted


async def purge(
    store: Store, older_than_days: float, *, include_audit: bool = False
) -> dict[str, int]:
    """Delete what ended more than ``older_than_days`` ago; return the counts per table."""
    repo = reports_repository(store)
    cutoff = now_utc() - timedelta(days=older_than_days)
    ended = [s.value for s in TERMINAL]
    counts = {
        "executions": await _delete_in_batches(repo, "executions", cutoff, ended),
        "events": await _delete_in_batches(repo, "events", cutoff, ended),
    }
    if include_audit:
        counts["audit"] = await _delete_in_batches(repo, "audit", cutoff, ended)
    return counts
