"""Claiming runs held by a concurrency policy, across processes (engine/concurrency.py).

A run of an action with a policy carries its group (``concurrency_key``) from submission on.
The plain claim (:meth:`engine.service.ExecutionService.claim`) never moves such a run; a
worker that got its ``execution.requested`` comes here instead (:meth:`Slots.claim`):

- a slot is free and the run is its group's oldest waiting one: it is claimed with the slot,
  in one transaction (engine/storage/concurrency.py);
- a slot is free but an older run waits: the doorbell is rung for that one (first come,
  first served) and this one keeps waiting;
- no slot is free: ``enqueue`` leaves the run ``requested``; ``cancel`` refuses it
  (``cancelled``, with Attune's result naming the limit).

When a run of a group ends (any terminal change: completed, failed, timeout, cancelled,
abandoned by a sweep after its worker died), its slot is given back in the same transaction,
and :meth:`Slots.wake` rings for the group's oldest waiting run. A lost doorbell is rung
again by the sweep of stale ``requested`` rows, so no group stays blocked while a slot is free.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from engine import broker as topics
from engine.catalog import Catalog
from engine.clock import now_utc
from engine.concurrency import ConcurrencyPolicy, refusal
from engine.errors import EngineError, NotFound
from engine.records import ExecutionRepository, StoredExecution
from engine.status import ExecutionStatus
from engine.storage import Store
from engine.storage.concurrency import ConcurrencyGroups, Full, NotFirst, Took

log = logging.getLogger(f"attune.{__name__}")

#: The limit of a group whose action has lost its policy (or is gone): its runs still take
#: and give back slots, so the count stays true, but none waits.
NO_LIMIT = 2**31 - 1
#: Statuses of a run that holds its slot.
HOLDING = frozenset({ExecutionStatus.RUNNING.value, ExecutionStatus.CANCELING.value})


class Slots:
    """The slot side of claiming (one per :class:`engine.service.ExecutionService`)."""

    def __init__(
        self,
        store: Store,
        executions: ExecutionRepository,
        catalog: Catalog,
        publish_soon: Callable[[str, dict[str, Any]], None],
    ) -> None:
        self.groups = ConcurrencyGroups(store)
        self.executions = executions
        self.catalog = catalog
        self.publish_soon = publish_soon
        self._wakes: set[asyncio.Task[None]] = set()

    async def claim(
        self, execution_id: int, worker_id: str
    ) -> StoredExecution | dict[str, Any] | None:
        """Claim ``execution_id`` (which the plain claim did not move) with a slot: its row
        when claimed; the result to end it with when its ``cancel`` policy refuses it; None
        when it is not a waiting run of a group, or waits."""
        row = await self.executions.get(execution_id)
        if row is None or row.concurrency_key is None:
            return None
        key = row.concurrency_key
        if row.status != ExecutionStatus.REQUESTED.value:
            if row.status in HOLDING:
                # A second doorbell for a run already claimed (two ends rang for the same
                # oldest run): pass it on to the next one waiting.
                self.wake(key)
            return None
        policy = await self._policy(row.action_ref)
        limit = policy.limit if policy is not None else NO_LIMIT
        outcome = await self.groups.take(execution_id, key, limit, worker_id, now_utc())
        if isinstance(outcome, Took):
            if outcome.running < limit or (policy is not None and policy.method == "cancel"):
                # A slot is still free: the next waiting run's turn too. Under ``cancel`` the
                # next one is rung either way: it runs, or is refused now rather than left
                # waiting (when its own message came first, it found this run ahead of it).
                self.wake(key)
            return outcome.row
        if isinstance(outcome, NotFirst):
            if outcome.head is not None:
                self._ring(outcome.head, row.action_ref)
            return None
        assert isinstance(outcome, Full)
        if policy is not None and policy.method == "cancel":
            return refusal(row.action_ref, outcome.running, policy.limit, now_utc())
        log.info(
            "execution %s waits for a concurrency slot of %s (%d running, limit %d)",
            execution_id,
            row.action_ref,
            outcome.running,
            limit,
            extra={"execution_id": execution_id, "action_ref": row.action_ref},
        )
        return None

    async def heads(self, limit: int) -> list[int]:
        """The oldest waiting run of up to ``limit`` groups (claimed from the database while
        the broker is away)."""
        return await self.groups.heads(limit)

    def wake(self, key: str) -> None:
        """Ring for the oldest waiting run of group ``key``, in the background: a run of the
        group ended (its slot, if it held one, is free), or took a slot with more free."""
        task = asyncio.get_running_loop().create_task(self._wake(key))
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    async def _wake(self, key: str) -> None:
        try:
            _running, head = await self.groups.state(key)
        except EngineError as exc:  # the sweep of stale requested runs rings later
            log.warning("concurrency group %s: next run not found: %s", key, exc.message)
            return
        if head is not None:
            self._ring(head, None)

    def _ring(self, execution_id: int, action_ref: str | None) -> None:
        payload: dict[str, Any] = {"execution_id": execution_id}
        if action_ref is not None:
            payload["action_ref"] = action_ref
        self.publish_soon(topics.REQUESTED, payload)

    async def _policy(self, action_ref: str) -> ConcurrencyPolicy | None:
        try:
            return (await self.catalog.get_action(action_ref)).concurrency
        except NotFound:
            return None

    async def drain(self, timeout_s: float = 5.0) -> None:
        if self._wakes:
            await asyncio.wait(list(self._wakes), timeout=timeout_s)
