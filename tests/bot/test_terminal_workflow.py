"""The terminal chat's lines for a workflow run: a line under the workflow each time one of
its tasks starts or ends (with the output of a task that failed), its end as any run's."""

from __future__ import annotations

import io

from bot.terminal import TerminalSink
from engine.records import Route
from engine.workflows.run_tree import WorkflowTrees
from tests.bot.test_slack_sink import delivery
from tests.bot.test_slack_workflow_cards import ROOT, WORKFLOW, Rows, is_workflow

ROUTE = Route({"sink": "terminal", "session": "s1"}, None)


async def test_task_moves_print_under_the_workflow() -> None:
    rows = Rows()
    out = io.StringIO()
    sink = TerminalSink(out, workflows=WorkflowTrees(rows, is_workflow))
    started = rows.put(ROOT, "running", action_ref=WORKFLOW)
    await sink.deliver(delivery(started, "started"), started, ROUTE)
    for eid, name, index, end, extra in (
        (701, "check", None, "completed", {}),
        (702, "deploy", 0, "completed", {}),
        (703, "deploy", 1, "failed", {"stderr": "disk full\n", "error": "exit 2"}),
    ):
        record = rows.put(eid, "requested", task=name, index=index, parent=ROOT)
        await sink.deliver(delivery(record, "created"), record, ROUTE)
        record = rows.put(eid, "running", task=name, index=index, parent=ROOT)
        await sink.deliver(delivery(record, "started"), record, ROUTE)
        record = rows.put(eid, end, task=name, index=index, parent=ROOT, **extra)
        await sink.deliver(delivery(record, "completed"), record, ROUTE)
    assert sink.finished == set(), "a task's end is not the workflow's"
    ended = rows.put(ROOT, "failed", action_ref=WORKFLOW, error="task 'deploy' failed")
    await sink.deliver(delivery(ended, "completed"), ended, ROUTE)
    assert out.getvalue().splitlines() == [
        "#700 ops.runbook: running",
        "#700 > check: running",
        "#700 > check: completed in 300 ms",
        "#700 > deploy[0]: running",
        "#700 > deploy[0]: completed in 300 ms",
        "#700 > deploy[1]: running",
        "#700 > deploy[1]: failed in 300 ms: exit 2",
        "#700 > | [stderr] disk full",
        "#700 > | error: exit 2",
        "#700 ops.runbook: failed in 300 ms",
        "error: task 'deploy' failed",
    ]
    assert sink.finished == {ROOT}
