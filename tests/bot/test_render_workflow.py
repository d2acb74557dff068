"""Workflow rendering (pure): the card's task lines, the status tree, the terminal's task
lines, the thread message of a failed task; and the task lines a run's rows make."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import render, render_workflow
from engine.records import Execution, StoredExecution
from engine.workflows.run_tree import TaskRun, WorkflowTree, task_lines

WHEN = datetime(2026, 11, 29, 12, tzinfo=UTC)


def workflow(status: str = "running", **result: Any) -> Execution:
    ended = status in render.TERMINAL_WORDS
    return Execution(
        id=12,
        action_ref="ops.runbook",
        status=status,
        config={"service": "web"},
        parent=None,
        enforcement=None,
        result=result or None,
        created=WHEN,
        updated=WHEN,
        started_at=WHEN,
        finished_at=WHEN if ended else None,
        executor=None,
        requester={"identity": "U1", "source": "slack", "user_id": "U1"},
    )


def task(
    name: str,
    status: str,
    ms: int | None = None,
    *,
    index: int | None = None,
    eid: int = 13,
    runs: int = 1,
    error: str | None = None,
) -> TaskRun:
    return TaskRun(eid, name, index, "core.noop", status, ms, runs, error)


def text_of(blocks: list[dict[str, Any]]) -> str:
    return json.dumps(blocks, ensure_ascii=False)


def test_a_card_shows_a_line_per_task_with_status_item_and_duration() -> None:
    tree = WorkflowTree(
        workflow(),
        (
            task("check", "completed", 400),
            task("deploy", "completed", 1800, index=0, eid=14),
            task("deploy", "running", index=1, eid=15),
            task("verify", "requested", eid=16),
        ),
    )
    text, blocks = render_workflow.card(tree)
    shown = text_of(blocks)
    assert ":white_check_mark: `check` completed in 400 ms" in shown
    assert ":white_check_mark: `deploy[0]` completed in 1.8 s" in shown
    assert ":gear: `deploy[1]` running" in shown
    assert "`verify` queued" in shown
    assert "4 tasks: 2 completed · 1 running · 1 queued" in shown
    assert text.startswith("#12 ops.runbook: running")
    # Cancel stays the last block, with the workflow's id.
    assert blocks[-1]["type"] == "actions"
    assert blocks[-1]["elements"][0]["action_id"] == render.CANCEL_ACTION
    assert blocks[-1]["elements"][0]["value"] == "12"


def test_an_ended_workflow_offers_rerun_and_shows_its_error_and_failed_task() -> None:
    tree = WorkflowTree(
        workflow("failed", error="task 'check' failed"),
        (task("check", "failed", 50, error="exit 3"), task("rollback", "completed", 10, eid=14)),
    )
    _, blocks = render_workflow.card(tree)
    shown = text_of(blocks)
    assert ":x: `check` failed in 50 ms: exit 3" in shown
    assert "task 'check' failed" in shown
    assert blocks[-1]["elements"][0]["action_id"] == render.RERUN_ACTION


def test_a_retried_task_says_which_try() -> None:
    line = render_workflow.task_line(task("check", "running", runs=2))
    assert line == ":gear: `check` running, try 2"


def test_a_workflow_with_no_task_yet_says_so() -> None:
    _, blocks = render_workflow.card(WorkflowTree(workflow("requested"), ()))
    assert "no task started yet" in text_of(blocks)


def test_many_tasks_keep_what_did_not_complete_and_the_latest_within_slacks_limits() -> None:
    tasks = [task("step", "completed", 5, index=i, eid=100 + i) for i in range(150)]
    tasks[3] = task("step", "failed", 5, index=3, eid=103, error="boom")
    tasks[149] = task("step", "running", index=149, eid=249)
    tree = WorkflowTree(workflow(), tuple(tasks))
    _, blocks = render_workflow.card(tree)
    assert len(blocks) <= render.MAX_BLOCKS
    sections = [b["text"]["text"] for b in blocks if b["type"] == "section"]
    assert all(len(s) <= render.SECTION_TEXT_LIMIT for s in sections)
    lines = "\n".join(sections[1:]).split("\n")  # the first section is the headline
    assert len(lines) == render_workflow.MAX_TASK_LINES
    assert any("`step[3]` failed" in line for line in lines)
    assert any("`step[149]` running" in line for line in lines)
    assert any("`step[148]` completed" in line for line in lines)
    assert not any("`step[10]`" in line for line in lines)
    head = text_of(blocks)
    assert "150 tasks: 148 completed · 1 failed · 1 running" in head
    assert "the 110 not shown here: `status 12`" in head


def test_status_tree_lists_the_tasks_under_the_workflow() -> None:
    tree = WorkflowTree(
        workflow("completed", duration_ms=2300),
        (task("check", "completed", 400), task("restart", "completed", 1200, eid=14)),
    )
    text = render_workflow.status_tree(tree)
    assert text.splitlines() == [
        "#12 ops.runbook: completed in 2.3 s (2 tasks: 2 completed)",
        "  #13 `check` (core.noop): completed in 400 ms",
        "  #14 `restart` (core.noop): completed in 1.2 s",
    ]


def test_terminal_lines_of_task_moves() -> None:
    assert render_workflow.task_move(12, task("check", "completed", 400)) == (
        "#12 > check: completed in 400 ms"
    )
    assert render_workflow.task_move(12, task("deploy", "running", index=2)) == (
        "#12 > deploy[2]: running"
    )
    assert render_workflow.task_move(12, task("check", "failed", 1500, error="exit 3")) == (
        "#12 > check: failed in 1.5 s: exit 3"
    )


def test_a_failed_tasks_thread_message_names_it_and_shows_its_output() -> None:
    failed = task("check", "failed", 50, error="exit 3")
    record = Execution(
        13, "core.noop", "failed", {}, 12, None,
        {"stdout": "", "stderr": "connection refused\n", "error": "exit 3"},
        WHEN, WHEN, WHEN, WHEN, None, {},
    )  # fmt: skip
    text, blocks = render_workflow.task_failed(12, failed, record)
    shown = text_of(blocks)
    assert text == "Task check of #12 ended failed"
    assert "Task `check` (#13 `core.noop`) of #12 ended *failed* in 50 ms: exit 3" in shown
    assert "connection refused" in shown


def stored(
    eid: int, name: str | None, status: str, *, index: int | None = None, secs: float = 0.5
) -> StoredExecution:
    ended = status in render.TERMINAL_WORDS
    return StoredExecution(
        id=eid, action_ref="core.noop", status=status, config={}, secrets=None, parent=12,
        enforcement=None, executor={}, result={"error": "exit 1"} if status == "failed" else None,
        timeout_s=60, callback_url=None, chat=None, worker=None, heartbeat_at=None, pid=None,
        pid_start=None, idempotency_key=None, created=WHEN, updated=WHEN, started_at=WHEN,
        finished_at=WHEN + timedelta(seconds=secs) if ended else None,
        workflow_task=None if name is None else
        {"workflow_execution": 1, "task_name": name, "task_index": index},
    )  # fmt: skip


def test_task_lines_keep_the_latest_run_of_each_task_in_start_order() -> None:
    rows = [
        stored(20, "verify", "running"),
        stored(17, "check", "failed"),
        stored(19, "check", "completed", secs=0.4),  # the retry
        stored(18, "deploy", "completed", index=1),
        stored(16, "deploy", "completed", index=0),
        stored(21, None, "completed"),  # a child that runs no task: not a line
    ]
    lines = task_lines(rows)
    assert [(t.task_name, t.task_index, t.status, t.runs) for t in lines] == [
        ("deploy", 0, "completed", 1),
        ("check", None, "completed", 2),
        ("deploy", 1, "completed", 1),
        ("verify", None, "running", 1),
    ]
    assert lines[1].duration_ms == 400
    assert lines[3].duration_ms is None


def test_a_workflows_output_is_its_reply_and_a_long_one_is_cut_with_a_note() -> None:
    text, blocks = render_workflow.output(workflow("completed", data={"outcome": "restarted"})) or (
        "",
        [],
    )
    assert text == "Output of #12"
    assert '"outcome": "restarted"' in blocks[0]["text"]["text"]
    assert render_workflow.output(workflow("completed", data=None)) is None
    long = render_workflow.output(workflow("completed", data={"log": ["x" * 50] * 200}))
    assert long is not None
    body = long[1][0]["text"]["text"]
    assert len(body) <= render.SECTION_TEXT_LIMIT
    assert body.endswith("…```")
    assert "GET /api/v1/executions/12" in text_of(long[1])
