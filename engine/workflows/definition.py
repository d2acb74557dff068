"""The typed model of an Attune workflow definition and its parser (pure).

Attune's format (its ``crates/common/src/workflow/parser.rs``): ``ref, label, description,
version, parameters`` (flat StackStorm style or JSON Schema), ``output`` (a JSON Schema),
``output_map`` (what the finished workflow returns: ``{name: template}``), ``vars``, ``tags``,
``cancellation_policy`` and ``tasks``, a list of ``{name, type, action, input, when,
with_items, batch_size, concurrency, retry, timeout, next, join, tasks}``.

A task's transitions are ``next: [{when, publish, do}]``; the older shorthands ``on_success``,
``on_failure``, ``on_complete``, ``on_timeout``, ``decision`` and a task-level ``publish`` are
folded into ``next`` as Attune folds them (``next`` wins when both are written). A
``decision`` branch marked ``default`` fires when none of the others does. Parallel work is a
transition whose ``do`` names several tasks (joined again with ``join``), or a task of ``type:
parallel`` whose sub-``tasks`` all start together. A task whose action is a workflow is a
nested workflow. Every problem is a :class:`WorkflowProblem` naming the task and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.errors import EngineError

TaskType = Literal["action", "parallel", "workflow"]
Backoff = Literal["constant", "linear", "exponential"]
CancellationPolicy = Literal["allow_finish", "cancel_running"]

#: Names a task may not have: they are the template scopes (Attune's reserved words).
RESERVED_NAMES = frozenset(
    {"parameters", "vars", "task", "tasks", "system", "kv", "pack", "item", "batch", "index"}
    | {"workflow", "variables", "config", "keystore"}
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,127}$")
#: Fields of a task Attune accepts that this server keeps but does not use (worker placement,
#: permission sets, the web builder's layout).
_KEPT_TASK_FIELDS = (
    "permission_set_refs",
    "permission_set_ref",
    "worker_selector",
    "worker_tolerations",
    "worker_affinity",
    "__chart_meta__",
)
_TASK_FIELDS = frozenset(
    {
        "name",
        "type",
        "action",
        "input",
        "when",
        "with_items",
        "batch_size",
        "concurrency",
        "retry",
        "timeout",
        "next",
        "join",
        "tasks",
        "on_success",
        "on_failure",
        "on_complete",
        "on_timeout",
        "decision",
        "publish",
        *_KEPT_TASK_FIELDS,
    }
)
_TRANSITION_FIELDS = frozenset({"when", "publish", "do", "otherwise", "__chart_meta__"})
SUCCEEDED = "{{ succeeded() }}"
FAILED = "{{ failed() }}"
TIMED_OUT = "{{ timed_out() }}"


class WorkflowProblem(EngineError):
    """A workflow definition that cannot be used; the message names the task and the field
    (422 on the API)."""

    code = "UNPROCESSABLE_ENTITY"
    http_status = 422


@dataclass(frozen=True, slots=True)
class Retry:
    """Run a failed task again: ``count`` more times, ``delay_s`` apart (growing by
    ``backoff``, at most ``max_delay_s``), only while ``on_error`` (a condition) holds."""

    count: int
    delay_s: float = 0.0
    backoff: Backoff = "constant"
    max_delay_s: float | None = None
    on_error: str | None = None

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1 for the first retry)."""
        if self.backoff == "linear":
            delay = self.delay_s * attempt
        elif self.backoff == "exponential":
            delay = self.delay_s * 2 ** (attempt - 1)
        else:
            delay = self.delay_s
        return min(delay, self.max_delay_s) if self.max_delay_s is not None else delay

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "delay": self.delay_s, "backoff": self.backoff}
        if self.max_delay_s is not None:
            out["max_delay"] = self.max_delay_s
        if self.on_error is not None:
            out["on_error"] = self.on_error
        return out


