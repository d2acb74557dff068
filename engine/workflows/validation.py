"""The checks a workflow definition passes before it is saved (pure).

Refused, each with a message naming the task and the field: a task name used twice, an action
task without an action (or with one the catalog does not have: ``action_exists`` is passed in),
a ``do`` naming no task, no start task (every task is some transition's target), a task no
start task leads to, a cycle that no task in it can leave (every task in it always starts the
next one), a ``join`` that waits for more tasks than lead to it, and a template that does not
parse, reads a name no scope defines, or reads ``task.<name>`` of no such task.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from engine.workflows.definition import Task, Transition, WorkflowDefinition, WorkflowProblem
from engine.workflows.expressions import known_names, problems_in

#: Problems listed in one refusal at most (the rest are counted).
MAX_LISTED = 5
_ACTION_REF = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")


def validate(
    definition: WorkflowDefinition, action_exists: Callable[[str], bool] | None = None
) -> None:
    """Raise :class:`WorkflowProblem` listing what is wrong (nothing when all is well)."""
    found = problems(definition, action_exists)
    if found:
        more = len(found) - MAX_LISTED
        text = "; ".join(found[:MAX_LISTED]) + (f" (and {more} more)" if more > 0 else "")
        raise WorkflowProblem(text)


def actions_used(definition: WorkflowDefinition) -> list[str]:
    """The refs of the actions (and workflows) the definition's tasks run, sorted."""
    return sorted({task.action for task in definition.all_tasks() if task.action is not None})


def problems(
    definition: WorkflowDefinition, action_exists: Callable[[str], bool] | None = None
) -> list[str]:
    """Every problem found, in the order of the tasks."""
    out: list[str] = []
    names: dict[str, Task] = {}
    sub_of: dict[str, str] = {}
    for task in definition.all_tasks():
        if task.name in names:
            out.append(f"task '{task.name}' name: defined twice")
        names[task.name] = task
    for task in definition.tasks:
        for sub in task.tasks:
            sub_of[sub.name] = task.name
    inbound = inbound_tasks(definition.tasks)
    for task in definition.tasks:
        out.extend(_task_problems(task, definition, action_exists, inbound))
        for sub in task.tasks:
            out.extend(_subtask_problems(sub, task, definition, action_exists))
        for i, target in task.targets():
            if target not in names:
                out.append(f"task '{task.name}' next[{i}].do: no task named '{target}'")
            elif target in sub_of:
                out.append(
                    f"task '{task.name}' next[{i}].do: '{target}' is a sub-task of parallel "
                    f"task '{sub_of[target]}' (start '{sub_of[target]}' instead)"
                )
    if out:
        return out  # the graph checks need every target to exist
    out.extend(_graph_problems(definition.tasks, inbound))
    out.extend(_template_problems(definition))
    return out


def inbound_tasks(tasks: Iterable[Task]) -> dict[str, set[str]]:
    """For each task, the tasks with a transition to it."""
    inbound: dict[str, set[str]] = {}
    for task in tasks:
        for _, target in task.targets():
            inbound.setdefault(target, set()).add(task.name)
    return inbound


def start_tasks(definition: WorkflowDefinition) -> list[str]:
    """The tasks no transition leads to, in the order written: they start the workflow."""
    inbound = inbound_tasks(definition.tasks)
    return [t.name for t in definition.tasks if not inbound.get(t.name)]


def _action_problems(
    task: Task, definition: WorkflowDefinition, action_exists: Callable[[str], bool] | None
) -> list[str]:
    at = f"task '{task.name}' action"
    if task.action is None:
        return [f"{at}: missing (the ref of the action to run, such as core.echo)"]
    if not _ACTION_REF.match(task.action):
        return [f"{at}: '{task.action}' is not an action ref (pack.name)"]
    if task.action == definition.ref:
        return [f"{at}: '{task.action}' is this workflow itself"]
    if action_exists is not None and not action_exists(task.action):
        return [f"{at}: no action '{task.action}'"]
    return []


def _task_problems(
    task: Task,
    definition: WorkflowDefinition,
    action_exists: Callable[[str], bool] | None,
    inbound: dict[str, set[str]],
) -> list[str]:
    at = f"task '{task.name}'"
    out: list[str] = []
    if task.type == "parallel":
        if task.action is not None:
            out.append(f"{at} action: a parallel task runs its sub-tasks, not an action")
        if not task.tasks:
            out.append(f"{at} tasks: a parallel task needs a list of sub-tasks")
        if task.with_items is not None:
            out.append(f"{at} with_items: a parallel task cannot have with_items")
    else:
        out.extend(_action_problems(task, definition, action_exists))
        if task.tasks:
            out.append(f"{at} tasks: only a task of type 'parallel' has sub-tasks")
    if task.with_items is None and (task.concurrency is not None or task.batch_size is not None):
        out.append(f"{at} concurrency: only a task with with_items runs items together")
    leading = len(inbound.get(task.name, ()))
    if isinstance(task.join, int) and task.join > leading:
        out.append(
            f"{at} join: waits for {task.join} tasks but {leading} lead to it "
            f"({', '.join(sorted(inbound.get(task.name, ()))) or 'none'})"
        )
    return out


