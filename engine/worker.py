"""The worker: takes ``execution.requested`` messages, claims the row, runs the action, records
the end. A duplicate message finds the row already claimed and does nothing.

A message's handler only waits for a free slot and claims the row; the run itself is a task
the worker owns, so a dropped broker connection (which cancels handlers) never stops a run.
Around that, it keeps promises under faults: it marks its runs alive (heartbeat) and picks up
cancels it missed, runs the housekeeping (engine/housekeeping.py), and while the broker is
down it claims work straight from the database.

Each run's output is stored as it is printed (an :class:`engine.live_output.OutputWriter`
per run: coalesced, at most one write in flight, one per ``output_flush_interval_s``); the last
of it is written before the end is recorded, and the chunks are removed once the result, which
holds the whole output, is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from typing import Any

from engine import backoff, procs
from engine import broker as topics
from engine.acks_first import AcksFirst
from engine.broker import REQUESTED_QUEUE, Broker, Envelope, Subscription
from engine.catalog import Catalog
from engine.errors import EngineError, NotFound
from engine.housekeeping import Housekeeper
from engine.inquiries import InquiryService
from engine.inquiry_records import BadInquiry, InquiryRequest, inquiry_request
from engine.live_output import FLUSH_INTERVAL_S, LiveOutput, OutputWriter
from engine.liveness import AliveFile
from engine.records import Claimed
from engine.retries import TRANSIENT
from engine.runners import Runner, RunRequest, RunResult
from engine.service import ExecutionService
from engine.status import ExecutionStatus
from engine.workflows.runs import WorkflowRuns

log = logging.getLogger(f"attune.{__name__}")

#: Tries to record the end of a run; later tries store a reduced result without the output.
FINISH_ATTEMPTS = 6


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
        heartbeat_interval_s: float = 5.0,
        heartbeat_timeout_s: float = 30.0,
        db_poll_interval_s: float = 1.0,
        requeue_on_start: bool = False,
        housekeeping: bool = True,
        acks_first: AcksFirst | None = None,
        alive_file: AliveFile | None = None,
        live_output: LiveOutput | None = None,
        inquiries: InquiryService,
        output_flush_interval_s: float = FLUSH_INTERVAL_S,
        workflows: WorkflowRuns | None = None,
    ) -> None:
        self.service = service
        #: Starts (and parks) the executions of workflow actions (engine/workflows/runs.py).
        self.workflows = workflows
        #: Where runs' output is stored as it is printed (None: only in the result).
        self.live_output = live_output
        #: Where a run that asks a human parks its question (engine/inquiries.py).
        self.inquiries = inquiries
        self.output_flush_interval_s = output_flush_interval_s
        self.acks_first = acks_first or AcksFirst()
        self.catalog = catalog
        self.broker = broker
        self.runners = runners
        self.worker_id = worker_id
        self.concurrency = concurrency
        self.sweep_interval_s = sweep_interval_s
        self.requeue_after_s = requeue_after_s
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.db_poll_interval_s = db_poll_interval_s
        #: Publish every waiting execution at start (the in-process broker lost its messages).
        self.requeue_on_start = requeue_on_start and housekeeping
        #: Sweep, reaping, crash recovery and database polling: off for a worker that only
        #: runs its own process's submissions (``attune run``, ``attune chat``).
        self.housekeeping = housekeeping
        #: Rewritten at every heartbeat tick, for ``attune health --worker`` (engine/liveness.py).
        self.alive_file = alive_file
        self.housekeeper = Housekeeper(
            service,
            broker,
            own_worker_id=worker_id,
            sweep_interval_s=sweep_interval_s,
            requeue_after_s=requeue_after_s,
            heartbeat_timeout_s=heartbeat_timeout_s,
        )
        self._running: dict[int, asyncio.Event] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._loops: list[asyncio.Task[None]] = []
        self._direct: set[asyncio.Task[None]] = set()
        self._intake: Subscription | None = None
        self._accepting = True
        self._stopped = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def running(self) -> list[int]:
        return sorted(self._running)

    async def start(self) -> None:
        if self.housekeeping:
            await self.housekeeper.recover_local()
        self._intake = await self.broker.consume(
            REQUESTED_QUEUE, [topics.REQUESTED], self._on_requested, prefetch=self.concurrency
        )
        await self.broker.consume(None, [topics.CANCEL], self._on_cancel, prefetch=4)
        if self.requeue_on_start:
            await self.service.requeue_stale(0)
        loops = [(self._heartbeat_loop, "heartbeat")]
        if self.housekeeping:
            self.housekeeper.start()
            loops.append((self._db_poll_loop, "db-poll"))
        for loop, name in loops:
            self._loops.append(asyncio.create_task(loop(), name=f"attune-{name}"))
        self._beat_alive_file()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop taking work and sweeping; give running executions ``grace_s`` to finish.

        Cancel messages are still received, and heartbeats sent, during the grace period.
        A second call returns at once.
        """
        if self._stopped:
            return
        self._stopped = True
        self._accepting = False
        if self._intake is not None:
            await self._intake.cancel()
            self._intake = None
        await self.housekeeper.stop()
        loops, self._loops = self._loops, []
        for task in loops:
            if task.get_name() != "attune-heartbeat":
                task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for task in list(self._direct):
            task.cancel()
        await asyncio.gather(*self._direct, return_exceptions=True)
        if self.alive_file is not None:
            self.alive_file.remove()

    # -- taking work ------------------------------------------------------------------------

    async def _on_requested(self, envelope: Envelope) -> None:
        execution_id = envelope.payload.get("execution_id")
        if not isinstance(execution_id, int):
            log.warning("ignoring %s without an execution id", envelope.message_type)
            return
        await self.take(execution_id)

    async def _on_cancel(self, envelope: Envelope) -> None:
        event = self._running.get(envelope.payload.get("execution_id", -1))
        if event is not None:
            event.set()

    async def execute(self, execution_id: int) -> None:
        """Run one execution if this worker wins the claim, and wait for its end."""
        task = await self.take(execution_id)
        if task is not None:
            await asyncio.shield(task)

    async def take(self, execution_id: int) -> asyncio.Task[None] | None:
        """Wait for a free slot, claim, and start the run as a task of this worker; None
        when another delivery or worker has it, or the worker is stopping."""
        if execution_id in self._running or not self._accepting:
            return None
        await self.acks_first.step_aside()
        await self._slots.acquire()
        if execution_id in self._running or not self._accepting:
            self._slots.release()
            return None
        # Registered before the claim: a cancel can only be published after the row is running.
        cancel = self._register(execution_id)
        try:
            claimed = await self.service.claim(execution_id, self.worker_id)
        except BaseException as exc:
            self._release(execution_id)
            if isinstance(exc, EngineError):
                log.error("execution %s: %s", execution_id, exc.message)
                return None
            raise
        if claimed is None:
            self._release(execution_id)
            return None
        return self._own(self._run_then_release(claimed, cancel))

    def _own(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._direct.add(task)
        task.add_done_callback(self._direct.discard)
        return task

    async def _run_then_release(self, claimed: Claimed, cancel: asyncio.Event) -> None:
        try:
            await self._run_claimed(claimed, cancel)
        finally:
            self._release(claimed.id)

    def _release(self, execution_id: int) -> None:
        self._unregister(execution_id)
        self._slots.release()

    def _register(self, execution_id: int) -> asyncio.Event:
        cancel = asyncio.Event()
        self._running[execution_id] = cancel
        self._idle.clear()
        return cancel

    def _unregister(self, execution_id: int) -> None:
        self._running.pop(execution_id, None)
        if not self._running:
            self._idle.set()

    async def _run_claimed(self, claimed: Claimed, cancel: asyncio.Event) -> None:
        if self.workflows is not None and await asyncio.shield(self._begin_workflow(claimed)):
            return  # a workflow: its tasks run as child executions, without this worker
        writer = self._output_writer(claimed.id)
        try:
            result = await self._run(claimed, cancel, writer)
            if writer is not None:
                # The last live output, before the end (none for a run that wrote none).
                await asyncio.shield(writer.close(result_follows=True))
            asked = self._inquiry_asked(result)  # pure: no task for a run that asks nothing
            if asked is not None and await asyncio.shield(self._park(claimed.id, result, asked)):
                stored = True  # it waits for an answer, without this worker
            else:
                stored = await asyncio.shield(self._finish(claimed.id, result, run=claimed))
        except asyncio.CancelledError:
            if writer is not None:
                await asyncio.shield(writer.close())
            stopped = RunResult(outcome="failed", error="the worker stopped during the run")
            # Without output in the result: the output so far stays readable in its chunks.
            await asyncio.shield(
                self._finish(
                    claimed.id, stopped, ExecutionStatus.ABANDONED, with_output=False, run=claimed
                )
            )
            self._output_ended(claimed.id)
            raise
        if stored and writer is not None and writer.touched:
            await asyncio.shield(self._drop_output(claimed.id))
        self._output_ended(claimed.id)

    async def _begin_workflow(self, claimed: Claimed) -> bool:
        """True when the execution is a workflow's (started and parked, or ended failed)."""
        assert self.workflows is not None
        try:
            return await self.workflows.begin(claimed, self.worker_id)
        except Exception as exc:
            if not isinstance(exc, EngineError):
                log.exception("workflow execution %s could not start", claimed.id)
            why = getattr(exc, "message", None) or type(exc).__name__
            failed = RunResult(outcome="failed", error=f"the workflow could not start: {why}")
            await self._finish(claimed.id, failed)
            return True

    @staticmethod
    def _inquiry_asked(result: RunResult) -> InquiryRequest | None:
        """The question of a run whose result data is ``{"__inquiry": {...}}`` (``core.ask``
        among them), or None. A request that cannot be used fails the run, naming the field."""
        if result.outcome != "completed":
            return None
        try:
            return inquiry_request(result.data)
        except BadInquiry as exc:
            result.outcome, result.error = "failed", str(exc)
            return None

    async def _park(self, execution_id: int, result: RunResult, request: InquiryRequest) -> bool:
        """The run waits for a human answer without holding this worker
        (engine/inquiries.py): True when it does."""
        parked = await self.inquiries.park(
            execution_id, self.worker_id, result.as_record(), request
        )
        if parked is None:
            result.outcome, result.error = "failed", "no longer running: the question not asked"
        return parked is not None

    def _output_writer(self, execution_id: int) -> OutputWriter | None:
        if self.live_output is None:
            return None
        return OutputWriter(
            execution_id,
            self.live_output.repository,
            self.live_output.hub,
            interval_s=self.output_flush_interval_s,
        )

    async def _drop_output(self, execution_id: int) -> None:
        """Remove the run's chunks once its result (which holds the whole output) is stored."""
        if self.live_output is None:
            return
        try:
            await self.live_output.repository.drop(execution_id)
        except Exception as exc:
            log.warning(
                "execution %s: live output not removed: %s",
                execution_id,
                getattr(exc, "message", None) or exc,
            )

    def _output_ended(self, execution_id: int) -> None:
        if self.live_output is not None:
            self.live_output.hub.notify(execution_id)

    async def _run(
        self, claimed: Claimed, cancel: asyncio.Event, writer: OutputWriter | None = None
    ) -> RunResult:
        try:
            action = await self.catalog.get_action(claimed.action_ref)
        except NotFound:
            return RunResult(
                outcome="failed", error=f"action '{claimed.action_ref}' no longer exists"
            )
        runner = self.runners.get(action.runner_type)
        if runner is None:
            return RunResult(outcome="failed", error=f"no runner for '{action.runner_type}'")
        request = RunRequest(
            execution_id=claimed.id,
            action=action,
            parameters=dict(claimed.parameters),
            timeout_s=claimed.timeout_s,
            cancel=cancel,
            on_spawn=lambda pid: self._spawn_noted(claimed.id, pid),
            requester=claimed.requester,
            enforcement=claimed.enforcement,
            on_output=writer.feed if writer is not None else None,
        )
        try:
            return await runner.run(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("runner %s crashed on execution %s", action.runner_type, claimed.id)
            return RunResult(outcome="failed", error=f"internal error: {type(exc).__name__}")

    def _spawn_noted(self, execution_id: int, pid: int) -> None:
        """Remember the process group on the row, for whoever cleans up after a crash."""
        self._own(self.service.record_process(execution_id, pid, procs.start_ticks(pid)))

    async def _finish(
        self,
        execution_id: int,
        result: RunResult,
        status: ExecutionStatus | None = None,
        *,
        with_output: bool = True,
        run: Claimed | None = None,
    ) -> bool:
        """Record the end of the run; True if its whole result (output included) was stored.
        A transient ending of ``run`` (abandoned, timeout) marks its retry when its action
        has retries left (engine/retries.py), in the same statement."""
        target = status or ExecutionStatus(result.outcome)
        retry_due_at = None
        # A workflow's task run is retried by the workflow's own ``retry`` (a run of its
        # action's retry chain would be a second run of the task, which no one waits for).
        if run is not None and target in TRANSIENT and not run.in_workflow:
            try:
                retry_due_at = await self.service.retry_policy.due_for(
                    self.catalog, run.action_ref, run.retry_count, target
                )
            except EngineError as exc:  # the end is recorded all the same, without a retry
                log.error("execution %s: retry not planned: %s", execution_id, exc.message)
        record = result.as_record()
        if not with_output:
            record = {k: v for k, v in record.items() if k not in ("stdout", "stderr")}
        for attempt in range(FINISH_ATTEMPTS):
            try:
                ended = await self.service.finish(
                    execution_id, target, record, retry_due_at=retry_due_at
                )
                if ended is None:
                    log.warning(
                        "execution %s had already ended; result of this run dropped", execution_id
                    )
                    return False
                return attempt == 0 and with_output
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
                await asyncio.sleep(backoff.delay_s(attempt, base_s=0.1, cap_s=5.0))
        return False

    # -- keeping promises under faults ------------------------------------------------------

    def _beat_alive_file(self) -> None:
        if self.alive_file is None:
            return
        try:
            self.alive_file.beat(len(self._running))
        except OSError as exc:
            log.warning("cannot write %s: %s", self.alive_file.path, exc.strerror or exc)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            # After the previous round's database heartbeat: one that hangs stops the beats.
            self._beat_alive_file()
            if not self._running:
                continue
            try:
                for execution_id in await self.service.heartbeat(self.worker_id):
                    event = self._running.get(execution_id)
                    if event is not None and not event.is_set():
                        log.info("execution %s: cancel found in the database", execution_id)
                        event.set()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)

    async def _db_poll_loop(self) -> None:
        """While the broker is down, claim waiting executions from the database."""
        while True:
            await asyncio.sleep(self.db_poll_interval_s)
            try:
                if not self._accepting or await self.broker.ping():
                    continue
                free = 0
                while not self._slots.locked():
                    await self._slots.acquire()
                    free += 1
                claimed = []
                try:
                    claimed = await self.service.claim_pending(self.worker_id, free)
                finally:
                    for _ in range(free - len(claimed)):  # the slots nothing was claimed for
                        self._slots.release()
                for item in claimed:
                    self._own(self._run_then_release(item, self._register(item.id)))
            except Exception as exc:
                log.warning("database poll failed: %s", exc)