@dataclass(frozen=True, slots=True)
class Transition:
    """One entry of a task's ``next``: when ``when`` holds (always, without one) after the
    task ends, ``publish`` sets workflow variables and the tasks in ``do`` start."""

    when: str | None = None
    #: ``(variable, value)`` in order; a text value is a template.
    publish: tuple[tuple[str, Any], ...] = ()
    do: tuple[str, ...] = ()
    #: Set on the ``default`` branch of a ``decision``: fires only when no other does.
    otherwise: bool = False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.when is not None:
            out["when"] = self.when
        if self.publish:
            out["publish"] = [{name: value} for name, value in self.publish]
        if self.do:
            out["do"] = list(self.do)
        if self.otherwise:
            out["otherwise"] = True
        return out


@dataclass(frozen=True, slots=True)
class Task:
    name: str
    type: TaskType = "action"
    #: An action's ref (a workflow's ref makes this a nested workflow).
    action: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    #: A condition: the task is skipped when it does not hold as the task would start.
    when: str | None = None
    #: A template giving a list: the action runs once per item (``item``, ``index``).
    with_items: str | None = None
    batch_size: int | None = None
    #: How many items run at once (all, when not set).
    concurrency: int | None = None
    retry: Retry | None = None
    timeout_s: float | None = None
    next: tuple[Transition, ...] = ()
    #: Wait for this many inbound tasks (``"all"``: every task that leads here) before starting.
    join: int | Literal["all"] | None = None
    #: The sub-tasks of a ``parallel`` task.
    tasks: tuple[Task, ...] = ()
    #: Attune's fields this server keeps but does not use.
    extra: dict[str, Any] = field(default_factory=dict)

    def targets(self) -> Iterator[tuple[int, str]]:
        """``(transition index, task name)`` of every ``do`` entry."""
        for i, transition in enumerate(self.next):
            for name in transition.do:
                yield i, name

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.type != "action":
            out["type"] = self.type
        if self.action is not None:
            out["action"] = self.action
        if self.input:
            out["input"] = self.input
        for key, value in (
            ("when", self.when),
            ("with_items", self.with_items),
            ("batch_size", self.batch_size),
            ("concurrency", self.concurrency),
            ("timeout", self.timeout_s),
            ("join", self.join),
        ):
            if value is not None:
                out[key] = value
        if self.retry is not None:
            out["retry"] = self.retry.as_dict()
        if self.next:
            out["next"] = [t.as_dict() for t in self.next]
        if self.tasks:
            out["tasks"] = [t.as_dict() for t in self.tasks]
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class WorkflowDefinition:
    ref: str
    label: str
    version: str
    tasks: tuple[Task, ...]
    description: str = ""
    #: The parameters as written (flat StackStorm style or JSON Schema).
    parameters: dict[str, Any] | None = None
    #: The output's JSON Schema.
    output: dict[str, Any] | None = None
    #: What the finished workflow returns: ``{name: template}``.
    output_map: dict[str, Any] | None = None
    vars: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    cancellation_policy: CancellationPolicy = "allow_finish"

    def task(self, name: str) -> Task | None:
        """The task (a parallel task's sub-task included) of that name."""
        for task in self.all_tasks():
            if task.name == name:
                return task
        return None

    def all_tasks(self) -> Iterator[Task]:
        """Every task, each parallel task followed by its sub-tasks."""
        for task in self.tasks:
            yield task
            yield from task.tasks

    def as_dict(self) -> dict[str, Any]:
        """The canonical JSON (transitions as ``next``) that is stored and served."""
        out: dict[str, Any] = {
            "ref": self.ref,
            "label": self.label,
            "version": self.version,
        }
        if self.description:
            out["description"] = self.description
        if self.parameters is not None:
            out["parameters"] = self.parameters
        if self.output is not None:
            out["output"] = self.output
        if self.vars:
            out["vars"] = self.vars
        out["tasks"] = [t.as_dict() for t in self.tasks]
        if self.output_map is not None:
            out["output_map"] = self.output_map
        if self.tags:
            out["tags"] = list(self.tags)
        if self.cancellation_policy != "allow_finish":
            out["cancellation_policy"] = self.cancellation_policy
        return out


# -- parsing ------------------------------------------------------------------------------------


