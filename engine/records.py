"""What an execution is to its callers: who asked (:class:`Executor`), what a worker claimed
(:class:`Claimed`), the record the API and chat show (:class:`Execution`), where its news goes
(:class:`Route`, :func:`delivery_target`), its outbox rows (:class:`Delivery`), and the
repository that stores them (:class:`ExecutionRepository`, implemented per dialect in
``engine/storage/``).

Pure Python: nothing here knows the database. The records are frozen; a record is what the
API serialises (orjson writes a dataclass's fields in their order, as it wrote the dicts these
records replace).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, Protocol

Source = Literal["slack", "api", "rule", "chat", "cli"]


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Claimed:
    """An execution a worker has moved to ``running``; ``parameters`` include secrets."""

    id: int
    action_ref: str
    parameters: dict[str, Any]
    timeout_s: float
    #: Who asked (the execution's ``executor`` column) and the enforcement, if a rule did.
    requester: dict[str, Any] = field(default_factory=dict)
    enforcement: int | None = None
    #: How many times this run's chain was retried before it (engine/retries.py).
    retry_count: int = 0
    #: A workflow's task run (its retries are the workflow's ``retry``, not its action's).
    in_workflow: bool = False


def delivery_target(chat: dict[str, Any]) -> str:
    """The outbox target of an execution's chat route: ``slack`` or ``terminal:<session>``.

    The one place this rule is written: storage binds the target it gives (PostgreSQL's
    folded statements copy it from the execution's first chat delivery)."""
    if chat.get("sink") == "terminal":
        return f"terminal:{chat.get('session')}"
    return "slack"


def chat_target(chat: dict[str, Any] | None) -> str | None:
    """The chat target of an execution with this route, or None (no chat route)."""
    return delivery_target(chat) if chat else None


class _Fields:
    """``as_dict()``: the record's fields by name, for JSON and for reports."""

    __slots__ = ()

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Execution(_Fields):
    """An execution as the API and chat show it (``config`` has secrets redacted).

    ``executor`` is Attune's: the requesting identity's id (None for Slack users, rules and
    the command line); who asked, from where, is ours: ``requester``."""

    id: int
    action_ref: str
    status: str
    config: dict[str, Any]
    parent: int | None
    enforcement: int | None
    result: dict[str, Any] | None
    created: datetime
    updated: datetime
    started_at: datetime | None
    finished_at: datetime | None
    executor: int | None
    requester: dict[str, Any]
    #: The retry chain (engine/retries.py): Attune's ``original_execution`` (the chain's first
    #: run, None for a first run), which retry this is (0: none), why it was retried
    #: (``abandoned``, ``timeout``), and when this ended run's own retry is due (None: none).
    original_execution: int | None = None
    retry_count: int = 0
    retry_reason: str | None = None
    retry_due_at: datetime | None = None
    #: Attune's: for a workflow's task run, ``{workflow_execution, task_name, task_index,
    #: retry_count, max_retries, timeout_seconds}`` (``parent`` is the workflow's execution).
    workflow_task: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Route(_Fields):
    """Where an execution's news goes: its chat route and callback URL."""

    chat: dict[str, Any] | None
    callback_url: str | None


@dataclass(frozen=True, slots=True)
class StoredExecution:
    """Every column of an execution, as storage returns it (for the service: secrets, the
    worker and its process are not shown; :meth:`record` is)."""

    id: int
    action_ref: str
    status: str
    config: dict[str, Any]
    secrets: str | None
    parent: int | None
    enforcement: int | None
    executor: dict[str, Any]
    result: dict[str, Any] | None
    timeout_s: float
    callback_url: str | None
    chat: dict[str, Any] | None
    worker: str | None
    heartbeat_at: datetime | None
    pid: int | None
    pid_start: int | None
    idempotency_key: str | None
    created: datetime
    updated: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retry_count: int = 0
    original_execution: int | None = None
    retry_reason: str | None = None
    retry_due_at: datetime | None = None
    concurrency_key: str | None = None
    workflow_task: dict[str, Any] | None = None

    def record(self) -> Execution:
        who = self.executor
        return Execution(
            self.id,
            self.action_ref,
            self.status,
            self.config,
            self.parent,
            self.enforcement,
            self.result,
            self.created,
            self.updated,
            self.started_at,
            self.finished_at,
            who.get("identity_id"),
            who,
            self.original_execution,
            self.retry_count,
            self.retry_reason,
            self.retry_due_at,
            self.workflow_task,
        )

    @property
    def route(self) -> Route:
        return Route(self.chat, self.callback_url)


@dataclass(frozen=True, slots=True)
class NewExecution:
    """The columns of an execution being submitted."""

    action_ref: str
    status: str
    config: dict[str, Any]
    secrets: str | None
    parent: int | None
    enforcement: int | None
    executor: dict[str, Any]
    timeout_s: float
    callback_url: str | None
    chat: dict[str, Any] | None
    idempotency_key: str | None
    created: datetime
    updated: datetime
    retry_count: int = 0
    original_execution: int | None = None
    retry_reason: str | None = None
    concurrency_key: str | None = None
    workflow_task: dict[str, Any] | None = None


#: Names of :class:`NewExecution`'s fields (its columns), in order.
NEW_EXECUTION_COLUMNS = tuple(f.name for f in fields(NewExecution))

#: Events of an execution's news.
Event = Literal["created", "started", "completed"]


@dataclass(frozen=True, slots=True)
class Delivery(_Fields):
    """One outbox row: an event of an execution to deliver to a target (``slack``,
    ``callback`` or ``terminal:<session>``), as the API shows it and a sink receives it."""

    id: int
    execution_id: int
    target: str
    event: str
    state: str
    attempts: int
    last_error: str | None
    created: datetime
    next_attempt_at: datetime
    delivered_at: datetime | None


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    """What a list of executions is narrowed to (every field: all when None)."""

    status: tuple[str, ...] | None = None
    action_ref: str | None = None
    #: Only actions matching one of these LIKE patterns (escaped with ``\\``).
    action_like: tuple[str, ...] | None = None
    enforcement: int | None = None
    parent: int | None = None
    #: Only executions without a parent (Attune's ``top_level_only``: no workflow task runs).
    top_level_only: bool = False
    pack: str | None = None
    #: Only executions requested by this identity (``executor.identity``: a login, a Slack
    #: user id, ``rule:...``).
    requester: str | None = None
    #: Only executions requested by this person: ``executor.identity``, or the Slack user
    #: name they had when they asked (``executor.user_name``).
    person: str | None = None
    #: Only the retries of this chain (their ``original_execution``).
    original_execution: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """A status change: to ``status`` from one of ``sources``, setting ``values`` (columns:
    ``result``, ``started_at``, ``finished_at``, ``worker``, ``heartbeat_at``); with news
    ``event`` written to the outbox in the same transaction (``chat_only``: not to the
    callback URL)."""

    status: str
    sources: tuple[str, ...]
    values: dict[str, Any]
    updated: datetime
    event: Event | None = None
    chat_only: bool = False
    #: Only a row outside any concurrency group (the plain claim: a run held by a concurrency
    #: policy is claimed with a slot, engine/concurrency_slots.py).
    unkeyed: bool = False


class ExecutionRepository(Protocol):
    """Executions and their outbox rows (``deliveries``), one implementation per dialect.

    Each method is its own transaction; a status change and its outbox rows commit
    together."""

    async def submit(
        self,
        new: NewExecution,
        audit: dict[str, Any] | None,
        chat_target: str | None,
    ) -> StoredExecution:
        """Insert the execution, its audit entry (``audit``: the audit row's columns; its
        parameters and execution id are the new execution's) and, with ``chat_target``, the
        "created" outbox row for it. Raises Conflict when the idempotency key is taken."""

    async def submit_many(
        self, batch: Sequence[tuple[NewExecution, dict[str, Any] | None, str | None]]
    ) -> builtins.list[StoredExecution]:
        """:meth:`submit` of each ``(new, audit, chat_target)``, in order, in one
        transaction: all are recorded or none (Conflict when an idempotency key is taken)."""

    async def get(self, execution_id: int) -> StoredExecution | None: ...

    async def get_many(self, execution_ids: Sequence[int]) -> list[StoredExecution]: ...

    async def find_by_key(self, idempotency_key: str) -> StoredExecution | None: ...

    async def list(
        self, where: ExecutionFilter, *, limit: int, offset: int
    ) -> builtins.list[StoredExecution]:
        """Newest first."""

    async def count(self, where: ExecutionFilter) -> int: ...

    async def count_by_status(self) -> dict[str, int]: ...

    async def change(self, execution_id: int, change: Change) -> StoredExecution | None:
        """Apply ``change`` if the execution is in one of its sources (None when not), with
        the outbox rows of its news."""

    async def claim_requested(
        self, worker_id: str, limit: int, now: datetime
    ) -> builtins.list[StoredExecution]:
        """Move up to ``limit`` ``requested`` executions to ``running`` for ``worker_id``
        (each with chat gets its "started" outbox row); PostgreSQL skips rows other workers
        are claiming."""

    async def record_process(self, execution_id: int, pid: int, pid_start: int | None) -> None: ...

    async def heartbeat(
        self, worker_id: str, live: Sequence[str], now: datetime
    ) -> builtins.list[tuple[int, str]]:
        """Mark ``worker_id``'s runs in ``live`` statuses alive; their (id, status)."""

    async def live_runs(
        self, live: Sequence[str], *, silent_since: datetime | None, workers: Sequence[str] | None
    ) -> builtins.list[tuple[int, str | None]]:
        """(id, worker) of runs in ``live`` statuses, narrowed to those whose heartbeat is
        older than ``silent_since`` and to ``workers``."""

    async def workers_with_runs(self, live: Sequence[str]) -> builtins.list[str]: ...

    async def deliveries(self, execution_id: int) -> builtins.list[Delivery]: ...

    async def requeue_stale(
        self, status: str, cutoff: datetime, limit: int, now: datetime
    ) -> builtins.list[tuple[int, str]]:
        """Touch (``updated``) up to ``limit`` executions in ``status`` untouched since
        ``cutoff``; their (id, action_ref)."""

    # -- the outbox -------------------------------------------------------------------------

    async def due_deliveries(
        self, targets: Sequence[str], now: datetime, limit: int
    ) -> builtins.list[int]:
        """Ids of up to ``limit`` due deliveries of ``targets``, none behind an open earlier
        event of the same execution and target."""

    async def take_deliveries(
        self, ids: Sequence[int], targets: Sequence[str], now: datetime, lease_until: datetime
    ) -> builtins.list[Delivery]:
        """Those of ``ids`` still due, taken as ``sending`` until ``lease_until``."""

    async def delivered(self, ids: Sequence[int], now: datetime) -> None: ...

    async def retry_delivery(
        self,
        delivery_id: int,
        *,
        state: str,
        attempts: int,
        error: str,
        next_attempt_at: datetime,
    ) -> None:
        """A failed attempt: ``pending`` again at ``next_attempt_at``, or ``failed``."""

    async def release_deliveries(self, ids: Sequence[int]) -> None:
        """Hand ``sending`` deliveries back to ``pending`` (no attempt was made)."""
