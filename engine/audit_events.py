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

from sqlalchemy import ColumnElement, and_, false, not_, or_, select

from engine.audit import AuditLog
from engine.errors import InvalidRequest, NotFound
from engine.storage.tables import audit, users

CATEGORIES = ("api", "auth", "rbac", "secret", "admin", "execution", "pack")
OUTCOMES = ("success", "failure", "denied")
#: Our verbs of each category (``key.*`` verbs are ``secret``; a denial of any other verb is a
#: refused request: ``rbac``).
_EXECUTION_VERBS = ("run", "rerun", "cancel", "confirm", "abort", "view")
_AUTH_VERBS = ("login", "logout", "register", "refresh", "change-password")
_KEY_PREFIX = "key."
#: Our outcomes that are Attune's ``success`` (``denied`` is ``denied``; the rest ``failure``).
_SUCCESS = ("accepted", "completed", "confirmed", "ok", "success")


def category(verb: str, outcome: str) -> str:
    if verb in _EXECUTION_VERBS:
        return "execution"
    if verb in _AUTH_VERBS:
        return "auth"
    if verb.startswith(_KEY_PREFIX):
        return "secret"
    return "rbac" if outcome == "denied" else "api"


def attune_outcome(outcome: str) -> str:
    if outcome in _SUCCESS:
        return "success"
    return "denied" if outcome == "denied" else "failure"


def event_type(verb: str, outcome: str) -> str:
    kind = category(verb, outcome)
    return "rbac.denied" if kind == "rbac" else f"{kind}.{verb.replace('-', '_')}"


def audit_event(row: Mapping[Any, Any], identity: int | None) -> dict[str, Any]:
    """Attune's ``AuditEventResponse`` of one of our entries (with our fields beside)."""
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

_c = audit.c
_IS_EXECUTION = _c.verb.in_(_EXECUTION_VERBS)
_IS_AUTH = _c.verb.in_(_AUTH_VERBS)
_IS_SECRET = _c.verb.startswith(_KEY_PREFIX, autoescape=True)
_OTHER = not_(or_(_IS_EXECUTION, _IS_AUTH, _IS_SECRET))
_IS_RBAC = and_(_OTHER, _c.outcome == "denied")
_BY_CATEGORY: dict[str, ColumnElement[bool]] = {
    "execution": _IS_EXECUTION,
    "auth": _IS_AUTH,
    "secret": _IS_SECRET,
    "rbac": _IS_RBAC,
    "api": and_(_OTHER, _c.outcome != "denied"),
    "admin": false(),
    "pack": false(),
}
_BY_OUTCOME: dict[str, ColumnElement[bool]] = {
    "success": _c.outcome.in_(_SUCCESS),
    "denied": _c.outcome == "denied",
    "failure": not_(_c.outcome.in_((*_SUCCESS, "denied"))),
}
_BY_RESOURCE: dict[str, ColumnElement[bool]] = {
    "execution": or_(_c.execution_id.is_not(None), _IS_EXECUTION),
    "key": and_(_c.execution_id.is_(None), _IS_SECRET),
    "identity": and_(_c.execution_id.is_(None), _IS_AUTH),
}


def _choice(name: str, value: str, allowed: Mapping[str, ColumnElement[bool]]) -> Any:
    if value not in allowed:
        raise InvalidRequest(f"{name} must be one of {', '.join(allowed)}")
    return allowed[value]


def _event_type(value: str) -> ColumnElement[bool]:
    if value == "rbac.denied":
        return _IS_RBAC
    kind, _, verb = value.partition(".")
    if kind not in _BY_CATEGORY or not verb:
        return false()
    verbs = {verb, verb.replace("_", "-")}
    return and_(_BY_CATEGORY[kind], _c.verb.in_(sorted(verbs)))


def conditions(
    q: Mapping[str, str],
    *,
    created_after: datetime | None,
    created_before: datetime | None,
    resource_id: int | None,
    actor_identity: int | None,
    http_status: int | None,
) -> list[Any]:
    """Attune's ``AuditEventQueryParams`` as conditions on our audit table."""
    where: list[Any] = []
    if q.get("category"):
        where.append(_choice("category", q["category"], _BY_CATEGORY))
    if q.get("outcome"):
        where.append(_choice("outcome", q["outcome"], _BY_OUTCOME))
    if q.get("event_type"):
        where.append(_event_type(q["event_type"]))
    if q.get("actor_login"):
        where.append(_c.actor.icontains(q["actor_login"], autoescape=True))
    if actor_identity is not None:
        where.append(_c.actor.in_(select(users.c.login).where(users.c.id == actor_identity)))
    if q.get("resource_type"):
        where.append(_BY_RESOURCE.get(q["resource_type"], false()))
    if q.get("resource_ref"):
        where.append(and_(_c.target == q["resource_ref"], not_(_IS_RBAC)))
    if resource_id is not None:
        where.append(_c.execution_id == resource_id)
    if q.get("http_path"):
        where.append(and_(_IS_RBAC, _c.target.icontains(q["http_path"], autoescape=True)))
    if http_status is not None:
        where.append(_IS_RBAC if http_status == 403 else false())
    if q.get("http_method") or q.get("request_id"):
        where.append(false())  # we record neither
    if created_after is not None:
        where.append(_c.at >= created_after)
    if created_before is not None:
        where.append(_c.at < created_before)
    return where


class AuditEvents:
    """Reads of the audit log in Attune's shape (the log itself is :class:`AuditLog`)."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log
        self.store = log.store

    async def _identities(self, logins: set[str]) -> dict[str, int]:
        if not logins:
            return {}
        query = select(users.c.login, users.c.id).where(users.c.login.in_(sorted(logins)))
        async with self.store.read() as conn:
            return {r[0]: r[1] for r in (await conn.execute(query)).all()}

    async def list(
        self, where: list[Any], page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        query = (
            select(audit)
            .where(*where)
            .order_by(audit.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.store.read(offload=True) as conn:
            rows = [r._mapping for r in (await conn.execute(query)).all()]
        total = await self.log.totals.count(audit, where)
        ids = await self._identities({r["actor"] for r in rows})
        return [audit_event(r, ids.get(r["actor"])) for r in rows], total

    async def get(self, ident: int) -> dict[str, Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(select(audit).where(audit.c.id == ident))).first()
        if row is None:
            raise NotFound(f"audit event {ident} not found")
        ids = await self._identities({row.actor})
        return audit_event(row._mapping, ids.get(row.actor))
