"""Our audit log read as Attune's audit events (``/api/v1/audit-events``).

Attune records events by category (``auth``, ``rbac``, ``secret``, ``execution``, ...), a dotted
event type and an outcome of ``success``, ``failure`` or ``denied``; we record a verb and our own
outcome. Each entry is mapped onto Attune's fields, and ours stay beside them (``details`` keeps
the parameters, our outcome and the detail text). Attune's filters are translated into
conditions on our columns, so they page in the database like ``GET /api/v1/audit``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from engine.audit import AuditLog
from engine.audit_records import (
    AUTH_VERBS,
    EXECUTION_VERBS,
    FILTER_CATEGORIES,
    FILTER_OUTCOMES,
    KEY_PREFIX,
    SUCCESS,
    AuditFilter,
    AuditRecord,
)
from engine.errors import InvalidRequest, NotFound


def category(verb: str, outcome: str) -> str:
    if verb in EXECUTION_VERBS:
        return "execution"
    if verb in AUTH_VERBS:
        return "auth"
    if verb.startswith(KEY_PREFIX):
        return "secret"
    return "rbac" if outcome == "denied" else "api"


def attune_outcome(outcome: str) -> str:
    if outcome in SUCCESS:
        return "success"
    return "denied" if outcome == "denied" else "failure"


def event_type(verb: str, outcome: str) -> str:
    kind = category(verb, outcome)
    return "rbac.denied" if kind == "rbac" else f"{kind}.{verb.replace('-', '_')}"


def audit_event(entry: AuditRecord, identity: int | None) -> dict[str, Any]:
    """Attune's ``AuditEventResponse`` of one of our entries (with our fields beside)."""
    row = entry.as_dict()
    verb, outcome = row["verb"], row["outcome"]
    kind = category(verb, outcome)
    channel: str | None = row["channel"]
    token = channel[len("token:") :] if channel and channel.startswith("token:") else None
    resource_type, resource_ref = None, row["target"]
    if row["execution_id"] is not None or kind == "execution":
        resource_type = "execution"
    elif kind == "secret":
        resource_type = "key"
    elif kind == "auth":
        resource_type = "identity"
    elif kind == "rbac":
        resource_ref = None  # the target of a refused request is its path
    return {
        "id": row["id"],
        "created": row["at"],
        "category": kind,
        "event_type": event_type(verb, outcome),
        "outcome": attune_outcome(outcome),
        "actor_identity": identity,
        "actor_login": row["actor"],
        "actor_token_type": "access" if token else None,
        "actor_ip": channel if kind == "auth" and row["source"] == "api" and channel else None,
        "actor_user_agent": None,
        "request_id": None,
        "resource_type": resource_type,
        "resource_id": row["execution_id"],
        "resource_ref": resource_ref,
        "http_method": None,
        "http_path": row["target"] if kind == "rbac" else None,
        "http_status": 403 if kind == "rbac" else None,
        "duration_ms": None,
        "details": {
            "verb": verb,
            "outcome": outcome,
            "detail": row["detail"],
            "parameters": row["parameters"],
        },
        "correlation_chain": None,
        # Ours, beside Attune's.
        "role": row["role"],
        "source": row["source"],
        "channel": channel,
        "verb": verb,
        "target": row["target"],
        "execution_id": row["execution_id"],
    }


# -- filters ----------------------------------------------------------------------------------


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}")
    return value


def conditions(
    q: Mapping[str, str],
    *,
    created_after: datetime | None,
    created_before: datetime | None,
    resource_id: int | None,
    actor_identity: int | None,
    http_status: int | None,
) -> AuditFilter:
    """Attune's ``AuditEventQueryParams`` as a filter of our audit log."""
    return AuditFilter(
        category=_choice("category", q["category"], FILTER_CATEGORIES)
        if q.get("category")
        else None,
        attune_outcome=_choice("outcome", q["outcome"], FILTER_OUTCOMES)
        if q.get("outcome")
        else None,
        event_type=q.get("event_type") or None,
        actor_contains=q.get("actor_login") or None,
        actor_identity=actor_identity,
        resource_type=q.get("resource_type") or None,
        resource_ref=q.get("resource_ref") or None,
        execution_id=resource_id,
        path_contains=q.get("http_path") or None,
        http_status=http_status,
        nothing=bool(q.get("http_method") or q.get("request_id")),  # we record neither
        since=created_after,
        before=created_before,
    )


class AuditEvents:
    """Reads of the audit log in Attune's shape (the log itself is :class:`AuditLog`)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    async def list(
        self, where: AuditFilter, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        rows = await self.log.repo.page(where, page, per_page)
        total = await self.log.repo.total(where)
        ids = await self.log.repo.identities({r.actor for r in rows})
        return [audit_event(r, ids.get(r.actor)) for r in rows], total

    async def get(self, ident: int) -> dict[str, Any]:
        row = await self.log.repo.get(ident)
        if row is None:
            raise NotFound(f"audit event {ident} not found")
        ids = await self.log.repo.identities({row.actor})
        return audit_event(row, ids.get(row.actor))
