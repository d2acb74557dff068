"""The outbox drainer: delivers ``deliveries`` rows (chat cards, callback URLs) exactly once
each, in order per execution and target, surviving restarts and outages of the receiver.

A row is claimed with a conditional UPDATE (``pending`` -> ``sending`` with a lease), so
several listener processes can drain one database without posting anything twice. A failed
attempt goes back to ``pending`` with a backoff; a permanent failure, or running out of
attempts, ends in ``failed`` with the last error, which the API shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from engine import backoff
from engine.acks_first import AcksFirst
from engine.clock import now_utc
from engine.errors import EngineError
from engine.records import Delivery, Execution, Route
from engine.service import ExecutionService
from engine.url_display import scrub_urls

__all__ = ["Delivery", "DeliveryFailed", "OutboxDrainer", "Sink", "backoff_s"]

log = logging.getLogger(f"attune.{__name__}")

#: A claimed delivery not finished within this time is handed to another listener.
LEASE_S = 120.0
#: Rows claimed per round.
BATCH = 50
#: Backoff after failed attempts: base * 2**(attempts - 1), capped (:mod:`engine.backoff`).
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 300.0

#: Executions loaded for a batch of deliveries: id -> (record, route).
_Loaded = dict[int, tuple[Execution, Route]]


class DeliveryFailed(Exception):
    """A sink could not deliver: ``permanent`` stops retries, ``retry_after_s`` sets the delay."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.retry_after_s = retry_after_s


class Sink(Protocol):
    async def deliver(self, delivery: Delivery, execution: Execution, route: Route) -> None:
        """Deliver or raise :class:`DeliveryFailed`."""


def backoff_s(attempts: int) -> float:
    return backoff.delay_s(max(attempts - 1, 0), base_s=BACKOFF_BASE_S, cap_s=BACKOFF_MAX_S)


