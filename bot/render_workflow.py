"""Rendering of workflow runs (pure): the workflow's card with a line per task, the tree that
``status <id>`` shows, the line the terminal prints when a task moves, and the thread message
of a task that failed.

A card holds at most :data:`MAX_TASK_LINES` task lines (Slack: 50 blocks, 3,000 characters a
section): past that, the lines of tasks that did not complete (running, queued, failed...) are
kept and the latest completed ones fill the rest, under a count of every status.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bot import render
from engine.records import Execution
from engine.workflows.run_tree import TaskRun, WorkflowTree

#: Task lines on a card (and in ``status``) at most.
MAX_TASK_LINES = 40
#: A task line's error shown up to this many characters.
LINE_ERROR_CHARS = 120


def duration_text(ms: int | None) -> str:
    """`` in 900 ms`` / `` in 1.8 s``; empty when not known."""
    if ms is None:
        return ""
    return f" in {ms} ms" if ms < 1000 else f" in {ms / 1000:.1f} s"


def label(task: TaskRun) -> str:
    """The task's name, with its item's index in a ``with_items`` task: ``deploy[3]``."""
    return task.task_name if task.task_index is None else f"{task.task_name}[{task.task_index}]"


def word(status: str) -> str:
    return render.WORDS.get(status, status)


def _state(task: TaskRun) -> str:
    """``completed in 0.4 s`` (``, try 2`` after a retry)."""
    text = word(task.status) + duration_text(task.duration_ms)
    return text + (f", try {task.runs}" if task.runs > 1 else "")


def task_line(task: TaskRun) -> str:
    """One mrkdwn line: status emoji, task (and item), status and duration."""
    emoji = render.EMOJI.get(task.status, ":grey_question:")
    line = f"{emoji} `{render.escape(label(task))}` {_state(task)}"
    if task.error and task.status not in ("completed", "running"):
        line += f": {render.escape(_clip(task.error, LINE_ERROR_CHARS))}"
    return line


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_tasks(tasks: Sequence[TaskRun], limit: int = MAX_TASK_LINES) -> list[TaskRun]:
    """The lines shown when there are more than ``limit``: every task that did not complete
    (up to ``limit``), then the latest completed ones; in their order."""
    if len(tasks) <= limit:
        return list(tasks)
    keep = {i for i, t in enumerate(tasks) if t.status != "completed"}
    if len(keep) > limit:
        keep = set(sorted(keep)[-limit:])
    for i in range(len(tasks) - 1, -1, -1):
        if len(keep) >= limit:
            break
        keep.add(i)
    return [tasks[i] for i in sorted(keep)]


def summary(tasks: Sequence[TaskRun]) -> str:
    """``12 tasks: 10 completed · 1 running · 1 queued``."""
    counts = Counter(word(t.status) for t in tasks)
    parts = " · ".join(f"{n} {w}" for w, n in counts.most_common())
    noun = "task" if len(tasks) == 1 else "tasks"
    return f"{len(tasks)} {noun}" + (f": {parts}" if parts else "")


def _sections(lines: Sequence[str]) -> list[dict[str, Any]]:
    """``lines`` packed into sections of at most Slack's section text."""
    blocks: list[dict[str, Any]] = []
    chunk: list[str] = []
    size = 0
    for line in lines:
        line = _clip(line, render.SECTION_TEXT_LIMIT)
        if chunk and size + len(line) + 1 > render.SECTION_TEXT_LIMIT:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
            chunk, size = [], 0
        chunk.append(line)
        size += len(line) + 1
    if chunk:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(chunk)}})
    return blocks


def task_blocks(tree: WorkflowTree) -> list[dict[str, Any]]:
    """The card's task part: a count of every status, then the task lines."""
    tasks = tree.tasks
    if not tasks:
        return [
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "_no task started yet_"}]}
        ]
    shown = shown_tasks(tasks)
    head = summary(tasks)
    hidden = len(tasks) - len(shown) + tree.unread
    if hidden:
        head += f" (the {hidden} not shown here: `status {tree.execution.id}` or the API)"
    return [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": head}]},
        *_sections([task_line(t) for t in shown]),
    ]


