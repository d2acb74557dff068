"""What an execution is to its callers: who asked (:class:`Executor`), what a worker claimed
(:class:`Claimed`), the record the API and chat show, and where its news goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import Row

Source = Literal["slack", "api", "rule", "chat", "cli"]


@dataclass(frozen=True)
class Executor:
    """Who asked for an execution, and from where."""

    identity: str
    source: Source
    channel: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "identity": self.identity,
            "source": self.source,
            "channel": self.channel,
            **self.extra,
        }


@dataclass(frozen=True)
class Claimed:
    """An execution a worker has moved to ``running``; ``parameters`` include secrets."""

    id: int
    action_ref: str
    parameters: dict[str, Any]
    timeout_s: float
    #: Who asked (the execution's ``executor`` column) and the enforcement, if a rule did.
    requester: dict[str, Any] = field(default_factory=dict)
    enforcement: int | None = None


def delivery_target(chat: dict[str, Any]) -> str:
    """The outbox target of an execution's chat route: ``slack`` or ``terminal:<session>``."""
    if chat.get("sink") == "terminal":
        return f"terminal:{chat.get('session')}"
    return "slack"


#: Fields of a delivery as the API shows it.
DELIVERY_FIELDS = (
    "id",
    "execution_id",
    "target",
    "event",
    "state",
    "attempts",
    "last_error",
    "created",
    "next_attempt_at",
    "delivered_at",
)
#: Fields of an execution as the API and chat show it (``config`` has secrets redacted).
EXECUTION_FIELDS = (
    "id",
    "action_ref",
    "status",
    "config",
    "parent",
    "enforcement",
    "result",
    "created",
    "updated",
    "started_at",
    "finished_at",
)


def delivery_record(row: Row[Any]) -> dict[str, Any]:
    m = row._mapping
    return {name: m[name] for name in DELIVERY_FIELDS}


def execution_record(row: Row[Any]) -> dict[str, Any]:
    """The execution as the API and chat show it (secrets are already redacted in config)."""
    m = row._mapping
    record = {name: m[name] for name in EXECUTION_FIELDS}
    who = m["executor"]
    # Attune's ``executor`` is the requesting identity's id (None for Slack users, rules and
    # the command line); who asked, from where, is ours: ``requester``.
    record["executor"] = who.get("identity_id")
    record["requester"] = who
    return record
