"""The broker seam: the doorbell that says an execution changed. The database holds the state.

Topology (DESIGN.md): topic exchange ``attune.executions``; routing keys
``execution.requested``, ``execution.completed``, ``execution.cancel``. A message is an
:class:`Envelope` whose payload carries the execution id, never the only copy of state.

Queues come in two kinds: a *shared* queue (a name; its consumers compete for messages, as
workers do for ``execution.requested``) and a *private* queue (``name=None``; one per consumer,
every consumer sees every message, as each worker must for ``execution.cancel``).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, Field

REQUESTED = "execution.requested"
STARTED = "execution.started"
COMPLETED = "execution.completed"
CANCEL = "execution.cancel"
#: A workflow's task run ended (published beside ``execution.completed``, only for those).
WORKFLOW_TASK_ENDED = "workflow.task_ended"
#: The shared queue workers take ``execution.requested`` from (``<exchange>.requested``).
REQUESTED_QUEUE = "requested"


class Envelope(BaseModel):
    message_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    message_type: str
    version: int = 1
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    payload: dict[str, Any] = Field(default_factory=dict)


Handler = Callable[[Envelope], Awaitable[None]]


class Subscription(Protocol):
    async def cancel(self) -> None:
        """Stop taking new messages; handlers already running finish undisturbed."""


class Broker(Protocol):
    async def start(self) -> None:
        """Connect and declare the exchange."""

    async def close(self) -> None:
        """Stop consumers and disconnect; safe to call twice."""

    async def publish(self, routing_key: str, payload: dict[str, Any]) -> None:
        """Publish durably: returns once the broker has taken responsibility for the message."""

    async def consume(
        self, name: str | None, routing_keys: Sequence[str], handler: Handler, *, prefetch: int = 16
    ) -> Subscription:
        """Run ``handler`` for messages matching ``routing_keys``, up to ``prefetch`` at once.

        A handler that returns acknowledges the message; one that raises has it dropped (and
        logged): the database sweep, not redelivery, recovers work whose message was lost.
        """

    async def ping(self) -> bool:
        """True while the broker is reachable."""

    async def backlog(self, name: str) -> int | None:
        """Messages waiting in the shared queue ``name``; None when that is not known."""


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""
    return _match(pattern.split("."), key.split("."))


def _match(p: list[str], k: list[str]) -> bool:
    if not p:
        return not k
    if p[0] == "#":
        return any(_match(p[1:], k[i:]) for i in range(len(k) + 1))
    if not k:
        return False
    return (p[0] in {"*", k[0]}) and _match(p[1:], k[1:])
