"""Running workflows, durably: the workflow's execution is parked while its tasks run as child
executions, and each child's end is folded into the run's stored progress.

- :meth:`WorkflowRuns.begin` (the worker, for an action whose runner is ``workflow``): plan the
  start (:func:`engine.workflows.plan.start`), record the run and its first task runs and park
  the execution (no worker, heartbeat or process, as a run waiting on an inquiry), in one
  transaction; then submit the task runs.
- :meth:`WorkflowRuns.task_ended` (on ``workflow.task_ended``, and from the sweep): fold the
  child's status and result into the progress (:func:`engine.workflows.plan.task_ended`) with a
  conditional update on the run's revision (a conflict re-reads and tries again), count the
  task run, record the task runs it starts, submit them; when the plan is over, finish the
  workflow's execution through :meth:`ExecutionService.finish` (chat, callback, audit and a
  parent workflow all hear of it), its result's ``data`` the workflow's ``output``.
- :meth:`WorkflowRuns.sweep`: repairs what a crash or a lost message left.

No task runs twice: a task run is recorded (unique key: task, item, run, attempt) before it is
submitted, and submitted with the idempotency key ``workflow:<run>:<key>``, so a second submit
finds the first. The launch (action, input, timeout) waits in the progress (``launches``) until
its end is counted, so whoever submits it after a crash submits the same thing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import replace
from datetime import timedelta
from typing import Any

from engine import backoff
from engine.automation.key_templates import (
    MAX_TEMPLATE_KEYS,
    MAX_TEMPLATE_ROUNDS,
    template_values,
)
from engine.background import Background
from engine.catalog import Catalog
from engine.clock import now_utc
from engine.errors import Conflict, EngineError, NotFound
from engine.records import Claimed, Execution, Route
from engine.service import LIVE, ExecutionService
from engine.status import PENDING, TERMINAL, ExecutionStatus
from engine.storage import Store
from engine.storage.automation import automation_repository
from engine.storage.workflow_runs import workflow_run_repository
from engine.storage.workflows import workflow_repository
from engine.templates import mentions_kv
from engine.workflows import plan
from engine.workflows.definition import WorkflowDefinition, WorkflowProblem, parse_definition
from engine.workflows.run_records import NewTaskRun, TaskRun, WorkflowRun
from engine.workflows.run_state import (
    StateCodec,
    WorkflowKv,
    child_executor,
    holding,
    new_task_runs,
)

log = logging.getLogger(f"attune.{__name__}")

#: ``runner_type`` of a workflow's action once it can run.
WORKFLOW_RUNNER = "workflow"
#: Tries of an advance that keeps losing the revision race (to another process: within one,
#: the folds of a run take turns), with a jittered back-off between them (engine/backoff.py:
#: from 5 ms, at most 200 ms), so racing processes stop meeting.
ADVANCE_TRIES = 20
CONFLICT_PAUSE_S = 0.005
CONFLICT_PAUSE_MAX_S = 0.2
#: A task run recorded this recently is left to whoever recorded it (the sweep then submits it).
SUBMIT_GRACE_S = 2.0
SWEEP_BATCH = 100
_TERMINAL = tuple(s.value for s in TERMINAL)


class WorkflowRuns:
    def __init__(self, store: Store, service: ExecutionService, catalog: Catalog) -> None:
        self.repo = workflow_run_repository(store)
        self.definitions = workflow_repository(store)
        self.service = service
        self.catalog = catalog
        self.keys = automation_repository(store)
        #: How a run's state is stored (secret parameters sealed).
        self.state = StateCodec(service.secrets)
        self._background = Background()
        self._timers: set[asyncio.TimerHandle] = set()
        #: Per run, the lock its folds take turns on in this process, and how many hold or
        #: wait for it (the entry goes with the last).
        self._turns: dict[int, tuple[asyncio.Lock, int]] = {}

    # -- starting (the worker) --------------------------------------------------------------

    async def begin(self, claimed: Claimed, worker_id: str) -> bool:
        """Start the workflow of a claimed execution and park it; False when its action is
        not a workflow (the worker runs it as usual)."""
        try:
            action = await self.catalog.get_action(claimed.action_ref)
        except NotFound:
            return False
        if action.runner_type != WORKFLOW_RUNNER:
            return False
        try:
            stored = await self.definitions.get(claimed.action_ref)
            if stored is None:
                raise WorkflowProblem(f"workflow '{claimed.action_ref}' has no definition")
            definition = parse_definition(stored.fields.definition, ref=stored.ref)
            system = self._system(claimed.id, None, definition)
            start = functools.partial(plan.start, definition, claimed.parameters, system=system)
            step = await self._with_kv(definition, start)
        except EngineError as exc:
            await self._fail_now(claimed.id, exc.message)
            return True
        secrets = self.state.secrets_of(claimed.parameters, action.secrets)
        rows, launches = self._new_rows(definition, step.progress, step.launches, {}, secrets)
        state = step.progress.status
        run = await self.repo.begin(
            claimed.id,
            worker_id,
            definition.ref,
            definition.as_dict(),
            self.state.stored(step.progress, launches, secrets),
            state,
            step.progress.error,
            rows,
            now_utc(),
        )
        if run is None:
            log.warning("workflow execution %s is no longer this worker's", claimed.id)
            return True
        log.info(
            "workflow %s started as run %s (execution %s)", run.workflow_ref, run.id, run.execution
        )
        await self._settle(run)
        return True

    async def _fail_now(self, execution_id: int, error: str) -> None:
        result = {"succeeded": False, "data": None, "error": error}
        await self.service.finish(execution_id, ExecutionStatus.FAILED, result)

    @staticmethod
    def _system(
        execution_id: int, run_id: int | None, definition: WorkflowDefinition
    ) -> dict[str, Any]:
        return {"execution_id": execution_id, "workflow_ref": definition.ref}

    async def _with_kv(
        self, definition: WorkflowDefinition, make: Callable[..., plan.Step]
    ) -> plan.Step:
        """A step of the plan with ``kv`` in its templates' scope when they read keys: the
        plan is pure, so it is made again once the keys it asked for are loaded."""
        if not mentions_kv(definition.as_dict()):
            return make(kv=None)
        values: dict[str, tuple[Any, bool] | None] = {}
        for _ in range(MAX_TEMPLATE_ROUNDS + 1):
            view = WorkflowKv(values)
            step = make(kv=view)
            if not view.missing or len(values) + len(view.missing) > MAX_TEMPLATE_KEYS:
                break
            values.update(await template_values(self.keys, self.service.secrets, view.missing))
        return step

    def _new_rows(
        self,
        definition: WorkflowDefinition,
        progress: plan.Progress,
        launches: tuple[plan.Launch, ...],
        pending: dict[str, Any],
        secrets: dict[str, Any],
    ) -> tuple[list[NewTaskRun], dict[str, Any]]:
        return new_task_runs(self.state, definition, progress, launches, pending, secrets)

    # -- submitting task runs ---------------------------------------------------------------

    async def _submit(
        self, run: WorkflowRun, task: TaskRun, parent: tuple[Execution, Route]
    ) -> None:
        launch = run.progress.get("launches", {}).get(task.dispatch_key)
        if launch is None:  # its end was counted meanwhile
            return
        key = f"workflow:{run.id}:{task.dispatch_key}"
        record, route = parent
        task_input = launch.get("input")
        task_input = self.state.launch_input(launch)
        try:
            new = await self.service.prepare(
                launch["action"],
                task_input,
                child_executor(record.requester),
                parent=run.execution,
                chat=route.chat,
                idempotency_key=key,
                secret_params=holding(task_input, self.state.secrets(run.progress)),
            )
        except EngineError as exc:  # a bad input, an action gone or disabled: the task fails
            log.info("workflow run %s task %s not started: %s", run.id, task.task_name, exc.message)
            await self.task_ended(task, ExecutionStatus.FAILED.value, {"error": exc.message})
            return
        timeout_s = launch.get("timeout_s")
        new = replace(
            new,
            timeout_s=float(timeout_s) if timeout_s else new.timeout_s,
            workflow_task={
                "workflow_execution": run.id,
                "task_name": task.task_name,
                "task_index": task.task_index,
                "retry_count": int(launch.get("attempt") or 0),
                "max_retries": int(launch.get("max_retries") or 0),
                "timeout_seconds": launch.get("timeout_s"),
            },
        )
        try:
            made = (await self.service.submit_many([(new, None)]))[0]
        except Conflict:
            found = await self.service.find_idempotent(key)
            if found is None:
                raise
            made = found
        await self.repo.submitted(task.id, made.id)

    async def _submit_due(self, run: WorkflowRun) -> None:
        now = now_utc()
        waiting = await self.repo.unsubmitted(run.id)
        due = [t for t in waiting if t.due_at <= now]
        later = [t.due_at for t in waiting if t.due_at > now]
        if later:  # a retry's delay: submitted when due (by the sweep if this process ends)
            self._wake_at(run.id, (min(later) - now).total_seconds())
        if not due:
            return
        parent = await self.service.get_with_route(run.execution)
        for task in due:
            await self._submit(run, task, parent)

    def _wake_at(self, run_id: int, delay_s: float) -> None:
        loop = asyncio.get_running_loop()
        handle = loop.call_later(max(0.0, delay_s), lambda: self._own(self._settle_id(run_id)))
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > loop.time()}
        self._timers.add(handle)

    async def close(self) -> None:
        """Stop the timers of retries' delays and the work they started (the sweep of any
        process submits them when due)."""
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        for task in list(self._background.tasks):
            task.cancel()
        await asyncio.gather(*self._background.tasks, return_exceptions=True)

    def _own(self, coro: Coroutine[Any, Any, object]) -> None:
        self._background.run(coro)

    async def _settle_id(self, run_id: int) -> None:
        try:
            run = await self.repo.get(run_id)
            if run is not None and run.status == "running":
                await self._submit_due(run)
        except Exception as exc:
            log.warning("workflow run %s: %s", run_id, getattr(exc, "message", None) or exc)

    # -- ends -------------------------------------------------------------------------------

    async def execution_ended(self, execution_id: int) -> None:
        """Fold the end of a workflow's task run (the ``workflow.task_ended`` message)."""
        task = await self.repo.task_of_execution(execution_id)
        if task is None or task.counted:
            return  # not (yet) recorded as submitted: the sweep finds it
        child = await self.service.get(execution_id)
        if ExecutionStatus(child.status).is_terminal:
            await self.task_ended(task, child.status, child.result)

    async def task_ended(self, task: TaskRun, status: str, result: Any) -> None:
        """Fold one task run's end into its run (once, whoever else tries it too). In this
        process the folds of a run take turns (ten items ending at once would otherwise race
        each other for every revision); another process's fold is met by the revision."""
        run_id = task.workflow_execution
        lock, users = self._turns.get(run_id, (asyncio.Lock(), 0))
        self._turns[run_id] = (lock, users + 1)
        try:
            async with lock:
                await self._fold(task, status, result)
        finally:
            lock, users = self._turns[run_id]
            if users <= 1:
                del self._turns[run_id]
            else:
                self._turns[run_id] = (lock, users - 1)

    async def _fold(self, task: TaskRun, status: str, result: Any) -> None:
        for attempt in range(ADVANCE_TRIES):
            if attempt:
                await asyncio.sleep(
                    backoff.delay_s(
                        attempt - 1, base_s=CONFLICT_PAUSE_S, cap_s=CONFLICT_PAUSE_MAX_S, jitter=1.0
                    )
                )
            run = await self.repo.get(task.workflow_execution)
            if run is None:
                return
            pending = dict(run.progress.get("launches", {}))
            pending.pop(task.dispatch_key, None)
            if run.status not in ("running", "canceling"):
                data = run.progress | {"launches": pending}
                outcome = await self.repo.advance(
                    run.id, run.revision, data, run.status, run.error, [task.id], [], now_utc()
                )
                if outcome == "conflict":
                    continue
                return
            definition = parse_definition(run.definition, ref=run.workflow_ref)
            ended = functools.partial(
                plan.task_ended,
                definition,
                self.state.progress(run.progress),
                task.task_name,
                status,
                result,
                index=task.task_index,
                system=self._system(run.execution, run.id, definition),
            )
            step = await self._with_kv(definition, ended)
            state: str = step.progress.status
            if run.status == "running":
                secrets = self.state.secrets(run.progress)
                rows, pending = self._new_rows(
                    definition, step.progress, step.launches, pending, secrets
                )
            else:  # canceling: nothing new starts
                rows, state = [], "canceling"
            outcome = await self.repo.advance(
                run.id,
                run.revision,
                self.state.stored(step.progress, pending, self.state.secrets(run.progress)),
                state,
                step.progress.error,
                [task.id],
                rows,
                now_utc(),
            )
            if outcome == "conflict":
                continue
            if outcome == "advanced":
                fresh = await self.repo.get(run.id)
                if fresh is not None:
                    await self._settle(fresh)
            return
        log.error(
            "workflow run %s: task %s not folded in (too many conflicts)",
            task.workflow_execution,
            task.dispatch_key,
        )

    async def _settle(self, run: WorkflowRun) -> None:
        """What follows a run's new state: submit its due task runs, or end it."""
        if run.status == "running":
            await self._submit_due(run)
        elif run.status == "canceling":
            await self._cancel_settle(run)
        else:
            await self._finish(run)

    async def _finish(self, run: WorkflowRun) -> None:
        status = {
            "completed": ExecutionStatus.COMPLETED,
            "cancelled": ExecutionStatus.CANCELLED,
        }.get(run.status, ExecutionStatus.FAILED)
        output = run.progress.get("output")
        duration_ms = int((now_utc() - run.created).total_seconds() * 1000)
        result = {
            "succeeded": status is ExecutionStatus.COMPLETED,
            "exit_code": None,
            "duration_ms": duration_ms,
            "stdout": "",
            "stderr": "",
            "data": output,
            "error": run.error,
        }
        if await self.service.finish(run.execution, status, result) is not None:
            log.info("workflow run %s (execution %s) ended %s", run.id, run.execution, run.status)

    # -- cancel -----------------------------------------------------------------------------

    async def cancel(self, run: WorkflowRun) -> None:
        """The workflow's execution was asked to cancel: start nothing new; by the definition's
        ``cancellation_policy``, let running tasks end (``allow_finish``, Attune's default: only
        those not started yet are cancelled) or cancel them too (``cancel_running``)."""
        for _ in range(ADVANCE_TRIES):
            if run.status != "running":
                break
            outcome = await self.repo.advance(
                run.id, run.revision, run.progress, "canceling", run.error, [], [], now_utc()
            )
            if outcome == "advanced":
                break
            fresh = await self.repo.get(run.id)
            if fresh is None:
                return
            run = fresh
        fresh = await self.repo.get(run.id)
        if fresh is None or fresh.status != "canceling":
            return
        definition = parse_definition(fresh.definition, ref=fresh.workflow_ref)
        by = f"workflow execution {fresh.execution}"
        for task in await self.repo.tasks(fresh.id):
            if task.counted or task.execution_id is None:
                continue
            child = await self.service.get(task.execution_id)
            status = ExecutionStatus(child.status)
            if status.is_terminal:
                continue
            if status in PENDING or definition.cancellation_policy == "cancel_running":
                with contextlib.suppress(Conflict):
                    await self.service.cancel(task.execution_id, by)
        await self._cancel_settle(fresh)

    async def _cancel_settle(self, run: WorkflowRun) -> None:
        """Drop the task runs not submitted; once none runs, end the run ``cancelled``."""
        for _ in range(ADVANCE_TRIES):
            tasks = [t for t in await self.repo.tasks(run.id) if not t.counted]
            unsent = [t.id for t in tasks if t.execution_id is None]
            if len(unsent) < len(tasks):
                if unsent:
                    outcome = await self.repo.advance(
                        run.id,
                        run.revision,
                        run.progress,
                        run.status,
                        run.error,
                        unsent,
                        [],
                        now_utc(),
                    )
                    if outcome == "conflict":
                        fresh = await self.repo.get(run.id)
                        if fresh is None or fresh.status != "canceling":
                            return
                        run = fresh
                        continue
                return  # task runs still run: their ends settle it
            error = "cancelled" + (f"; {run.error}" if run.error else "")
            outcome = await self.repo.advance(
                run.id, run.revision, run.progress, "cancelled", error, unsent, [], now_utc()
            )
            if outcome == "advanced":
                fresh = await self.repo.get(run.id)
                if fresh is not None:
                    await self._finish(fresh)
                return
            fresh = await self.repo.get(run.id)
            if fresh is None or fresh.status != "canceling":
                return
            run = fresh

    # -- repairs ----------------------------------------------------------------------------

    async def sweep(self) -> None:
        """Repair what a crash or a lost message left; safe in any number of processes."""
        for asked in await self.repo.cancel_asked(SWEEP_BATCH):
            await self.cancel(asked)
        for task in await self.repo.ended_uncounted(_TERMINAL, SWEEP_BATCH):
            assert task.execution_id is not None
            child = await self.service.get(task.execution_id)
            await self.task_ended(task, child.status, child.result)
        now = now_utc()
        before = now - timedelta(seconds=SUBMIT_GRACE_S)
        seen: set[int] = set()
        for task in await self.repo.due_unsubmitted(now, before, SWEEP_BATCH):
            if task.workflow_execution in seen:
                continue
            seen.add(task.workflow_execution)
            found = await self.repo.get(task.workflow_execution)
            if found is not None:
                await self._settle(found)
        for run in await self.repo.unfinished(LIVE, SWEEP_BATCH):
            await self._finish(run)
