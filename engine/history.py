"""An execution's history, as Attune's ``GET /api/v1/executions/{id}/history`` answers it: one
record per change (``INSERT`` at creation, an ``UPDATE`` per status change), newest first.

Attune writes these records with a database trigger on every change. We derive them from what
the execution keeps (``created``, ``started_at``, ``finished_at``, its worker and result) and
from the audit log (when a cancel was asked for a running execution: the move to
``canceling``), so nothing is added to the execution's own path.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from engine.clock import now_utc
from engine.errors import NotFound
from engine.status import ExecutionStatus
from engine.storage import Store
from engine.storage.reports import reports_repository

S = ExecutionStatus
#: Result fields a history record keeps (a digest: the execution itself has the whole result).
_RESULT_DIGEST = ("succeeded", "exit_code", "duration_ms", "error")
#: Longest error text kept in a digest.
_MAX_ERROR = 500
OPERATIONS = ("INSERT", "UPDATE", "DELETE")
#: How long after an execution's end its cancel may still be written to the audit log (the
#: audit entry follows the cancel; a run that ends at once may be recorded first).
_AUDIT_LAG = timedelta(seconds=60)


def _digest(result: Any) -> Any:
    if not isinstance(result, Mapping):
        return result
    digest = {k: result[k] for k in _RESULT_DIGEST if k in result}
    if isinstance(digest.get("error"), str):
        digest["error"] = digest["error"][:_MAX_ERROR]
    return digest


def _record(
    time: datetime,
    operation: str,
    execution: Mapping[str, Any],
    old: dict[str, Any] | None,
    new: dict[str, Any],
) -> dict[str, Any]:
    return {
        "time": time,
        "operation": operation,
        "entity_id": execution["id"],
        "entity_ref": execution["action_ref"],
        "changed_fields": list(new) if operation == "UPDATE" else [],
        "old_values": old,
        "new_values": new,
    }


def execution_changes(
    execution: Mapping[str, Any], worker: str | None, cancel_asked_at: datetime | None
) -> list[dict[str, Any]]:
    """The history records of an execution, newest first (pure).

    ``execution`` is its record (``id``, ``action_ref``, ``status``, ``executor``, ``parent``,
    ``enforcement``, ``result``, ``created``, ``updated``, ``started_at``, ``finished_at``);
    ``cancel_asked_at`` is when a cancel was accepted, if one was.
    """
    status = S(execution["status"])
    started, finished = execution["started_at"], execution["finished_at"]
    records = [
        _record(
            execution["created"],
            "INSERT",
            execution,
            None,
            {
                "status": S.REQUESTED.value,
                "action_ref": execution["action_ref"],
                "executor": execution.get("executor"),
                "worker": None,
                "parent": execution.get("parent"),
                "enforcement": execution.get("enforcement"),
                "started_at": None,
            },
        )
    ]
    current = S.REQUESTED
    if started is not None:
        records.append(
            _record(
                started,
                "UPDATE",
                execution,
                {"status": current.value, "worker": None, "started_at": None},
                {"status": S.RUNNING.value, "worker": worker, "started_at": started},
            )
        )
        current = S.RUNNING
    canceling = (
        current is S.RUNNING
        and cancel_asked_at is not None
        and status in (S.CANCELING, S.CANCELLED, S.COMPLETED, S.FAILED, S.TIMEOUT)
    )
    if canceling:
        assert cancel_asked_at is not None
        at = max(cancel_asked_at, started)
        if finished is not None:
            at = min(at, finished)
        records.append(
            _record(
                at,
                "UPDATE",
                execution,
                {"status": current.value},
                {"status": S.CANCELING.value},
            )
        )
        current = S.CANCELING
    if status is not current and (finished is not None or status is not S.CANCELING):
        old: dict[str, Any] = {"status": current.value}
        new: dict[str, Any] = {"status": status.value}
        if execution.get("result") is not None:
            old["result"] = None
            new["result"] = _digest(execution["result"])
        records.append(_record(finished or execution["updated"], "UPDATE", execution, old, new))
    records.sort(key=lambda r: r["time"], reverse=True)
    return records


def matching(
    records: list[dict[str, Any]],
    *,
    operation: str | None = None,
    changed_field: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Attune's history filters: operation, a field that changed, a time window."""
    return [
        r
        for r in records
        if (operation is None or r["operation"] == operation.upper())
        and (changed_field is None or changed_field in r["changed_fields"])
        and (since is None or r["time"] >= since)
        and (until is None or r["time"] <= until)
    ]


async def execution_history(store: Store, execution: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The history records of an execution the caller may see (its record given)."""
    facts = await reports_repository(store).history_facts(
        execution["id"],
        execution["created"],
        (execution["finished_at"] or now_utc()) + _AUDIT_LAG,
    )
    if facts is None:
        raise NotFound(f"execution {execution['id']} not found")
    return execution_changes(execution, facts.worker, facts.cancel_asked_at)
