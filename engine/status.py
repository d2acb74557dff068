"""Execution statuses and the transitions between them (pure; no I/O).

Every change of an execution's status in storage is a conditional UPDATE whose WHERE clause is
``status IN allowed_sources(target)``, so a message delivered twice cannot move a row twice.
"""

from __future__ import annotations

from enum import StrEnum


class ExecutionStatus(StrEnum):
    REQUESTED = "requested"
    SCHEDULING = "scheduling"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELING = "canceling"
    CANCELLED = "cancelled"
    TIMEOUT = "timeout"
    ABANDONED = "abandoned"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL


S = ExecutionStatus

TERMINAL: frozenset[ExecutionStatus] = frozenset(
    {S.COMPLETED, S.FAILED, S.CANCELLED, S.TIMEOUT, S.ABANDONED}
)

#: The terminal statuses' values (as stored).
ENDED: frozenset[str] = frozenset(s.value for s in TERMINAL)

#: Statuses from which an execution has not yet been handed to a runner.
PENDING: frozenset[ExecutionStatus] = frozenset({S.REQUESTED, S.SCHEDULING, S.SCHEDULED})

#: target -> statuses it may be entered from.
_SOURCES: dict[ExecutionStatus, frozenset[ExecutionStatus]] = {
    S.SCHEDULING: frozenset({S.REQUESTED}),
    S.SCHEDULED: frozenset({S.REQUESTED, S.SCHEDULING}),
    S.RUNNING: frozenset({S.REQUESTED, S.SCHEDULING, S.SCHEDULED}),
    S.COMPLETED: frozenset({S.RUNNING, S.CANCELING}),
    S.FAILED: PENDING | {S.RUNNING, S.CANCELING},
    S.TIMEOUT: frozenset({S.RUNNING, S.CANCELING}),
    S.CANCELING: frozenset({S.RUNNING}),
    S.CANCELLED: PENDING | {S.RUNNING, S.CANCELING},
    S.ABANDONED: PENDING | {S.RUNNING, S.CANCELING},
}


def allowed_sources(target: ExecutionStatus) -> frozenset[ExecutionStatus]:
    """Statuses an execution may be in for a move to ``target`` to be valid."""
    return _SOURCES.get(target, frozenset())


def can_transition(current: ExecutionStatus, target: ExecutionStatus) -> bool:
    return current in allowed_sources(target)
