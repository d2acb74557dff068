"""Retries of transient failures, as Attune's ``max_retries`` policy.

A run of an action with ``max_retries`` N that ends *transiently* (``abandoned``: its worker
died or went silent; ``timeout``: it ran past its time limit) is run again, up to N times per
chain. A plain ``failed`` (the action said no: a non-zero exit) is never retried, nor a
cancelled run.

- When the run ends, the same statement that ends it sets its ``retry_due_at`` (now plus
  exponential back-off with jitter, :class:`RetryPolicy`): the worker knows the action it ran
  and the run's ``retry_count``, so the finish of an action without retries costs nothing more.
- :class:`RetrySweep` (in ``attune serve``) takes due retries. The retry is prepared as any
  submission (:meth:`ExecutionService.prepare`: the action now, the parameters validated
  against its schema, secrets sealed again), with the ended run's requester, chat route,
  callback URL, parent and enforcement, ``retry_count`` + 1, ``original_execution`` (the
  chain's first run) and ``retry_reason``. Then one transaction clears the mark
  (conditionally, so of any number of sweeps exactly one takes it) and records the retry with
  its audit entry and chat card (engine/storage/retries.py); after commit it is announced like
  any submission (broker, chat drainer, web UI).
- Cancelling an ended run whose retry is pending calls the retry off
  (:meth:`engine.service.ExecutionService.cancel`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine import backoff
from engine.audit_records import AuditEntry
from engine.background import cancel_and_wait
from engine.clock import now_utc
from engine.errors import EngineError, NotFound, Unavailable
from engine.params import REDACTED
from engine.records import Executor, NewExecution, StoredExecution
from engine.status import ExecutionStatus
from engine.storage.retries import RetryRepository

if TYPE_CHECKING:
    from engine.catalog import Catalog
    from engine.service import ExecutionService

log = logging.getLogger(f"attune.{__name__}")

#: Endings that are retried: the run did not get to say whether it worked.
TRANSIENT = frozenset({ExecutionStatus.ABANDONED, ExecutionStatus.TIMEOUT})
#: Fraction of each back-off drawn at random (Attune's 20 %): runs that failed together (a
#: worker that died with many) do not all come back together.
JITTER = 0.2
#: Due retries taken per sweep at most.
SWEEP_BATCH = 100
#: Key of the retry's requester (``executor``) that says how many retries its action allows,
#: for its chat card ("retry 1 of 3 of #12") without a query per card.
MAX_RETRIES_KEY = "max_retries"


@dataclass(frozen=True)
class RetryPolicy:
    """When the retry of a transiently ended run is due: ``base_s * 2**retry_count``, at most
    ``cap_s``, less up to ``jitter`` of it at random (engine/backoff.py)."""

    base_s: float = 1.0
    cap_s: float = 300.0
    jitter: float = JITTER

    def delay_s(self, retry_count: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry_count + 1`` (``retry_count``: retries the
        chain has had so far)."""
        return backoff.delay_s(
            retry_count, base_s=self.base_s, cap_s=self.cap_s, jitter=self.jitter, rand=rand
        )

    def due_at(
        self,
        status: ExecutionStatus,
        retry_count: int,
        max_retries: int,
        now: datetime,
        rand: Callable[[], float] = random.random,
    ) -> datetime | None:
        """When a run that ended ``status`` after ``retry_count`` retries of its chain is run
        again, or None: not a transient ending, or its action's ``max_retries`` used up."""
        if status not in TRANSIENT or retry_count >= max_retries:
            return None
        return now + timedelta(seconds=self.delay_s(retry_count, rand))

    async def due_for(
        self, catalog: Catalog, action_ref: str, retry_count: int, status: ExecutionStatus
    ) -> datetime | None:
        """:meth:`due_at` for a run of ``action_ref``: the action is looked up (cached) only
        for a transient ending; a deleted action is not retried."""
        if status not in TRANSIENT:
            return None
        try:
            action = await catalog.get_action(action_ref)
        except NotFound:
            return None
        return self.due_at(status, retry_count, action.max_retries, now_utc())


