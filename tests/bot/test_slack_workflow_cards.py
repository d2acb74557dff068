"""One Slack card per workflow run, against the Slack stand-in: task runs post no card of
their own, their news re-renders the workflow's card (edits coalesced and paced), a failed
task's output goes in the card's thread once, and the card's end shows every task."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot import render_workflow
from bot.slack_sink import SlackSink
from bot.slack_workflow_cards import WorkflowCards
from engine.errors import NotFound
from engine.records import Execution, ExecutionFilter, Route, StoredExecution
from engine.workflows.run_tree import WorkflowTrees
from tests.bot.test_slack_sink import Messages, delivery
from tests.scenario.harness import new_channel
from tests.scenario.slack_standin import Call, SlackStandIn

WHEN = datetime(2026, 11, 29, tzinfo=UTC)
ROOT = 700
WORKFLOW = "ops.runbook"


class Rows:
    """Executions by id, as storage returns them."""

    def __init__(self) -> None:
        self.by_id: dict[int, StoredExecution] = {}

    def put(
        self,
        eid: int,
        status: str,
        *,
        task: str | None = None,
        index: int | None = None,
        parent: int | None = None,
        action_ref: str = "core.noop",
        **result: Any,
    ) -> Execution:
        ended = status in {"completed", "failed", "timeout", "abandoned", "cancelled"}
        row = StoredExecution(
            id=eid, action_ref=action_ref, status=status, config={}, secrets=None,
            parent=parent, enforcement=None,
            executor={"identity": "U1", "source": "slack", "user_id": "U1"},
            result={"duration_ms": 300, "stdout": "", "stderr": "", **result} if ended else None,
            timeout_s=60, callback_url=None, chat={"sink": "slack"}, worker=None,
            heartbeat_at=None, pid=None, pid_start=None, idempotency_key=None, created=WHEN,
            updated=WHEN, started_at=WHEN,
            finished_at=WHEN + timedelta(milliseconds=300) if ended else None,
            workflow_task=None if task is None else
            {"workflow_execution": 1, "task_name": task, "task_index": index},
        )  # fmt: skip
        self.by_id[eid] = row
        return row.record()

    async def get(self, execution_id: int) -> StoredExecution | None:
        return self.by_id.get(execution_id)

    async def list(
        self, where: ExecutionFilter, *, limit: int, offset: int
    ) -> list[StoredExecution]:
        found = [r for r in self.by_id.values() if r.parent == where.parent]
        return sorted(found, key=lambda r: -r.id)[offset : offset + limit]

    async def count(self, where: ExecutionFilter) -> int:
        return len([r for r in self.by_id.values() if r.parent == where.parent])


class Reader:
    def __init__(self, rows: Rows) -> None:
        self.rows = rows

    async def get(self, execution_id: int) -> Execution:
        row = self.rows.by_id.get(execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        return row.record()


async def is_workflow(action_ref: str) -> bool:
    return action_ref == WORKFLOW


class Rig:
    def __init__(self, standin: SlackStandIn) -> None:
        self.standin = standin
        self.rows = Rows()
        self.messages = Messages()
        self.client = AsyncWebClient(token="xoxb-test", base_url=standin.api_url)
        self.channel = new_channel()
        trees = WorkflowTrees(self.rows, is_workflow)
        self.cards = WorkflowCards(
            self.client,
            self.messages,
            trees,
            Reader(self.rows),
            lambda tree: render_workflow.card(tree),
            interval_s=0.2,
        )
        self.sink = SlackSink(self.client, self.messages, workflows=trees, cards=self.cards)

    async def send(self, record: Execution, event: str) -> None:
        route = Route({"sink": "slack", "channel": self.channel}, None)
        await self.sink.deliver(delivery(record, event), record, route)

    async def task(self, eid: int, name: str, status: str, **kw: Any) -> None:
        """A task run moves through its events up to ``status``."""
        events = {"requested": ["created"], "running": ["created", "started"]}
        for event, now in zip(
            events.get(status, ["created", "started", "completed"]),
            ["requested", "running", status],
            strict=False,
        ):
            record = self.rows.put(eid, now, task=name, parent=ROOT, **kw)
            await self.send(record, event)

    def calls(self, method: str) -> list[Call]:
        return [c for c in self.standin.find(method, target=self.channel) if c.ok]

    def card_ts(self) -> str:
        ts = self.messages.rows[ROOT].message_id
        assert ts
        return ts

    def thread(self) -> list[Call]:
        ts = self.card_ts()
        return [c for c in self.calls("chat.postMessage") if c.params.get("thread_ts") == ts]


@pytest.fixture
async def rig(standin: SlackStandIn) -> AsyncIterator[Rig]:
    r = Rig(standin)
    try:
        yield r
    finally:
        await r.cards.stop()
        if r.client.session is not None:
            await r.client.session.close()


async def test_task_news_edits_the_one_workflow_card_coalesced(rig: Rig) -> None:
    await rig.send(rig.rows.put(ROOT, "requested", action_ref=WORKFLOW), "created")
    await rig.send(rig.rows.put(ROOT, "running", action_ref=WORKFLOW), "started")
    for i in range(10):
        await rig.task(800 + i, f"step{i}", "completed")
    await rig.cards.join()

    cards = [c for c in rig.calls("chat.postMessage") if not c.params.get("thread_ts")]
    assert len(cards) == 1, "task runs post no card of their own"
    assert "no task started yet" in cards[0].all_text()
    assert set(rig.messages.rows) == {ROOT}, "task runs have no card rows"
    edits = rig.calls("chat.update")
    # The workflow's started, then 30 task events in at most a few paced edits.
    assert 2 <= len(edits) <= 4, [e.all_text() for e in edits]
    assert rig.cards.edits == len(edits) - 1
    last = edits[-1].all_text()
    assert "10 tasks: 10 completed" in last
    for i in range(10):
        assert f"`step{i}` completed in 300 ms" in last
    assert not rig.thread(), "completed tasks post nothing in the thread"


async def test_a_failed_task_puts_its_output_in_the_thread_once(rig: Rig) -> None:
    await rig.send(rig.rows.put(ROOT, "running", action_ref=WORKFLOW), "created")
    await rig.task(801, "check", "failed", stderr="connection refused\n", error="exit 7")
    failed = rig.rows.by_id[801].record()
    await rig.send(failed, "completed")  # the outbox delivers it again (a retry)
    thread = rig.thread()
    assert len(thread) == 1, [c.all_text() for c in thread]
    said = thread[0].all_text()
    assert "Task `check` (#801 `core.noop`) of #700 ended *failed*" in said
    assert "exit 7" in said
    assert "connection refused" in said
    await rig.cards.join()
    assert ":x: `check` failed in 300 ms: exit 7" in rig.calls("chat.update")[-1].all_text()


async def test_task_news_before_the_card_is_posted_shows_on_its_first_post(rig: Rig) -> None:
    rig.rows.put(ROOT, "running", action_ref=WORKFLOW)
    await rig.task(802, "check", "running")
    assert not rig.calls("chat.*"), "nothing to edit yet"
    await rig.send(rig.rows.by_id[ROOT].record(), "created")
    await rig.cards.join()
    posted = rig.calls("chat.postMessage")
    assert len(posted) == 1
    assert ":gear: `check` running" in posted[0].all_text()
    assert not rig.calls("chat.update"), "the card already shows it"


async def test_the_workflows_end_shows_every_task_and_no_edit_follows(rig: Rig) -> None:
    await rig.send(rig.rows.put(ROOT, "running", action_ref=WORKFLOW), "created")
    await rig.task(803, "check", "completed")
    await rig.task(804, "restart", "completed")
    done = rig.rows.put(ROOT, "completed", action_ref=WORKFLOW)
    await rig.send(done, "completed")
    # A task's news handled after the end (another listener's, a retry) edits nothing.
    await rig.send(rig.rows.by_id[804].record(), "completed")
    await rig.cards.join()
    final = rig.calls("chat.update")[-1]
    assert "2 tasks: 2 completed" in final.all_text()
    assert "`restart` completed" in final.all_text()
    actions = [b for b in final.params["blocks"] if b["type"] == "actions"]
    assert actions[0]["elements"][0]["text"]["text"] == "Re-run"


async def test_an_ordinary_run_keeps_its_own_card(rig: Rig) -> None:
    record = rig.rows.put(900, "running", action_ref="ops.deploy")
    await rig.send(record, "created")
    await rig.send(replace(rig.rows.put(900, "completed", stdout="ok\n")), "completed")
    posted = rig.calls("chat.postMessage")
    assert len(posted) == 2  # its card and its output, as before
    assert "tasks" not in posted[0].all_text()


async def test_an_edit_on_its_way_when_the_workflow_ends_is_followed_by_the_end(
    rig: Rig,
) -> None:
    """The workflow ends while a task's edit is being made (another process made the final
    edit meanwhile): the card is edited again to show the end, and this process's own final
    edit, finding the card showing it, makes no call."""
    await rig.send(rig.rows.put(ROOT, "running", action_ref=WORKFLOW), "created")
    await rig.task(805, "check", "running")
    rig.rows.put(805, "completed", task="check", parent=ROOT)

    original = rig.client.chat_update

    async def update_then_end(**kwargs: Any) -> Any:
        answer = await original(**kwargs)
        rig.rows.put(ROOT, "completed", action_ref=WORKFLOW)  # ended meanwhile
        return answer

    rig.cards.client.chat_update = update_then_end  # type: ignore[method-assign]
    rig.cards.touch(ROOT, rig.channel)
    await rig.cards.join()
    edits = rig.calls("chat.update")
    assert [("running" in e.all_text(), "completed" in e.all_text()) for e in edits][-1] == (
        False,
        True,
    )
    assert "`check` completed" in edits[-1].all_text()
    await rig.send(rig.rows.by_id[ROOT].record(), "completed")
    assert len(rig.calls("chat.update")) == len(edits), "no edit that shows the same again"


async def test_edits_keep_the_channels_pace_across_quiet_moments(rig: Rig) -> None:
    """News arriving one at a time (each after the last edit was made) is still paced: the
    second edit waits for the channel's interval after the first."""
    await rig.send(rig.rows.put(ROOT, "running", action_ref=WORKFLOW), "created")
    for i in range(3):
        await rig.task(810 + i, f"step{i}", "completed")
        await rig.cards.join()
    edits = rig.calls("chat.update")
    assert len(edits) == 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(edits)]
    assert all(gap >= rig.cards.interval_s * 0.95 for gap in gaps), gaps


async def test_a_starting_process_rerenders_the_cards_of_running_workflows(rig: Rig) -> None:
    """News that came while no process was up (a restart) shows at once."""
    await rig.send(rig.rows.put(ROOT, "running", action_ref=WORKFLOW), "created")
    rig.rows.put(806, "running", task="ask", parent=ROOT)  # its news was lost with a process
    rig.rows.put(901, "running", action_ref="ops.deploy")  # not a workflow
    await rig.send(rig.rows.by_id[901].record(), "created")
    running = [rig.messages.rows[ROOT], rig.messages.rows[901]]

    async def of_statuses(sink: str, statuses: Any, limit: int) -> list[Any]:
        return running

    rig.messages.of_statuses = of_statuses  # type: ignore[method-assign]
    fresh = WorkflowCards(
        rig.client, rig.messages, rig.cards.trees, Reader(rig.rows), render_workflow.card
    )
    try:
        assert await fresh.resume() == 1
        await fresh.join()
    finally:
        await fresh.stop()
    (edit,) = rig.calls("chat.update")
    assert ":gear: `ask` running" in edit.all_text()
