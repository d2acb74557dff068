"""The stored form of a running workflow's state (pure, given the secret box): task runs' keys,
the progress with the workflow's secret parameters sealed, the launches waiting to be
submitted, who a task runs as, and ``kv`` in its templates."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from datetime import timedelta
from typing import Any

from engine.clock import now_utc
from engine.crypto import SecretBox
from engine.params import REDACTED
from engine.records import Executor
from engine.templates import KvView, TemplateProblem
from engine.workflows import plan
from engine.workflows.definition import WorkflowDefinition
from engine.workflows.run_records import NewTaskRun


def dispatch_key(launch: plan.Launch, runs: int) -> str:
    index = "-" if launch.index is None else str(launch.index)
    return f"{launch.task}:{index}:{runs}:{launch.attempt}"


def child_executor(requester: Mapping[str, Any]) -> Executor:
    extra = {k: v for k, v in requester.items() if k not in ("identity", "source", "channel")}
    return Executor(
        identity=str(requester.get("identity") or "workflow"),
        source=requester.get("source") or "api",
        channel=requester.get("channel"),
        extra=extra,
    )


def holding(task_input: Mapping[str, Any], secrets: Mapping[str, Any]) -> frozenset[str]:
    """The names of a task's input whose value holds one of the workflow's secret parameters
    (kept secret in the task's execution too)."""
    texts = [json.dumps(v) if not isinstance(v, str) else v for v in secrets.values()]
    texts = [t for t in texts if len(t) >= 4]
    return frozenset(
        name
        for name, value in task_input.items()
        if any(t in (value if isinstance(value, str) else json.dumps(value)) for t in texts)
    )


class WorkflowKv(KvView):
    """``kv`` in a workflow's templates: ``kv.get`` only. A secret would be stored in the run's
    progress and the task's input in the clear, so ``kv.get_secret`` is refused (an action
    reads its secrets itself)."""

    def get_secret(self, name: Any, default: Any = None) -> Any:
        raise TemplateProblem(
            "kv.get_secret is not available in a workflow (its value would be stored in the "
            "clear): let the task's action read the secret"
        )


class StateCodec:
    """A run's progress as stored: the workflow's secret parameters redacted, and kept sealed
    beside them (``sealed``); a launch's input sealed when the workflow has secrets."""

    def __init__(self, box: SecretBox) -> None:
        self.box = box

    @staticmethod
    def secrets_of(parameters: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
        return {k: v for k, v in parameters.items() if k in names}

    def secrets(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The workflow's secret parameters, from their sealed copy in its stored progress."""
        return self.box.open(stored.get("sealed")) if stored.get("sealed") else {}

    def stored(
        self, progress: plan.Progress, launches: dict[str, Any], secrets: dict[str, Any]
    ) -> dict[str, Any]:
        data = progress.as_dict() | {"launches": launches}
        if secrets:
            data["parameters"] = {
                k: REDACTED if k in secrets else v for k, v in data["parameters"].items()
            }
            data["sealed"] = self.box.seal(secrets)
        return data

    def progress(self, stored: Mapping[str, Any]) -> plan.Progress:
        progress = plan.Progress.from_dict(stored)
        progress.parameters.update(self.secrets(stored))
        return progress

    def launch_entry(self, launch: plan.Launch, secrets: dict[str, Any]) -> dict[str, Any]:
        entry = asdict(launch)
        if secrets:  # the input may hold a secret: sealed at rest
            entry["input"] = None
            entry["sealed_input"] = self.box.seal({"input": launch.input})
        return entry

    def launch_input(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        task_input = entry.get("input")
        if entry.get("sealed_input"):
            task_input = self.box.open(entry["sealed_input"]).get("input")
        return dict(task_input) if isinstance(task_input, dict) else {}


def new_task_runs(
    state: StateCodec,
    definition: WorkflowDefinition,
    progress: plan.Progress,
    launches: tuple[plan.Launch, ...],
    pending: dict[str, Any],
    secrets: dict[str, Any],
) -> tuple[list[NewTaskRun], dict[str, Any]]:
    """The task runs to record for a step's launches, and the launches waiting (by key)."""
    now = now_utc()
    rows = []
    pending = dict(pending)
    for launch in launches:
        task = progress.tasks.get(launch.task)
        key = dispatch_key(launch, task.runs if task is not None else 0)
        entry = state.launch_entry(launch, secrets)
        spec = definition.task(launch.task)
        entry["max_retries"] = spec.retry.count if spec is not None and spec.retry else 0
        pending[key] = entry
        due = now + timedelta(seconds=launch.delay_s)
        rows.append(NewTaskRun(key, launch.task, launch.index, due))
    return rows, pending
