"""What the execution pages show, as plain values for the templates (pure: no I/O).

Times are shown in UTC as ``YYYY-MM-DD HH:MM:SS UTC`` (the page's script writes the same form),
durations as ``1.8 s``, ``2 min 05 s`` or ``1 h 02 min``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine.params import REDACTED
from engine.records import Execution
from engine.status import TERMINAL, ExecutionStatus

#: Statuses as the list's filter offers them, in the order of a run's life.
STATUSES = [s.value for s in ExecutionStatus]
_TERMINAL = frozenset(s.value for s in TERMINAL)
#: A sign beside each status, so the status is never told by colour alone.
STATUS_SIGNS = {
    "requested": "○",
    "scheduling": "○",
    "scheduled": "○",
    "running": "▶",
    "canceling": "■",
    "completed": "✓",
    "failed": "✗",
    "cancelled": "■",
    "timeout": "⌛",
    "abandoned": "✗",
}


def is_terminal(status: str) -> bool:
    return status in _TERMINAL


def show_time(value: datetime | None) -> str:
    return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def show_duration_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def duration_ms(record: Execution) -> float | None:
    """The run's duration: the result's when recorded, else finished minus started."""
    result = record.result or {}
    if isinstance(result.get("duration_ms"), int | float):
        return float(result["duration_ms"])
    if record.started_at is not None and record.finished_at is not None:
        return (record.finished_at - record.started_at).total_seconds() * 1000
    return None


@dataclass(frozen=True)
class Parameter:
    name: str
    value: str
    secret: bool


def parameters(config: dict[str, Any] | None) -> list[Parameter]:
    """The parameters as recorded (secrets are already masked in the record)."""
    out = []
    for name, value in sorted((config or {}).items()):
        if value == REDACTED:
            out.append(Parameter(str(name), "hidden (secret)", True))
        elif isinstance(value, str):
            out.append(Parameter(str(name), value, False))
        else:
            out.append(Parameter(str(name), json.dumps(value, ensure_ascii=False), False))
    return out


def has_secrets(record: Execution) -> bool:
    return any(value == REDACTED for value in (record.config or {}).values())


@dataclass(frozen=True)
class Fact:
    label: str
    value: str
    href: str | None = None


def origin_facts(record: Execution, enforcement: dict[str, Any] | None) -> list[Fact]:
    """Who asked, from where, and why (the rule, its trigger and event)."""
    who = record.requester or {}
    facts = [Fact("Requested by", str(who.get("identity") or "unknown"))]
    if who.get("source"):
        facts.append(Fact("Through", str(who["source"])))
    if who.get("channel"):
        facts.append(Fact("Chat channel", str(who["channel"])))
    if enforcement is not None:
        facts.append(Fact("Rule", str(enforcement.get("rule_ref") or "—")))
        facts.append(Fact("Trigger", str(enforcement.get("trigger_ref") or "—")))
        facts.append(Fact("Event", f"#{enforcement.get('event_id')}"))
        facts.append(Fact("Enforcement", f"#{record.enforcement}"))
    elif record.enforcement is not None:
        facts.append(Fact("Enforcement", f"#{record.enforcement}"))
    elif who.get("rule"):
        facts.append(Fact("Rule", str(who["rule"])))
    if record.parent is not None:
        facts.append(Fact("Started by", f"execution #{record.parent}", f"{record.parent}"))
    if record.original_execution is not None:  # a retry (engine/retries.py)
        why = f", after {record.retry_reason}" if record.retry_reason else ""
        facts.append(
            Fact(
                f"Retry {record.retry_count} of",
                f"execution #{record.original_execution}{why}",
                f"{record.original_execution}",
            )
        )
    if record.retry_due_at is not None:
        facts.append(Fact("Retry", "pending: cancel this execution to call it off"))
    return facts


@dataclass(frozen=True)
class Output:
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool
    exit_code: int | None
    error: str | None


def output(record: Execution) -> Output:
    result = record.result or {}

    def text(name: str) -> str:
        value = result.get(name)
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    exit_code = result.get("exit_code")
    return Output(
        stdout=text("stdout"),
        stderr=text("stderr"),
        stdout_truncated=bool(result.get("stdout_truncated")),
        stderr_truncated=bool(result.get("stderr_truncated")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        error=str(result["error"]) if result.get("error") else None,
    )
