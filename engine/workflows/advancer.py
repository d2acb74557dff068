"""The loop that moves running workflows on: it takes ``workflow.task_ended`` messages from a
shared queue (one consumer gets each, across processes) and folds the end in, and every
``interval_s`` (and at once when an execution is asked to cancel) runs the repair sweep
(:meth:`engine.workflows.runs.WorkflowRuns.sweep`). Every process that runs a worker or the
housekeeping runs one, so workflows move while any of them is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from engine import broker as topics
from engine.background import cancel_and_wait
from engine.broker import Broker, Envelope, Subscription
from engine.workflows.runs import WorkflowRuns

log = logging.getLogger(f"attune.{__name__}")

#: The shared queue of ``workflow.task_ended`` (``<exchange>.workflow-tasks``).
TASK_ENDED_QUEUE = "workflow-tasks"
#: How often the repair sweep runs (a lost message or a crash delays a workflow by this).
SWEEP_INTERVAL_S = 1.0


class WorkflowAdvancer:
    def __init__(
        self, runs: WorkflowRuns, broker: Broker, interval_s: float = SWEEP_INTERVAL_S
    ) -> None:
        self.runs = runs
        self.broker = broker
        self.interval_s = interval_s
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscriptions: list[Subscription] = []

    async def start(self) -> WorkflowAdvancer:
        self._subscriptions.append(
            await self.broker.consume(
                TASK_ENDED_QUEUE, [topics.WORKFLOW_TASK_ENDED], self._on_task_ended, prefetch=8
            )
        )
        self._subscriptions.append(
            await self.broker.consume(None, [topics.CANCEL], self._on_cancel, prefetch=4)
        )
        self._task = asyncio.create_task(self._loop(), name="attune-workflows")
        return self

    async def _on_task_ended(self, envelope: Envelope) -> None:
        execution_id = envelope.payload.get("execution_id")
        if isinstance(execution_id, int):
            await self.runs.execution_ended(execution_id)

    async def _on_cancel(self, _envelope: Envelope) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.runs.sweep()
            except Exception as exc:
                log.warning("workflow sweep failed: %s", getattr(exc, "message", None) or exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()

    async def stop(self) -> None:
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.cancel()
        self._subscriptions = []
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await self.runs.close()