class OutboxDrainer:
    """Drains deliveries whose target is a key of ``sinks``: ``"slack"`` and ``"callback"`` in
    the server, ``"terminal:<session>"`` in one terminal chat."""

    def __init__(
        self,
        service: ExecutionService,
        sinks: dict[str, Sink],
        *,
        poll_interval_s: float = 1.0,
        max_attempts: int = 12,
        acks_first: AcksFirst | None = None,
    ) -> None:
        self.executions = service.executions
        self.acks_first = acks_first or AcksFirst()
        self.service = service
        self.sinks = sinks
        self.poll_interval_s = poll_interval_s
        self.max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Deliveries this process has claimed and not yet settled.
        self._claimed: set[int] = set()
        #: Claimed deliveries that succeeded this round (settled together at its end).
        self._delivered: list[int] = []

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="attune-outbox")

    async def stop(self, grace_s: float = 3.0) -> None:
        """Let the round in progress finish for ``grace_s``, then cancel it and hand what it
        had claimed back to ``pending``, so the next process need not wait out the lease."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        await asyncio.wait({task}, timeout=grace_s)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        with contextlib.suppress(EngineError):
            await self._settle_delivered()  # what a cancelled round delivered
        if self._claimed:
            with contextlib.suppress(EngineError):
                await self._release(sorted(self._claimed))
                log.info("outbox: handed %d unfinished deliveries back", len(self._claimed))

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                delivered = await self.drain_once()
            except EngineError as exc:
                log.warning("outbox: %s", exc.message)
                delivered = 0
            except Exception:
                log.exception("outbox round failed")
                delivered = 0
            if delivered and not self._stopping:
                continue  # there may be more due right away (the next event of the same run)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval_s)
            self._wake.clear()

    async def drain_once(self) -> int:
        """Claim what is due and deliver it; return how many deliveries were attempted."""
        await self._settle_delivered()  # left from a round whose settling failed
        batch = await self._claim(list(self.sinks))
        if not batch:
            return 0
        self._claimed.update(d.id for d in batch)
        by_stream: dict[tuple[int, str], list[Delivery]] = {}
        for d in batch:
            by_stream.setdefault((d.execution_id, d.target), []).append(d)
        try:
            loaded = await self.service.get_many_with_route(sorted({d.execution_id for d in batch}))
        except EngineError:
            loaded = {}  # each delivery then loads its own execution (and fails on its own)
        # Every stream ends (one's database error does not leave others running unseen);
        # then the successes are settled, and the first error is raised.
        ended = await asyncio.gather(
            *(self._deliver_stream(s, loaded) for s in by_stream.values()),
            return_exceptions=True,
        )
        await self._settle_delivered()
        for outcome in ended:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(batch)

    async def _settle_delivered(self) -> None:
        """Mark the successes not yet settled ``delivered``, in one statement (kept for the
        next round if that fails)."""
        ids = list(self._delivered)
        if not ids:
            return
        await self.executions.delivered(ids, now_utc())
        del self._delivered[: len(ids)]
        self._claimed.difference_update(ids)

    async def _deliver_stream(self, stream: Sequence[Delivery], loaded: _Loaded) -> None:
        for index, delivery in enumerate(sorted(stream, key=lambda d: d.id)):
            # The first event of a stream may use the execution as the batch loaded it; a
            # later one (its execution moved on meanwhile) loads it afresh.
            if not await self._deliver(delivery, loaded if index == 0 else {}):
                # Keep order: later events of this execution wait for the failed one.
                await self._release([d.id for d in stream[index + 1 :]])
                return

    async def _deliver(self, delivery: Delivery, loaded: _Loaded) -> bool:
        sink = self.sinks[delivery.target]
        attempts = delivery.attempts + 1
        await self.acks_first.step_aside()
        try:
            found = loaded.get(delivery.execution_id)
            if found is None:
                found = await self.service.get_with_route(delivery.execution_id)
            execution, route = found
            await sink.deliver(delivery, execution, route)
        except DeliveryFailed as exc:
            error = scrub_urls(exc.message)  # a URL's credentials and query never shown
            final = exc.permanent or attempts >= self.max_attempts
            delay = exc.retry_after_s if exc.retry_after_s is not None else backoff_s(attempts)
            log.warning(
                "delivery %s (%s %s of #%s) failed, attempt %d%s: %s",
                delivery.id,
                delivery.target,
                delivery.event,
                delivery.execution_id,
                attempts,
                " (giving up)" if final else f", next in {delay:.1f} s",
                error,
            )
            state = "failed" if final else "pending"
            await self._settle(delivery.id, attempts, state, error, delay)
            return False
        except Exception as exc:
            log.exception("delivery %s crashed", delivery.id)
            await self._settle(
                delivery.id,
                attempts,
                "pending",
                scrub_urls(f"internal error: {exc!r}"),
                backoff_s(attempts),
            )
            return False
        self._delivered.append(delivery.id)
        return True

    async def _claim(self, sink_names: list[str]) -> list[Delivery]:
        now = now_utc()
        ids = await self.executions.due_deliveries(sink_names, now, BATCH)
        if not ids:
            return []
        # Taken only if still due: another listener may have taken some meanwhile.
        lease_until = now + timedelta(seconds=LEASE_S)
        return await self.executions.take_deliveries(ids, sink_names, now, lease_until)

    async def _settle(
        self, delivery_id: int, attempts: int, state: str, error: str, delay_s: float
    ) -> None:
        """A failed attempt: retried after ``delay_s`` (``pending``) or given up (``failed``)."""
        await self.executions.retry_delivery(
            delivery_id,
            state=state,
            attempts=attempts,
            error=error,
            next_attempt_at=now_utc() + timedelta(seconds=delay_s),
        )
        self._claimed.discard(delivery_id)

    async def _release(self, ids: list[int]) -> None:
        if not ids:
            return
        await self.executions.release_deliveries(ids)
        self._claimed.difference_update(ids)
