"""The workflow benchmark (bench/workflow.py): its workflows plan as meant (checked with the
pure planner), and ``python -m bench workflow --quick`` runs on the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.workflow import ITEMS_CONCURRENCY, items_tasks, sequential_tasks
from engine.workflows import plan
from engine.workflows.definition import parse_definition
from engine.workflows.plan import Step
from engine.workflows.validation import problems

ROOT = Path(__file__).resolve().parents[1]
#: Bound on the quick run of the scenario alone (it takes seconds; this catches a hang).
QUICK_LIMIT_S = 180


def started(step: Step) -> list[tuple[str, int | None]]:
    return [(launch.task, launch.index) for launch in step.launches]


def test_the_sequential_workflow_runs_its_tasks_one_after_another() -> None:
    definition = parse_definition({"tasks": sequential_tasks(5)}, ref="b.seq")
    assert problems(definition, {"core.noop"}.__contains__) == []
    step = plan.start(definition, {})
    order = []
    while not step.finished:
        assert len(step.launches) == 1
        (launch,) = step.launches
        order.append(launch.task)
        step = plan.task_ended(definition, step.progress, launch.task, "completed")
    assert order == ["t000", "t001", "t002", "t003", "t004"]
    assert step.progress.status == "completed"


def test_the_items_workflow_runs_concurrency_items_at_a_time() -> None:
    definition = parse_definition({"tasks": items_tasks(25)}, ref="b.items")
    assert problems(definition, {"core.noop"}.__contains__) == []
    step = plan.start(definition, {})
    assert started(step) == [("each", i) for i in range(ITEMS_CONCURRENCY)]
    seen = {i for _, i in started(step)}
    running = set(seen)
    while not step.finished:
        index = min(i for i in running if i is not None)
        running.discard(index)
        step = plan.task_ended(definition, step.progress, "each", "completed", index=index)
        for _, i in started(step):
            running.add(i)
            seen.add(i)
        assert len(running) <= ITEMS_CONCURRENCY
    assert seen == set(range(25))
    assert step.progress.status == "completed"


@pytest.mark.e2e
@pytest.mark.timeout(QUICK_LIMIT_S + 30)
def test_quick_workflow_bench_on_the_embedded_default(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    argv = ["workflow", "--quick", "--mode", "embedded", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=QUICK_LIMIT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["problems"] == []
    summary = document["results"]["embedded"]["workflow"]["summary"]
    assert summary["tasks"] == 10
    for kind in ("sequential", "items", "chain"):
        assert summary[f"{kind}_s"] > 0
        assert summary[f"{kind}_ms_per_task"] == pytest.approx(100 * summary[f"{kind}_s"])
