"""The terminal chat's lines for a workflow run: a line under the workflow each time one of
its tasks starts or ends (with the output of a task that failed), its end as any run's."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.terminal import TerminalSink
from engine.records import Route
from engine.workflows.run_tree import WorkflowTrees
from tests.bot.test_slack_sink import delivery
from tests.bot.test_slack_workflow_cards import ROOT, WORKFLOW, Rows, is_workflow

CODE = Path(__file__).resolve().parents[2]
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
        "#700 ops.runbook: failed in 300 ms",
        "error: task 'deploy' failed",
    ]
    assert sink.finished == {ROOT}


FLOW = """ref: runbooks.check_then_fix
label: Check then fix
tasks:
  - name: check
    action: examples.fail
    on_failure: fix
  - name: fix
    action: core.echo
    input:
      message: fixed
"""


@pytest.mark.e2e
def test_attune_chat_prints_a_workflows_tasks_under_it(tmp_path: Path) -> None:
    pack = tmp_path / "packs" / "runbooks"
    (pack / "workflows").mkdir(parents=True)
    (pack / "pack.yaml").write_text("ref: runbooks\nlabel: Runbooks\nversion: 1.0.0\n")
    (pack / "workflows" / "check_then_fix.yaml").write_text(FLOW)
    env = {
        **os.environ,
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/c.db",
        "ATTUNE_DATA_DIR": str(tmp_path),
        "ATTUNE_PACKS_PATH": f"{CODE / 'packs'}:{tmp_path / 'packs'}",
    }
    env.pop("ATTUNE_AMQP_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "chat"],
        input="run runbooks.check_then_fix\nstatus 1\n",
        text=True,
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    moves = [line for line in lines if line.startswith("#1 > ")]
    assert moves[0] == "#1 > check: running"
    assert moves[1].startswith("#1 > check: failed in ")
    assert "#1 > | [stderr] something went wrong (exit 3)" in moves
    assert "#1 > fix: running" in moves
    assert any(m.startswith("#1 > fix: completed in ") for m in moves)
    ended = lines.index(
        next(line for line in lines if line.startswith("#1 runbooks.check_then_fix: completed"))
    )
    assert ended > lines.index(moves[-1]), "the workflow's end comes after its tasks"
    tree = [line for line in lines if line.startswith("  #")]
    assert [t.split()[1] for t in tree] == ["check", "fix"]
