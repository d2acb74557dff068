"""A batch through signed Slack requests (HTTP mode, against the local stand-in of Slack):
``/attune run ... --each`` and one action per line are acked within Slack's budget with one
reply listing a row per execution; each execution runs and posts its card."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.conftest import Server
from tests.scenario.harness import SLACK_ACK_BUDGET_S, running_server, scenario_env
from tests.scenario.slack_standin import SlackStandIn
from tests.trust.support import SlackUser, executions_of, new_id, slash, wait_status
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

OPERATOR = SlackUser(new_id("U"), "olivia")
ROW = re.compile(r"^#(\d+) `core\.echo` `message=(\S+)`$")


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("batch-slack")
    env = scenario_env(tmp, standin, ATTUNE_SLACK_DEFAULT_ROLE="operator")
    async with running_server("serve", env, tmp) as srv:
        yield srv


@pytest.mark.parametrize(
    "text",
    [
        "run core.echo message={m}-a,{m}-b,{m}-c --each message",
        "run core.echo message={m}-a\ncore.echo message={m}-b\nrun core.echo message={m}-c",
    ],
)
async def test_a_batch_is_one_reply_with_a_row_per_execution(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession, text: str
) -> None:
    marker, chan = new_id("m"), new_id("C")
    reply = await slash(server.base_url, standin, OPERATOR, chan, text.format(m=marker))
    assert reply.status == 200, reply.body
    assert reply.elapsed_s < SLACK_ACK_BUDGET_S
    assert reply.body["response_type"] == "ephemeral"
    lines = reply.text.splitlines()
    assert lines[0] == "Batch of 3 queued:", reply.text
    rows = [ROW.match(line) for line in lines[1:]]
    assert all(rows), reply.text
    ids = [int(row.group(1)) for row in rows if row]
    assert [row.group(2) for row in rows if row] == [f"{marker}-{x}" for x in "abc"]
    runs = [r for r in await executions_of(api, "core.echo") if marker in str(r["config"])]
    assert sorted(r["id"] for r in runs) == sorted(ids)
    for execution_id in ids:
        assert await wait_status(api, execution_id, {"completed", "failed"}) == "completed"
        await eventually(
            lambda i=execution_id: standin.find(
                "chat.postMessage",
                target=chan,
                ok=True,
                where=lambda c: re.search(rf"#{i}\b", c.all_text()) is not None,
            ),
            f"the card of #{execution_id} in the channel",
        )


async def test_a_bad_line_runs_nothing(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    marker, chan = new_id("m"), new_id("C")
    text = f"run core.echo message={marker}\nexamples.wait seconds=soon"
    reply = await slash(server.base_url, standin, OPERATOR, chan, text)
    assert reply.status == 200, reply.body
    assert reply.text.startswith("Invalid parameters: executions[1].parameters: "), reply.text
    runs = [r for r in await executions_of(api, "core.echo") if marker in str(r["config"])]
    assert runs == []
