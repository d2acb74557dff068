"""The worker: takes ``execution.requested`` messages, claims the row, runs the action, records
the end. A duplicate message finds the row already claimed and does nothing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

from engine import broker as topics
from engine.broker import Broker, Envelope, Subscription
from engine.catalog import Catalog
from engine.errors import EngineError, NotFound
from engine.runners import Runner, RunRequest, RunResult
from engine.service import ExecutionService
from engine.status import ExecutionStatus

log = logging.getLogger(__name__)

#: Tries to record the end of a run; later tries store a reduced result without the output.
FINISH_ATTEMPTS = 6
#: Name of the shared queue workers compete on.
REQUESTED_QUEUE = "requested"


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Worker:
    def __init__(
        self,
        service: ExecutionService,
        catalog: Catalog,
        broker: Broker,
        runners: Mapping[str, Runner],
        *,
        worker_id: str,
        concurrency: int,
        sweep_interval_s: float,
        requeue_after_s: float,
    ) -> None:
        self.service = service
        self.catalog = catalog
        self.broker = broker
        self.runners = runners
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.sweep_interval_s = sweep_interval_s
        self.requeue_after_s = requeue_after_s
        self._running: dict[int, asyncio.Event] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._intake: Subscription | None = None
        self._accepting = True
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> list[int]:
        return sorted(self._running)

    async def start(self) -> None:
        self._intake = await self.broker.consume(
            REQUESTED_QUEUE, [topics.REQUESTED], self._on_requested, prefetch=self.concurrency
        )
        await self.broker.consume(None, [topics.CANCEL], self._on_cancel, prefetch=4)
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="attune-sweep")

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking work and sweeping; give running executions ``grace_s`` to finish.

        Cancel messages are still received during the grace period.
        """
        self._accepting = False
        if self._intake is not None:
            await self._intake.cancel()
            self._intake = None
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)

    async def _on_requested(self, envelope: Envelope) -> None:
        execution_id = envelope.payload.get("execution_id")
        if not isinstance(execution_id, int):
            log.warning("ignoring %s without an execution id", envelope.message_type)
            return
        await self.execute(execution_id)

    async def _on_cancel(self, envelope: Envelope) -> None:
        event = self._running.get(envelope.payload.get("execution_id", -1))
        if event is not None:
            event.set()

    async def execute(self, execution_id: int) -> None:
        """Run one execution if this worker wins the claim."""
        if execution_id in self._running or not self._accepting:
            return
        cancel = asyncio.Event()
        # Registered before the claim: a cancel can only be published after the row is running.
        self._running[execution_id] = cancel
        self._idle.clear()
        try:
            claimed = await self.service.claim(execution_id, self.worker_id)
            if claimed is None:
                return
            result = await self._run(
                claimed.id, claimed.action_ref, claimed.parameters, claimed.timeout_s, cancel
            )
            await asyncio.shield(self._finish(execution_id, result))
        except asyncio.CancelledError:
            stopped = RunResult(outcome="failed", error="the worker stopped during the run")
            await asyncio.shield(self._finish(execution_id, stopped, ExecutionStatus.ABANDONED))
            raise
        except EngineError as exc:
            log.error("execution %s: %s", execution_id, exc.message)
        finally:
            self._running.pop(execution_id, None)
            if not self._running:
                self._idle.set()

    async def _run(
        self,
        execution_id: int,
        action_ref: str,
        parameters: dict[str, object],
        timeout_s: float,
        cancel: asyncio.Event,
    ) -> RunResult:
        try:
            action = await self.catalog.get_action(action_ref)
        except NotFound:
            return RunResult(outcome="failed", error=f"action '{action_ref}' no longer exists")
        runner = self.runners.get(action.runner_type)
        if runner is None:
            return RunResult(outcome="failed", error=f"no runner for '{action.runner_type}'")
        request = RunRequest(
            execution_id=execution_id,
            action=action,
            parameters=dict(parameters),
            timeout_s=timeout_s,
            cancel=cancel,
        )
        try:
            return await runner.run(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("runner %s crashed on execution %s", action.runner_type, execution_id)
            return RunResult(outcome="failed", error=f"internal error: {type(exc).__name__}")

    async def _finish(
        self, execution_id: int, result: RunResult, status: ExecutionStatus | None = None
    ) -> None:
        target = status or ExecutionStatus(result.outcome)
        record = result.as_record()
        for attempt in range(FINISH_ATTEMPTS):
            try:
                if await self.service.finish(execution_id, target, record) is None:
                    log.warning(
                        "execution %s had already ended; result of this run dropped", execution_id
                    )
                return
            except EngineError as exc:
                log.error(
                    "could not record the end of execution %s (attempt %d): %s",
                    execution_id,
                    attempt + 1,
                    exc.message,
                )
                # Keep the outcome but drop what may be unstorable, then retry after a pause.
                record = {
                    "succeeded": False,
                    "exit_code": result.exit_code,
                    "duration_ms": result.duration_ms,
                    "error": f"{result.error or target.value}; the full result could not be "
                    f"stored: {exc.message}",
                }
                if target is ExecutionStatus.COMPLETED:
                    target = ExecutionStatus.FAILED
                await asyncio.sleep(min(2**attempt * 0.1, 5.0))

    async def _sweep_loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                ids = await self.service.requeue_stale(self.requeue_after_s)
                if ids:
                    log.info("sweep: published %d stale requested executions again", len(ids))
            except Exception as exc:
                log.warning("sweep failed: %s", exc)
