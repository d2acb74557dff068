"""Workflows in Slack, end to end through signed requests against the Slack stand-in: one card
per workflow run with a line per task, edited in place as the tasks move (no card of a task's
own); a ``core.ask`` step answered with a signed button click, the answer used by a later task;
a failed task's output in the card's thread; Cancel on the card cancels the workflow;
``status <id>`` shows the tree.

One ``attune serve`` (SQLite, in-process broker and worker) for the module, its Slack Web API
pointed at the stand-in; each test has its own channel and workflow.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import aiohttp
import pytest

from bot.render import CANCEL_ACTION
from tests.e2e.conftest import Server
from tests.scenario.harness import (
    API_WAIT_S,
    admin_api,
    new_channel,
    new_user,
    running_server,
    scenario_env,
    settle,
    slash,
)
from tests.scenario.slack_standin import Call, SlackStandIn
from tests.scenario.test_slack_inquiries import buttons, click, question
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-workflows")
    async with running_server("serve", scenario_env(tmp, standin), tmp) as srv:
        yield srv


@pytest.fixture
async def api(server: Server) -> AsyncIterator[aiohttp.ClientSession]:
    async with admin_api(server.base_url) as session:
        yield session


async def save_workflow(
    api: aiohttp.ClientSession, tasks: list[dict[str, Any]], **extra: Any
) -> str:
    """A workflow in a new pack; its ref."""
    pack = f"wf{uuid.uuid4().hex[:8]}"
    async with api.post("/api/v1/packs", json={"ref": pack, "label": "workflows"}) as resp:
        assert resp.status == 201, await resp.text()
    body = {
        "ref": f"{pack}.runbook",
        "pack_ref": pack,
        "label": "runbook",
        "version": "1.0.0",
        "definition": {"tasks": tasks, **extra},
    }
    async with api.post("/api/v1/workflows", json=body) as resp:
        assert resp.status == 201, await resp.text()
    return f"{pack}.runbook"


def cards(standin: SlackStandIn, channel: str) -> list[Call]:
    """Messages posted in the channel itself (not in a thread)."""
    return [
        c
        for c in standin.find("chat.postMessage", target=channel)
        if c.ok and not c.params.get("thread_ts") and "Inquiry #" not in c.params.get("text", "")
    ]


def card_ts(standin: SlackStandIn, channel: str) -> str:
    (card,) = cards(standin, channel)
    assert isinstance(card.response, dict)
    return str(card.response["ts"])


async def card_showing(standin: SlackStandIn, channel: str, *texts: str) -> Call:
    """The card's latest picture, once it shows every one of ``texts``."""

    def latest() -> Call | None:
        posted = cards(standin, channel)
        if not posted:
            return None
        ts = card_ts(standin, channel)
        edits = [
            c
            for c in standin.find("chat.update", target=channel)
            if c.ok and c.params.get("ts") == ts
        ]
        last = edits[-1] if edits else posted[0]
        return last if all(t in last.all_text() for t in texts) else None

    return await eventually(latest, f"the card showing {texts}", API_WAIT_S)


def thread(standin: SlackStandIn, channel: str) -> list[Call]:
    ts = card_ts(standin, channel)
    return [
        c
        for c in standin.find("chat.postMessage", target=channel)
        if c.ok and c.params.get("thread_ts") == ts
    ]