def _subtask_problems(
    sub: Task,
    parent: Task,
    definition: WorkflowDefinition,
    action_exists: Callable[[str], bool] | None,
) -> list[str]:
    at = f"task '{sub.name}'"
    if sub.type == "parallel" or sub.tasks:
        return [f"{at} type: parallel tasks do not nest (it is inside '{parent.name}')"]
    out = _action_problems(sub, definition, action_exists)
    if sub.next:
        out.append(
            f"{at} next: a sub-task of parallel task '{parent.name}' has no transitions of "
            f"its own (put them on '{parent.name}')"
        )
    if sub.join is not None:
        out.append(f"{at} join: a sub-task of a parallel task starts with it")
    return out


# -- the graph ----------------------------------------------------------------------------------


def _graph_problems(tasks: tuple[Task, ...], inbound: dict[str, set[str]]) -> list[str]:
    by_name = {t.name: t for t in tasks}
    starts = [t.name for t in tasks if not inbound.get(t.name)]
    if not starts:
        return [
            "no start task: every task is started by another task's transition, so nothing "
            "would start the workflow"
        ]
    out = []
    reached = set(starts)
    stack = list(starts)
    while stack:
        for _, target in by_name[stack.pop()].targets():
            if target not in reached:
                reached.add(target)
                stack.append(target)
    for task in tasks:
        if task.name not in reached:
            out.append(f"task '{task.name}': never starts (no path from a start task leads to it)")
    for component in _cycles(tasks):
        if all(_always_continues(by_name[name], component) for name in component):
            ring = " -> ".join(sorted(component))
            out.append(
                f"task '{sorted(component)[0]}' next: cycle without an exit ({ring}): every "
                "task in it always starts the next, so the workflow would never end"
            )
    return out


def _cycles(tasks: tuple[Task, ...]) -> list[set[str]]:
    """The strongly connected components that hold a cycle (Tarjan's algorithm, iterative)."""
    graph = {t.name: [target for _, target in t.targets()] for t in tasks}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph.get(node, [])
            if i < len(edges):
                work.append((node, i + 1))
                nxt = edges[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph.get(node, []):
                    found.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return found


def _covers(transition: Transition) -> frozenset[str]:
    """The ways of ending (succeeded, failed, timed out) on which a transition surely fires."""
    every = frozenset({"succeeded", "failed", "timed_out"})
    if transition.otherwise:
        return frozenset()
    if transition.when is None:
        return every
    text = re.sub(r"\s+", "", transition.when.lower())
    if text in ("{{true}}", "true"):
        return every
    for name in ("succeeded", "failed", "timed_out"):
        if text in (f"{{{{{name}()}}}}", f"{name}()"):
            return frozenset({name})
    return frozenset()  # a condition on results may not hold: a way out


def _always_continues(task: Task, component: set[str]) -> bool:
    """True when, however the task ends, a transition into ``component`` fires."""
    covered: frozenset[str] = frozenset()
    for transition in task.next:
        if any(target in component for target in transition.do):
            covered |= _covers(transition)
    return covered == {"succeeded", "failed", "timed_out"}


# -- templates ----------------------------------------------------------------------------------


def _template_problems(definition: WorkflowDefinition) -> list[str]:
    task_names = frozenset(t.name for t in definition.all_tasks())
    plain = known_names(definition.vars, definition.parameters, items=False)
    with_item = known_names(definition.vars, definition.parameters, items=True)
    out: list[str] = []

    def check(value: object, where: str, known: frozenset[str], condition: bool = False) -> None:
        out.extend(
            problems_in(value, where, known=known, task_names=task_names, condition=condition)
        )

    for task in definition.all_tasks():
        at = f"task '{task.name}'"
        per_item = with_item if task.with_items is not None else plain
        check(task.input, f"{at} input", per_item)
        if task.when is not None:
            check(task.when, f"{at} when", plain, condition=True)
        if task.with_items is not None:
            check(task.with_items, f"{at} with_items", plain)
        if task.retry is not None and task.retry.on_error is not None:
            check(task.retry.on_error, f"{at} retry.on_error", plain, condition=True)
        for i, transition in enumerate(task.next):
            if transition.when is not None:
                check(transition.when, f"{at} next[{i}].when", plain, condition=True)
            for name, value in transition.publish:
                check(value, f"{at} next[{i}].publish.{name}", plain)
    if definition.output_map:
        check(definition.output_map, "output_map", plain)
    return out
