"""A re-run never lends someone's secret values to someone else: ``rerun <id>`` of an execution
whose secret parameters were set is refused to anyone but its requester (or an admin).

One ``attune serve`` (SQLite, in-process broker, Slack against the local stand-in); every Slack
user is an operator by default.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.e2e.conftest import Server
from tests.scenario.harness import running_server, scenario_env
from tests.scenario.slack_standin import SlackStandIn
from tests.trust.support import (
    SlackUser,
    audit,
    executions_of,
    inline_action,
    new_id,
    slash,
    wait_status,
)

pytestmark = pytest.mark.e2e

OWNER = SlackUser(new_id("U"), "olivia")
OTHER = SlackUser(new_id("U"), "mallory")
SECRET = "owners-s3cret-value"


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-rerun")
    env = scenario_env(
        tmp, standin, ATTUNE_SLACK_ROLES=json.dumps({}), ATTUNE_SLACK_DEFAULT_ROLE="operator"
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


async def run_in_chat(server: Server, standin: SlackStandIn, user: SlackUser, text: str) -> str:
    reply = await slash(server.base_url, standin, user, new_id("C"), text)
    assert reply.status == 200, reply.body
    return reply.text


async def test_rerun_of_someone_elses_secret_run_is_refused(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    ref = await inline_action(
        api,
        "vault",
        "use",
        'echo "used $token"',
        parameters={"token": {"type": "string", "secret": True, "required": True}},
    )
    text = await run_in_chat(server, standin, OWNER, f"run {ref} token={SECRET}")
    match = re.match(r"Execution #(\d+)", text)
    assert match, text
    original = int(match.group(1))
    assert await wait_status(api, original, {"completed", "failed"}) == "completed"

    refused = await run_in_chat(server, standin, OTHER, f"rerun {original}")
    assert "only" in refused, refused
    assert OWNER.id in refused, refused
    assert "token" in refused, refused
    assert SECRET not in refused
    assert [r["id"] for r in await executions_of(api, ref)] == [original]
    entries = await audit(api, actor=OTHER.id, verb="rerun")
    assert [e["outcome"] for e in entries] == ["denied"], entries
    assert entries[0]["execution_id"] == original

    # The requester re-runs their own execution, with their secret.
    again = await run_in_chat(server, standin, OWNER, f"rerun {original}")
    assert re.match(r"Execution #\d+", again), again
    assert len(await executions_of(api, ref)) == 2


async def test_rerun_without_secrets_stays_open_to_others(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    text = await run_in_chat(server, standin, OWNER, "run core.echo message=shared")
    match = re.match(r"Execution #(\d+)", text)
    assert match, text
    again = await run_in_chat(server, standin, OTHER, f"rerun {match.group(1)}")
    assert re.match(r"Execution #\d+", again), again