async def test_an_approval_step_answered_in_slack_moves_the_card_and_feeds_a_later_task(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel, asker, approver = new_channel(), new_user(), new_user()
    ref = await save_workflow(
        api,
        [
            {
                "name": "check",
                "action": "core.echo",
                "input": {"message": "healthy"},
                "on_success": "ask",
            },
            {
                "name": "ask",
                "action": "core.ask",
                "input": {"prompt": "Restart web?", "assigned_to": approver},
                "next": [
                    {
                        "when": "{{ succeeded() and result().data.response.approved }}",
                        "do": ["restart"],
                    }
                ],
            },
            {
                "name": "restart",
                "action": "core.echo",
                "input": {
                    "message": "restarting, approved by {{ task.ask.result.data.responded_by }}"
                },
            },
        ],
        output_map={"said": "{{ task.restart.result.stdout | trim }}"},
    )
    reply = await slash(server.base_url, standin, f"run {ref}", channel=channel, user=asker)
    workflow_id = reply.execution_id

    asked = await question(standin, channel)
    assert asked.params.get("thread_ts") == card_ts(standin, channel)  # under the workflow's card
    await card_showing(standin, channel, "`check` completed", "`ask` running")

    yes = next(b for b in buttons(asked) if b["text"]["text"] == "Yes")
    await click(server, standin, approver, channel, yes)
    record, _ = await settle(api, workflow_id)
    assert record["status"] == "completed", record
    assert record["result"]["data"] == {"said": f"restarting, approved by <@{approver}>"}

    final = await card_showing(
        standin, channel, "3 tasks: 3 completed", "`restart` completed", "Re-run"
    )
    assert f"#{workflow_id}" in final.all_text()
    assert len(cards(standin, channel)) == 1, "the tasks have no card of their own"
    said = [
        c for c in thread(standin, channel) if c.params.get("text") == f"Output of #{workflow_id}"
    ]
    assert len(said) == 1
    assert "approved by" in said[0].all_text()

    status = await slash(server.base_url, standin, f"status {workflow_id}", user=asker)
    lines = status.text.splitlines()
    assert lines[0].startswith(f"#{workflow_id} {ref}: completed"), status.text
    assert "3 tasks: 3 completed" in lines[0]
    assert [line.split("`")[1] for line in lines[1:]] == ["check", "ask", "restart"]
    assert all("completed in" in line for line in lines[1:])


async def test_a_failed_task_has_its_output_in_the_thread(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    ref = await save_workflow(
        api,
        [
            {"name": "risky", "action": "examples.fail", "on_failure": "report"},
            {"name": "report", "action": "core.echo", "input": {"message": "rolled back"}},
        ],
    )
    reply = await slash(server.base_url, standin, f"run {ref}", channel=channel)
    record, _ = await settle(api, reply.execution_id)
    assert record["status"] == "completed", record  # the failure was handled
    await card_showing(standin, channel, ":x: `risky` failed", "`report` completed")
    failed = [c for c in thread(standin, channel) if "Task `risky`" in c.all_text()]
    assert len(failed) == 1
    assert "ended *failed*" in failed[0].all_text()
    assert "something went wrong" in failed[0].all_text()


async def test_cancel_on_the_card_cancels_the_workflow(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel, user = new_channel(), new_user()
    ref = await save_workflow(
        api,
        [
            {"name": "nap", "action": "core.sleep", "input": {"seconds": 1}, "on_success": "after"},
            {"name": "after", "action": "core.echo", "input": {"message": "never"}},
        ],
    )
    reply = await slash(server.base_url, standin, f"run {ref}", channel=channel, user=user)
    workflow_id = reply.execution_id
    shown = await card_showing(standin, channel, "`nap` running")
    cancel = next(b for b in buttons(shown) if b["action_id"] == CANCEL_ACTION)
    assert cancel["value"] == str(workflow_id)
    await click(server, standin, user, channel, cancel)
    record, _ = await settle(api, workflow_id)
    assert record["status"] == "cancelled", record
    final = await card_showing(standin, channel, "cancelled", "Re-run")
    assert "`after`" not in final.all_text()


async def test_many_quick_tasks_edit_the_card_a_few_times_within_slacks_pace(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    count = 30
    tasks: list[dict[str, Any]] = [
        {"name": f"s{i:02d}", "action": "core.noop"}
        | ({"on_success": f"s{i + 1:02d}"} if i + 1 < count else {})
        for i in range(count)
    ]
    ref = await save_workflow(api, tasks)
    reply = await slash(server.base_url, standin, f"run {ref}", channel=channel)
    record, _ = await settle(api, reply.execution_id)
    assert record["status"] == "completed", record
    await card_showing(standin, channel, f"{count} tasks: {count} completed")
    ts = card_ts(standin, channel)
    edits = [c for c in standin.find("chat.update", target=channel) if c.params.get("ts") == ts]
    # 90 task events; the run takes a second or two: about one edit a second, plus the
    # workflow's own started and completed.
    spent_s = (record_time(record["updated"]) - record_time(record["created"])).total_seconds()
    assert 1 <= len(edits) <= 4 + spent_s, (len(edits), spent_s)
    assert len(cards(standin, channel)) == 1


def record_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