def parse_definition(
    data: Any,
    *,
    ref: str | None = None,
    label: str | None = None,
    version: str | None = None,
    description: str | None = None,
) -> WorkflowDefinition:
    """A definition from its YAML/JSON mapping. ``ref``, ``label``, ``version`` and
    ``description`` given here (the API request's, an action YAML's) win over the mapping's,
    which may then leave them out. Raises :class:`WorkflowProblem`."""
    if not isinstance(data, Mapping):
        raise WorkflowProblem("a workflow definition must be a mapping with 'tasks'")
    wf_ref = ref or _text(data.get("ref"), "ref")
    if not wf_ref:
        raise WorkflowProblem("ref: a workflow needs a ref such as 'pack.name'")
    raw_tasks = data.get("tasks")
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise WorkflowProblem("tasks: a workflow needs a list of at least one task")
    tasks = tuple(_task(raw, f"tasks[{i}]") for i, raw in enumerate(raw_tasks))
    output = data.get("output")
    output_map = data.get("output_map")
    if output_map is None and _looks_like_output_map(output):
        output_map, output = _mapping_of(output, "output"), None
    if output is not None and not isinstance(output, Mapping):
        raise WorkflowProblem("output: must be a JSON Schema (a mapping)")
    if output_map is not None:
        output_map = _mapping_of(output_map, "output_map")
    params = data.get("parameters")
    if params is not None and not isinstance(params, Mapping):
        raise WorkflowProblem("parameters: must be a mapping of parameter names")
    policy = data.get("cancellation_policy", "allow_finish")
    if policy not in ("allow_finish", "cancel_running"):
        raise WorkflowProblem("cancellation_policy: must be 'allow_finish' or 'cancel_running'")
    tags = data.get("tags") or []
    if not isinstance(tags, list):
        raise WorkflowProblem("tags: must be a list of texts")
    return WorkflowDefinition(
        ref=wf_ref,
        label=label or _text(data.get("label"), "label") or wf_ref,
        version=version or str(data.get("version") or "1.0.0"),
        description=description
        if description is not None
        else _text(data.get("description"), "description"),
        parameters=dict(params) if params is not None else None,
        output=dict(output) if output is not None else None,
        output_map=output_map,
        vars=_mapping_of(data.get("vars"), "vars"),
        tags=tuple(str(t) for t in tags),
        tasks=tasks,
        cancellation_policy=policy,
    )


def _looks_like_output_map(output: Any) -> bool:
    """StackStorm's ``output: [{name: template}]`` or ``{name: "{{ ... }}"}`` rather than a
    JSON Schema."""
    if isinstance(output, list):
        return True
    if not isinstance(output, Mapping) or {"type", "properties", "$ref"} & set(output):
        return False
    return any(isinstance(v, str) and "{{" in v for v in output.values())


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str | int | float):
        raise WorkflowProblem(f"{where}: must be a text")
    return str(value)