def retry_of(
    ended: StoredExecution, prepared: NewExecution, max_retries: int
) -> tuple[NewExecution, AuditEntry]:
    """The next run of ``ended``'s chain and its audit entry (pure): ``prepared`` (the same
    request submitted anew, :meth:`ExecutionService.prepare`) with the chain's fields, and the
    ended run's requester, parent, enforcement, chat route and callback URL."""
    attempt = ended.retry_count + 1
    original = ended.original_execution or ended.id
    new = dataclasses.replace(
        prepared,
        executor={**ended.executor, MAX_RETRIES_KEY: max_retries},
        parent=ended.parent,
        enforcement=ended.enforcement,
        callback_url=ended.callback_url,
        chat=ended.chat,
        idempotency_key=None,
        retry_count=attempt,
        original_execution=original,
        retry_reason=ended.status,
    )
    who = ended.executor or {}
    token = who.get("token")
    entry = AuditEntry(
        actor=str(who.get("identity") or "system"),
        source=str(who.get("source") or "system"),
        role=who.get("role"),
        channel=who.get("channel") or (f"token:{token}" if token else None),
        verb="retry",
        outcome="accepted",
        target=ended.action_ref,
        detail=(
            f"retry {attempt} of {max_retries} of #{original}: #{ended.id} ended {ended.status}"
        ),
    )
    return new, entry


def requester_of(ended: StoredExecution) -> Executor:
    """The ended run's requester, as a submission takes it."""
    who = dict(ended.executor or {})
    return Executor(
        identity=str(who.pop("identity", "system")),
        source=who.pop("source", "api"),
        channel=who.pop("channel", None),
        extra=who,
    )


class Retries:
    """Takes due retries and submits them (any number of processes may run it)."""

    def __init__(self, service: ExecutionService, repo: RetryRepository) -> None:
        self.service = service
        self.repo = repo

    async def sweep(self, limit: int = SWEEP_BATCH) -> list[int]:
        """Submit every retry due now; returns the new executions' ids."""
        made: list[int] = []
        for ended in await self.repo.due(now_utc(), limit):
            try:
                new_id = await self._take(ended)
            except Unavailable:
                raise  # the database is away: the next sweep tries them all again
            except EngineError as exc:
                # This one stays due (tried again next sweep); the others are not held up.
                log.warning("execution %s: retry not submitted: %s", ended.id, exc.message)
                continue
            if new_id is not None:
                made.append(new_id)
        return made

    async def _prepare(self, ended: StoredExecution) -> tuple[NewExecution, int] | str:
        """The retry of ``ended`` as the submission path prepares it (the action looked up,
        the parameters validated against its schema now, secrets sealed again) and the
        action's ``max_retries``; or why it is not retried. Raises on an outage (the retry
        stays due for the next sweep)."""
        try:
            action = await self.service.catalog.get_action(ended.action_ref)
        except NotFound:
            return f"action '{ended.action_ref}' no longer exists"
        if not action.enabled:
            return f"action '{ended.action_ref}' is disabled"
        if ended.retry_count >= action.max_retries:
            return f"action '{ended.action_ref}' now allows {action.max_retries} retries"
        _, parameters = await self.service.parameters_of(ended.id)
        # Values stored secret (the action's, and a rule's read with kv.get_secret) stay so.
        sealed = frozenset(k for k, v in ended.config.items() if v == REDACTED)
        try:
            prepared = await self.service.prepare(
                ended.action_ref,
                parameters,
                requester_of(ended),
                action=action,
                secret_params=sealed,
            )
        except EngineError as exc:
            if exc.http_status >= 500:
                raise
            return f"its request is no longer valid: {exc.message}"
        return prepared, action.max_retries

    async def _take(self, ended: StoredExecution) -> int | None:
        prepared = await self._prepare(ended)

        def build(row: StoredExecution) -> tuple[NewExecution, AuditEntry] | None:
            if isinstance(prepared, str):
                return None
            return retry_of(row, *prepared)

        taken = await self.repo.take(ended.id, build)
        if taken is None:
            return None  # another sweep took it, or a cancel called it off
        _, made = taken
        if made is None:
            log.warning("execution %s: retry dropped: %s", ended.id, prepared)
            return None
        log.info(
            "execution %s ended %s: retry %d submitted as execution %s",
            ended.id,
            ended.status,
            made.retry_count,
            made.id,
        )
        self.service.metrics.retries.labels(made.action_ref, made.retry_reason or "").inc()
        self.service.announce(made)
        return made.id


class RetrySweep:
    """The loop of a serve process that runs :meth:`Retries.sweep` every ``interval_s``."""

    def __init__(self, retries: Retries, interval_s: float) -> None:
        self.retries = retries
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> RetrySweep:
        self._task = asyncio.create_task(self._loop(), name="retries")
        return self

    async def _loop(self) -> None:
        while True:
            try:
                await self.retries.sweep()
            except EngineError as exc:
                log.warning("retry sweep failed: %s", exc.message)
            except Exception as exc:
                log.warning("retry sweep failed: %s", exc)
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)
