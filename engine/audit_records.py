"""The audit log's records: an entry to write, an entry as stored, a filter over the log, and
a chat request waiting for its confirmation; with the repository that keeps them.

Pure Python: the SQL is in :mod:`engine.storage.audit`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from engine.clock import now_utc

if TYPE_CHECKING:
    from engine.storage import Conn

#: Fields of a stored entry, in the order ``GET /api/v1/audit`` shows them.
FIELDS = (
    "id",
    "at",
    "actor",
    "role",
    "source",
    "channel",
    "verb",
    "target",
    "parameters",
    "outcome",
    "detail",
    "execution_id",
)
#: Our verbs of Attune's categories (``key.*`` verbs are ``secret``; a denial of any other verb
#: is a refused request: ``rbac``).
EXECUTION_VERBS = ("run", "rerun", "retry", "cancel", "confirm", "abort", "view")
AUTH_VERBS = ("login", "logout", "register", "refresh", "change-password")
KEY_PREFIX = "key."
#: Our outcomes that are Attune's ``success`` (``denied`` is ``denied``; the rest ``failure``).
SUCCESS = ("accepted", "completed", "confirmed", "ok", "success")
#: Attune's categories, outcomes and resource types a filter may name (in the order an error
#: lists them).
FILTER_CATEGORIES = ("execution", "auth", "secret", "rbac", "api", "admin", "pack")
FILTER_OUTCOMES = ("success", "denied", "failure")


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    source: str
    verb: str
    outcome: str
    role: str | None = None
    channel: str | None = None
    target: str | None = None
    parameters: dict[str, Any] | None = None
    detail: str | None = None
    execution_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self, **override: Any) -> dict[str, Any]:
        """The row to insert (``override`` replaces fields): a shallow copy, as nothing
        changes the values before they are written (``dataclasses.asdict`` deep-copied them,
        6% of an API submission's CPU)."""
        data = {
            "actor": self.actor,
            "source": self.source,
            "verb": self.verb,
            "outcome": self.outcome,
            "role": self.role,
            "channel": self.channel,
            "target": self.target,
            "parameters": self.parameters,
            "detail": self.detail[:2000] if self.detail is not None else None,
            "execution_id": self.execution_id,
            "at": now_utc(),
        }
        data.update(override)
        return data


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """An entry as stored."""

    id: int
    at: datetime
    actor: str
    role: str | None
    source: str
    channel: str | None
    verb: str
    target: str | None
    parameters: dict[str, Any] | None
    outcome: str
    detail: str | None
    execution_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which entries: every field given must hold (none given: all of them)."""

    actor: str | None = None
    verb: str | None = None
    #: Our outcome.
    outcome: str | None = None
    #: ``at`` at or after ``since``, before ``before``.
    since: datetime | None = None
    before: datetime | None = None
    #: Attune's category, outcome and event type of an entry (:mod:`engine.audit_events`).
    category: str | None = None
    attune_outcome: str | None = None
    event_type: str | None = None
    actor_contains: str | None = None
    #: The entry's actor is the login of this user id.
    actor_identity: int | None = None
    #: Attune's resource type (``execution``, ``key``, ``identity``; any other matches none).
    resource_type: str | None = None
    #: The target of an entry that is not a refused request.
    resource_ref: str | None = None
    execution_id: int | None = None
    #: A refused request whose path contains this.
    path_contains: str | None = None
    #: Refused requests are 403; any other status matches none.
    http_status: int | None = None
    #: Matches nothing (a filter on what we do not record).
    nothing: bool = False


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A chat request of a ``confirm: true`` action waiting for Confirm (or Abort)."""

    code: str
    action_ref: str
    #: Every parameter, sealed (secrets included); ``config`` is for display.
    sealed: str
    config: dict[str, Any]
    requester: str
    executor: dict[str, Any]
    chat: dict[str, Any] | None
    state: str
    expires_at: datetime
    created: datetime
    execution_id: int | None = None


class AuditRepository(Protocol):
    async def add(self, entry: AuditEntry, conn: Conn | None = None) -> None:
        """Write an entry, in ``conn``'s transaction when given."""
        ...

    async def page(self, where: AuditFilter, page: int, per_page: int) -> list[AuditRecord]:
        """Entries, newest first."""
        ...

    async def total(self, where: AuditFilter) -> int: ...

    async def get(self, ident: int) -> AuditRecord | None: ...

    async def identities(self, logins: set[str]) -> dict[str, int]:
        """User ids of those logins that are users'."""
        ...


class ConfirmationRepository(Protocol):
    async def add(self, conn: Conn, confirmation: Confirmation) -> None: ...

    async def get(self, code: str) -> Confirmation | None: ...

    async def settle(self, code: str, state: str) -> bool:
        """Move a pending request to ``state``; False when it is no longer pending."""
        ...

    async def ran(self, code: str, execution_id: int) -> None:
        """Record the execution a confirmed request started."""
        ...