def _mapping_of(value: Any, where: str) -> dict[str, Any]:
    """A mapping, or Attune's list of one-key mappings (``vars: [{a: 1}, {b: 2}]``)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    if isinstance(value, list):
        out: dict[str, Any] = {}
        for i, item in enumerate(value):
            if isinstance(item, Mapping) and len(item) == 1:
                out.update({str(k): v for k, v in item.items()})
            elif isinstance(item, str):
                out[item] = None
            else:
                raise WorkflowProblem(f"{where}[{i}]: must be a mapping of one name to a value")
        return out
    raise WorkflowProblem(f"{where}: must be a mapping of names to values")


def _task(raw: Any, where: str) -> Task:
    if not isinstance(raw, Mapping):
        raise WorkflowProblem(f"{where}: a task must be a mapping with a 'name'")
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise WorkflowProblem(
            f"{where}.name: a task needs a name of letters, digits, '_' or '-' "
            "(starting with a letter or '_')"
        )
    at = f"task '{name}'"
    if name in RESERVED_NAMES:
        raise WorkflowProblem(f"{at} name: '{name}' is a template scope and cannot name a task")
    unknown = sorted(str(k) for k in raw if k not in _TASK_FIELDS)
    if unknown:
        raise WorkflowProblem(f"{at}: unknown field '{unknown[0]}'")
    kind = raw.get("type", "action")
    if kind not in ("action", "parallel", "workflow"):
        raise WorkflowProblem(f"{at} type: must be 'action', 'parallel' or 'workflow'")
    action = raw.get("action")
    if action is not None and (not isinstance(action, str) or not action.strip()):
        raise WorkflowProblem(f"{at} action: must be an action's ref such as 'core.echo'")
    inputs = raw.get("input") or {}
    if not isinstance(inputs, Mapping):
        raise WorkflowProblem(f"{at} input: must be a mapping of parameter names to values")
    subtasks = raw.get("tasks")
    if subtasks is not None and (not isinstance(subtasks, list) or not subtasks):
        raise WorkflowProblem(f"{at} tasks: a parallel task needs a list of sub-tasks")
    return Task(
        name=name,
        type=kind,
        action=action,
        input=dict(inputs),
        when=_template_text(raw.get("when"), f"{at} when"),
        with_items=_with_items(raw.get("with_items"), f"{at} with_items"),
        batch_size=_positive_int(raw.get("batch_size"), f"{at} batch_size"),
        concurrency=_positive_int(raw.get("concurrency"), f"{at} concurrency"),
        retry=_retry(raw.get("retry"), f"{at} retry"),
        timeout_s=_timeout(raw.get("timeout"), f"{at} timeout"),
        next=_transitions(raw, at),
        join=_join(raw.get("join"), f"{at} join"),
        tasks=tuple(_task(sub, f"{at} tasks[{i}]") for i, sub in enumerate(subtasks or [])),
        extra={k: raw[k] for k in _KEPT_TASK_FIELDS if k in raw},
    )


def _template_text(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "{{ true }}" if value else "{{ false }}"
    if not isinstance(value, str) or not value.strip():
        raise WorkflowProblem(f'{where}: must be a condition such as "{{{{ succeeded() }}}}"')
    return value


def _with_items(value: Any, where: str) -> str | None:
    """A template giving the list; a literal list is kept as its JSON template."""
    if value is None:
        return None
    if isinstance(value, list):
        return "{{ " + json.dumps(value) + " }}"
    if not isinstance(value, str) or not value.strip():
        raise WorkflowProblem(f'{where}: must be a template giving a list ("{{{{ ... }}}}")')
    return value


def _positive_int(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WorkflowProblem(f"{where}: must be a whole number of at least 1")
    return value


def _seconds(value: Any, where: str, *, zero_ok: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkflowProblem(f"{where}: must be a number of seconds")
    if value < 0 or (value == 0 and not zero_ok):
        raise WorkflowProblem(f"{where}: must be {'at least 0' if zero_ok else 'above 0'} seconds")
    return float(value)


def _timeout(value: Any, where: str) -> float | None:
    return None if value is None else _seconds(value, where, zero_ok=False)


def _join(value: Any, where: str) -> int | Literal["all"] | None:
    if value is None:
        return None
    if value == "all":
        return "all"
    return _positive_int(value, where)


def _retry(value: Any, where: str) -> Retry | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = {"count": value}
    if not isinstance(value, Mapping):
        raise WorkflowProblem(f"{where}: must be a mapping such as {{count: 3, delay: 5}}")
    unknown = sorted(set(value) - {"count", "delay", "backoff", "max_delay", "on_error"})
    if unknown:
        raise WorkflowProblem(f"{where}: unknown field '{unknown[0]}'")
    count = _positive_int(value.get("count"), f"{where}.count")
    if count is None:
        raise WorkflowProblem(f"{where}.count: how many times to retry (at least 1)")
    if count > 100:
        raise WorkflowProblem(f"{where}.count: at most 100 retries")
    delay = _seconds(value.get("delay", 0), f"{where}.delay", zero_ok=True)
    backoff = value.get("backoff", "constant")
    if backoff not in ("constant", "linear", "exponential"):
        raise WorkflowProblem(f"{where}.backoff: must be 'constant', 'linear' or 'exponential'")
    max_delay = value.get("max_delay")
    if max_delay is not None:
        max_delay = _seconds(max_delay, f"{where}.max_delay", zero_ok=True)
        if max_delay < delay:
            raise WorkflowProblem(f"{where}.max_delay: must be at least the delay")
    return Retry(
        count=count,
        delay_s=delay,
        backoff=backoff,
        max_delay_s=max_delay,
        on_error=_template_text(value.get("on_error"), f"{where}.on_error"),
    )


def _targets(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) and v for v in items):
        raise WorkflowProblem(f"{where}: must be a task name or a list of task names")
    return tuple(items)


def _publish(value: Any, where: str) -> tuple[tuple[str, Any], ...]:
    """Attune's ``publish``: a list of ``{name: value}`` (or bare names), or one mapping."""
    if value is None:
        return ()
    items = list(value.items()) if isinstance(value, Mapping) else None
    if items is None:
        if not isinstance(value, list):
            raise WorkflowProblem(f"{where}: must be a list of {{variable: value}}")
        items = []
        for i, entry in enumerate(value):
            if isinstance(entry, str):
                items.append((entry, "{{ result() }}"))
            elif isinstance(entry, Mapping):
                items.extend(entry.items())
            else:
                raise WorkflowProblem(f"{where}[{i}]: must be {{variable: value}}")
    for name, _ in items:
        if not isinstance(name, str) or not _NAME.match(name):
            raise WorkflowProblem(f"{where}: '{name}' is not a variable name")
    return tuple((str(n), v) for n, v in items)


