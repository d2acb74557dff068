"""The planning core of a workflow run (pure): what starts first, and after each task ends, which
transitions fire, what is published, what starts next, and when the run is over.

The state of a run is a :class:`Progress` (JSON via :meth:`Progress.as_dict`, so it can be
stored with the run and a restart resumes it). :func:`start` and :func:`task_ended` take a
progress and return a :class:`Step`: the new progress and the :class:`Launch` list (task runs
to start). Nothing here does I/O; a task's end that was already counted (a message delivered
twice) changes nothing, so no task runs twice.

Semantics (Attune's, with the gaps it leaves filled): the start tasks are those no transition
leads to. When a task ends, its ``next`` transitions are tried in order and every one whose
``when`` holds fires (``publish`` first, then its ``do``); a ``decision`` default fires when
no other transition did. A failure that fires no transition is unhandled: the other branches
go on, and when nothing runs any more the run fails with it as the reason. A task with ``join``
starts once that many inbound tasks have fired into it (``all``: every inbound task); a join
still waiting when nothing runs is a dead end, and the run fails saying so. ``with_items``
runs the action once per item, ``concurrency`` at a time; the task succeeds when every item did
and its result is the list of item results. A ``parallel`` task starts all its sub-tasks and
ends when they have. ``retry`` runs a failed task again after its delay while attempts remain
(and ``on_error`` holds). Nothing is started after the run has ended.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from engine.templates import TemplateProblem
from engine.workflows.definition import Task, WorkflowDefinition
from engine.workflows.expressions import Outcome, context, evaluate, holds
from engine.workflows.validation import inbound_tasks, start_tasks

RunStatus = Literal["running", "completed", "failed"]
#: A task that is started and has not ended yet (retries pending included).
RUNNING = "running"
#: A task whose ``when`` did not hold when it would have started.
SKIPPED = "skipped"
PENDING = "pending"


@dataclass
class ItemState:
    """One item of a ``with_items`` task."""

    status: str = PENDING
    result: Any = None
    attempt: int = 0


@dataclass
class TaskState:
    status: str = RUNNING
    result: Any = None
    #: Retries made so far in this run of the task.
    attempt: int = 0
    #: How many times the task has started (a loop starts it again).
    runs: int = 0
    items: list[ItemState] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskState:
        items = data.get("items")
        return cls(
            status=data["status"],
            result=data.get("result"),
            attempt=int(data.get("attempt", 0)),
            runs=int(data.get("runs", 0)),
            items=None if items is None else [ItemState(**i) for i in items],
        )


@dataclass
class Progress:
    """Where a workflow run stands."""

    parameters: dict[str, Any]
    vars: dict[str, Any]
    tasks: dict[str, TaskState] = field(default_factory=dict)
    #: ``join`` tasks waiting: the inbound tasks that have fired into them so far.
    waiting: dict[str, list[str]] = field(default_factory=dict)
    #: Unhandled failures, each a sentence naming the task.
    failures: list[str] = field(default_factory=list)
    status: RunStatus = "running"
    output: Any = None
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Progress:
        return cls(
            parameters=dict(data["parameters"]),
            vars=dict(data["vars"]),
            tasks={k: TaskState.from_dict(v) for k, v in data.get("tasks", {}).items()},
            waiting={k: list(v) for k, v in data.get("waiting", {}).items()},
            failures=list(data.get("failures", [])),
            status=data.get("status", "running"),
            output=data.get("output"),
            error=data.get("error"),
        )

    def running(self) -> list[str]:
        return [name for name, state in self.tasks.items() if state.status == RUNNING]


@dataclass(frozen=True, slots=True)
class Launch:
    """A task run to start: the action with its rendered input (one item of a
    ``with_items`` task when ``index`` is set), after ``delay_s`` (a retry's)."""

    task: str
    action: str
    input: dict[str, Any]
    index: int | None = None
    timeout_s: float | None = None
    attempt: int = 0
    delay_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Step:
    progress: Progress
    launches: tuple[Launch, ...] = ()
    #: ``(task, transition index)`` of the transitions that fired, in order.
    fired: tuple[tuple[str, int], ...] = ()

    @property
    def finished(self) -> bool:
        return self.progress.status != "running"


def start(
    definition: WorkflowDefinition,
    parameters: Mapping[str, Any],
    *,
    system: Mapping[str, Any] | None = None,
    kv: Any = None,
) -> Step:
    """The first step of a run: its variables set from ``vars`` and its start tasks started."""
    progress = Progress(parameters=dict(parameters), vars=copy.deepcopy(definition.vars))
    planner = _Planner(definition, progress, system, kv)
    for name in start_tasks(definition):
        planner.start_task(name, None)
    return planner.step()


def task_ended(
    definition: WorkflowDefinition,
    progress: Progress,
    task: str,
    status: str,
    result: Any = None,
    *,
    index: int | None = None,
    system: Mapping[str, Any] | None = None,
    kv: Any = None,
) -> Step:
    """The step after a task run (one item when ``index`` is set) ended with an execution
    ``status`` and ``result``. ``progress`` is not changed: the step holds a new one."""
    planner = _Planner(definition, copy.deepcopy(progress), system, kv)
    planner.ended(task, index, Outcome(status, result))
    return planner.step()


class _Planner:
    def __init__(
        self,
        definition: WorkflowDefinition,
        progress: Progress,
        system: Mapping[str, Any] | None,
        kv: Any,
    ) -> None:
        self.definition = definition
        self.progress = progress
        self.system = system
        self.kv = kv
        self.launches: list[Launch] = []
        self.fired: list[tuple[str, int]] = []
        self.events: deque[tuple[str, int | None, Outcome]] = deque()
        self.parent_of = {sub.name: t.name for t in definition.tasks for sub in t.tasks}
        self.inbound = inbound_tasks(definition.tasks)

    # -- context ------------------------------------------------------------------------------

    def ctx(self, outcome: Outcome | None, **item: Any) -> dict[str, Any]:
        tasks = {
            name: {"status": state.status, "result": state.result}
            for name, state in self.progress.tasks.items()
        }
        return context(
            parameters=self.progress.parameters,
            variables=self.progress.vars,
            tasks=tasks,
            system=self.system,
            kv=self.kv,
            outcome=outcome,
            **item,
        )

    def step(self) -> Step:
        while self.events:
            self._handle(*self.events.popleft())
        self._maybe_finish()
        return Step(self.progress, tuple(self.launches), tuple(self.fired))

    def _task(self, name: str) -> Task:
        task = self.definition.task(name)
        if task is None:
            raise TemplateProblem(f"no task named '{name}' in workflow {self.definition.ref}")
        return task

    # -- starting -------------------------------------------------------------------------------

    def start_task(self, name: str, trigger: Outcome | None) -> None:
        if self.progress.status != "running":
            return
        task = self._task(name)
        previous = self.progress.tasks.get(name)
        if previous is not None and previous.status == RUNNING:
            return  # already running: reached again from another branch
        runs = previous.runs + 1 if previous is not None else 1
        ctx = self.ctx(trigger)
        if task.when is not None:
            try:
                go = holds(task.when, ctx)
            except TemplateProblem as exc:
                self.progress.failures.append(f"task '{name}' when: {exc.message}")
                return
            if not go:
                self.progress.tasks[name] = TaskState(status=SKIPPED, runs=runs - 1)
                return
        state = TaskState(runs=runs)
        self.progress.tasks[name] = state
        if task.type == "parallel":
            for sub in task.tasks:
                self.start_task(sub.name, trigger)
            self._sub_done(name)  # every sub-task skipped: the parallel task is done
        elif task.with_items is not None:
            self._start_items(task, state, ctx, trigger)
        else:
            self._launch(task, ctx, trigger)

    def _start_items(self, task: Task, state: TaskState, ctx: dict[str, Any], trigger: Any) -> None:
        try:
            items = evaluate(task.with_items, ctx)
        except TemplateProblem as exc:
            self.events.append((task.name, None, Outcome("failed", {"error": exc.message})))
            return
        if not isinstance(items, list):
            kind = type(items).__name__
            error = f"task '{task.name}' with_items: gave a {kind}, not a list"
            self.events.append((task.name, None, Outcome("failed", {"error": error})))
            return
        state.items = [ItemState(result=item) for item in items]  # the item until it ends
        if not items:
            self.events.append((task.name, None, Outcome("completed", [])))
            return
        self._fill_items(task, state, trigger)

    def _fill_items(self, task: Task, state: TaskState, trigger: Outcome | None) -> None:
        """Start pending items while fewer than ``concurrency`` run."""
        assert state.items is not None
        limit = task.concurrency or task.batch_size or len(state.items)
        active = sum(1 for i in state.items if i.status == RUNNING)
        for index, item in enumerate(state.items):
            if active >= limit:
                break
            if item.status == PENDING:
                item.status = RUNNING
                active += 1
                ctx = self.ctx(trigger, item=item.result, index=index)
                self._launch(task, ctx, trigger, index=index)

    def _launch(
        self,
        task: Task,
        ctx: dict[str, Any],
        trigger: Outcome | None,
        *,
        index: int | None = None,
        attempt: int = 0,
        delay_s: float = 0.0,
    ) -> None:
        try:
            rendered = evaluate(task.input, ctx)
        except TemplateProblem as exc:
            self.events.append((task.name, index, Outcome("failed", {"error": exc.message})))
            return
        assert task.action is not None  # validated
        self.launches.append(
            Launch(task.name, task.action, rendered, index, task.timeout_s, attempt, delay_s)
        )

    # -- ending ---------------------------------------------------------------------------------

    def ended(self, name: str, index: int | None, outcome: Outcome) -> None:
        self.events.append((name, index, outcome))

    def _handle(self, name: str, index: int | None, outcome: Outcome) -> None:
        state = self.progress.tasks.get(name)
        task = self.definition.task(name)
        if state is None or task is None or state.status != RUNNING:
            return  # not running (an end counted already, or a task of no run)
        if index is not None:
            self._item_done(task, state, index, outcome)
            return
        if self._retry(task, state.attempt, outcome, None):
            state.attempt += 1
            return
        self._task_done(task, state, outcome)

    def _retry(self, task: Task, attempt: int, outcome: Outcome, index: int | None) -> bool:
        """Launch the task (item) again when its retry allows; True when it did."""
        retry = task.retry
        if outcome.succeeded or retry is None or attempt >= retry.count:
            return False
        ctx = self.ctx(outcome)
        if retry.on_error is not None:
            try:
                if not holds(retry.on_error, ctx):
                    return False
            except TemplateProblem:
                return False
        if index is not None:
            state = self.progress.tasks[task.name]
            assert state.items is not None
            ctx = self.ctx(outcome, item=state.items[index].result, index=index)
        delay = retry.delay_before(attempt + 1)
        self._launch(task, ctx, outcome, index=index, attempt=attempt + 1, delay_s=delay)
        return True

    def _item_done(self, task: Task, state: TaskState, index: int, outcome: Outcome) -> None:
        items = state.items
        if items is None or not 0 <= index < len(items) or items[index].status != RUNNING:
            return
        item = items[index]
        if self._retry(task, item.attempt, outcome, index):
            item.attempt += 1
            return
        item.status, item.result = outcome.status, outcome.result
        self._fill_items(task, state, outcome)
        if all(i.status not in (PENDING, RUNNING) for i in items):
            bad = [i.status for i in items if i.status != "completed"]
            status = "failed" if set(bad) - {"timeout"} else ("timeout" if bad else "completed")
            self._task_done(task, state, Outcome(status, [i.result for i in items]))

    def _sub_done(self, parent_name: str) -> None:
        """End a parallel task once none of its sub-tasks runs (failed if one did not
        complete; its result maps each sub-task to its result)."""
        parent = self._task(parent_name)
        state = self.progress.tasks.get(parent_name)
        if state is None or state.status != RUNNING:
            return
        states = {sub.name: self.progress.tasks.get(sub.name) for sub in parent.tasks}
        if any(s is None or s.status == RUNNING for s in states.values()):
            return
        ok = all(s is not None and s.status in ("completed", SKIPPED) for s in states.values())
        result = {name: s.result if s is not None else None for name, s in states.items()}
        self._task_done(parent, state, Outcome("completed" if ok else "failed", result))

    def _task_done(self, task: Task, state: TaskState, outcome: Outcome) -> None:
        state.status, state.result = outcome.status, outcome.result
        parent = self.parent_of.get(task.name)
        if parent is not None:  # a sub-task: its parallel task's transitions apply
            self._sub_done(parent)
            return
        fired_any = False
        for i, transition in enumerate(task.next):
            if transition.otherwise:
                continue
            ctx = self.ctx(outcome)
            try:
                fires = transition.when is None or holds(transition.when, ctx)
            except TemplateProblem as exc:
                self.progress.failures.append(f"task '{task.name}' next[{i}].when: {exc.message}")
                continue
            if fires:
                fired_any = True
                self._fire(task, i, outcome)
        if not fired_any:
            for i, transition in enumerate(task.next):
                if transition.otherwise:
                    fired_any = True
                    self._fire(task, i, outcome)
        if not fired_any and not outcome.succeeded:
            self.progress.failures.append(_failure(task.name, outcome))

    def _fire(self, task: Task, i: int, outcome: Outcome) -> None:
        transition = task.next[i]
        for name, value in transition.publish:
            try:
                self.progress.vars[name] = evaluate(value, self.ctx(outcome))
            except TemplateProblem as exc:
                self.progress.failures.append(
                    f"task '{task.name}' next[{i}].publish.{name}: {exc.message}"
                )
                return
        self.fired.append((task.name, i))
        for target in transition.do:
            self._arrive(target, task.name, outcome)

    def _arrive(self, target: str, source: str, outcome: Outcome) -> None:
        join = self._task(target).join
        if join is None:
            self.start_task(target, outcome)
            return
        arrived = self.progress.waiting.setdefault(target, [])
        if source not in arrived:
            arrived.append(source)
        needed = len(self.inbound.get(target, ())) if join == "all" else join
        if len(arrived) >= needed:
            del self.progress.waiting[target]
            self.start_task(target, outcome)

    # -- the end --------------------------------------------------------------------------------

    def _maybe_finish(self) -> None:
        progress = self.progress
        if progress.status != "running" or progress.running() or self.events:
            return
        reasons = list(progress.failures)
        for target, arrived in progress.waiting.items():
            join = self._task(target).join
            needed = len(self.inbound.get(target, ())) if join == "all" else join
            reasons.append(
                f"dead end: task '{target}' waits (join) for {needed} inbound tasks but only "
                f"{len(arrived)} ({', '.join(arrived)}) started it"
            )
        if reasons:
            progress.status, progress.error = "failed", "; ".join(reasons)
            return
        try:
            output = evaluate(self.definition.output_map or {}, self.ctx(None))
        except TemplateProblem as exc:
            progress.status, progress.error = "failed", f"output_map: {exc.message}"
            return
        progress.status, progress.output = "completed", output


def _failure(name: str, outcome: Outcome) -> str:
    detail = ""
    if isinstance(outcome.result, Mapping) and outcome.result.get("error"):
        detail = f": {str(outcome.result['error'])[:300]}"
    return f"task '{name}' ended {outcome.status} and no transition handles it{detail}"