def card(tree: WorkflowTree, *, page_url: str | None = None) -> tuple[str, list[dict[str, Any]]]:
    """The workflow's card: the execution's card (headline, who, parameters, error, Cancel or
    Re-run) with its task lines above the buttons."""
    text, blocks = render.card(tree.execution, page_url=page_url)
    tail = [blocks.pop()] if blocks and blocks[-1].get("type") == "actions" else []
    blocks = [*blocks, *task_blocks(tree), *tail][: render.MAX_BLOCKS]
    return f"{text} ({summary(tree.tasks)})", blocks


def status_tree(tree: WorkflowTree) -> str:
    """``status <id>`` of a workflow: its status line, then its tasks (mrkdwn)."""
    record = tree.execution
    lines = [render.status_line(record) + f" ({summary(tree.tasks)})"]
    error = (record.result or {}).get("error")
    if error and record.status != "completed":
        lines.append(f"error: {error}")
    shown = shown_tasks(tree.tasks)
    for task in shown:
        lines.append(f"  {_tree_line(task)}")
    hidden = len(tree.tasks) - len(shown) + tree.unread
    if hidden:
        lines.append(f"  … {hidden} more (GET /api/v1/executions?parent={record.id})")
    return "\n".join(lines)


def _tree_line(task: TaskRun) -> str:
    line = f"#{task.execution_id} `{label(task)}` ({task.action_ref}): {_state(task)}"
    if task.error and task.status not in ("completed", "running"):
        line += f": {_clip(task.error, LINE_ERROR_CHARS)}"
    return line


def task_move(root_id: int, task: TaskRun) -> str:
    """The terminal's line when a task moves: ``#12 > check: completed in 0.4 s``."""
    line = f"#{root_id} > {label(task)}: {_state(task)}"
    if task.error and task.status not in ("completed", "running"):
        line += f": {_clip(task.error, LINE_ERROR_CHARS)}"
    return line


def task_failed(
    root_id: int, task: TaskRun, execution: Execution
) -> tuple[str, list[dict[str, Any]]]:
    """The message in the workflow card's thread for a task that failed, timed out or was
    abandoned: which task, how, the error, and its output."""
    emoji = render.EMOJI.get(task.status, ":x:")
    head = (
        f"{emoji} Task `{render.escape(label(task))}` (#{task.execution_id} "
        f"`{task.action_ref}`) of #{root_id} ended *{task.status}*{duration_text(task.duration_ms)}"
    )
    if task.error:
        head += f": {render.escape(task.error)}"
    head = _clip_keep_lines(head, render.SECTION_TEXT_LIMIT)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": head}}]
    shown = render.output(execution, attached=False)
    if shown is not None:
        blocks.extend(shown[1])
    text = f"Task {label(task)} of #{root_id} ended {task.status}"
    return text, blocks[: render.MAX_BLOCKS]


def _clip_keep_lines(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


#: Characters of a workflow's output shown in its thread (JSON, under the section limit).
OUTPUT_CHARS = 2800


def output(
    record: Execution, *, page_url: str | None = None
) -> tuple[str, list[dict[str, Any]]] | None:
    """The thread reply of a workflow that ended: its ``output`` (the result's ``data``) as
    JSON; None when it has none."""
    data = (record.result or {}).get("data")
    if data is None or data == {}:
        return None
    body = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    fenced = render.escape(body).replace("```", "\u02cb\u02cb\u02cb")
    cut = len(fenced) > OUTPUT_CHARS
    if cut:
        end = fenced.rfind("\n", 0, OUTPUT_CHARS)
        fenced = fenced[: end + 1 if end > 0 else OUTPUT_CHARS] + "…"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*output*\n```{fenced}```"}}
    ]
    if cut:
        note = f"the output was cut: the whole of it is at GET /api/v1/executions/{record.id}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": note}]})
    link = render.page_link(page_url)
    if link:
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": link}]})
    return f"Output of #{record.id}", blocks