def _transitions(raw: Mapping[str, Any], at: str) -> tuple[Transition, ...]:
    """``next`` as written, or the shorthands folded into it (Attune's order: success,
    failure, complete, timeout, decision branches; a task-level ``publish`` joins the first
    success transition)."""
    if raw.get("next") is not None:
        entries = raw["next"]
        if not isinstance(entries, list):
            raise WorkflowProblem(f"{at} next: must be a list of {{when, publish, do}}")
        out = []
        for i, entry in enumerate(entries):
            where = f"{at} next[{i}]"
            if not isinstance(entry, Mapping):
                raise WorkflowProblem(f"{where}: must be a mapping of when, publish, do")
            unknown = sorted(str(k) for k in entry if k not in _TRANSITION_FIELDS)
            if unknown:
                raise WorkflowProblem(f"{where}: unknown field '{unknown[0]}'")
            out.append(
                Transition(
                    when=_template_text(entry.get("when"), f"{where}.when"),
                    publish=_publish(entry.get("publish"), f"{where}.publish"),
                    do=_targets(entry.get("do"), f"{where}.do"),
                    otherwise=entry.get("otherwise") is True,
                )
            )
        return tuple(out)
    folded: list[Transition] = []
    for key, when in (
        ("on_success", SUCCEEDED),
        ("on_failure", FAILED),
        ("on_complete", None),
        ("on_timeout", TIMED_OUT),
    ):
        if raw.get(key) is not None:
            folded.append(Transition(when=when, do=_targets(raw[key], f"{at} {key}")))
    decision = raw.get("decision") or []
    if not isinstance(decision, list):
        raise WorkflowProblem(f"{at} decision: must be a list of {{when, next}}")
    for i, branch in enumerate(decision):
        where = f"{at} decision[{i}]"
        if not isinstance(branch, Mapping):
            raise WorkflowProblem(f"{where}: must be a mapping of when and next")
        default = branch.get("default")
        target = branch.get("next")
        if isinstance(default, str):  # ``- default: task_name``
            target, default = default, True
        if bool(default) == (branch.get("when") is not None):
            raise WorkflowProblem(f"{where}: give either 'when' or 'default'")
        folded.append(
            Transition(
                when=_template_text(branch.get("when"), f"{where}.when"),
                do=_targets(target, f"{where}.next"),
                otherwise=bool(default),
            )
        )
    publish = _publish(raw.get("publish"), f"{at} publish")
    if publish:
        first = next((i for i, t in enumerate(folded) if t.when == SUCCEEDED), None)
        if first is None:
            folded.insert(0, Transition(when=SUCCEEDED, publish=publish))
        else:
            t = folded[first]
            folded[first] = Transition(when=t.when, publish=publish, do=t.do)
    return tuple(folded)
