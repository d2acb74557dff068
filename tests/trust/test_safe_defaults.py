"""Safe defaults (issue 12, hole 11): a Slack user nobody listed is a viewer, not an operator,
and the ``none`` role may do nothing, in Slack and over the API.

One ``attune serve`` (SQLite, in-process broker, Slack against the local stand-in) with the
default ``ATTUNE_SLACK_DEFAULT_ROLE`` (not set); Olivia is listed as an operator and Nora as
``none``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from bot.render import CANCEL_ACTION
from tests.e2e.conftest import Server, client, run_cli
from tests.scenario.harness import running_server, scenario_env
from tests.scenario.slack_standin import SlackStandIn
from tests.trust.support import (
    SlackUser,
    answer_at,
    audit,
    call,
    cancel_quietly,
    click,
    executed,
    executions_of,
    inline_action,
    new_click,
    new_id,
    slash,
    status_of,
)

pytestmark = pytest.mark.e2e

OPERATOR = SlackUser(new_id("U"), "olivia")
NOBODY = SlackUser(new_id("U"), "nora")
UNLISTED = SlackUser(new_id("U"), "ursula")


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-defaults")
    env = scenario_env(
        tmp,
        standin,
        ATTUNE_SLACK_ROLES=json.dumps({OPERATOR.id: "operator", NOBODY.id: "none"}),
        ATTUNE_SLACK_DEFAULT_ROLE="",  # "" removes it: the shipped default
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


async def test_an_unlisted_slack_user_is_a_viewer(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    chan = new_id("C")
    before = len(await executions_of(api, "core.echo"))
    refused = await slash(server.base_url, standin, UNLISTED, chan, "run core.echo message=x")
    assert refused.status == 200, refused.body
    assert refused.body["response_type"] == "ephemeral"
    assert refused.text.startswith("Not allowed: "), refused.text
    assert "viewer" in refused.text
    assert len(await executions_of(api, "core.echo")) == before
    assert not standin.find("chat.postMessage", target=chan)

    # A viewer still reads: the action list answers.
    listing = await slash(server.base_url, standin, UNLISTED, chan, "actions core")
    assert "core.echo" in listing.text, listing.text

    # A user listed as operator runs.
    ran = await slash(server.base_url, standin, OPERATOR, chan, "run core.echo message=x")
    assert ran.text.startswith("Execution #"), ran.text
    assert len(await executions_of(api, "core.echo")) == before + 1


@pytest.mark.parametrize("text", ["help", "actions", "status 1", "run core.echo message=x"])
async def test_the_none_role_is_told_it_has_no_access(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession, text: str
) -> None:
    chan = new_id("C")
    before = len(await executions_of(api, "core.echo"))
    reply = await slash(server.base_url, standin, NOBODY, chan, text)
    assert reply.status == 200, reply.body
    assert reply.body["response_type"] == "ephemeral"
    assert reply.text.startswith("You have no access to Attune"), reply.text
    assert NOBODY.id in reply.text  # what to add
    assert "ATTUNE_SLACK_ROLES" in reply.text  # where
    assert "core.echo" not in reply.text  # nothing is shown
    assert len(await executions_of(api, "core.echo")) == before
    assert not standin.find("chat.postMessage", target=chan)
    entries = await audit(api, actor=NOBODY.id, outcome="denied")
    assert any(e["channel"] == chan and e["role"] == "none" for e in entries), entries


async def test_the_none_role_cannot_press_buttons(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    slow = await inline_action(api, "slow", "wait", "sleep 30")
    record = await executed(api, slow)
    try:
        the_click = new_click(NOBODY, new_id("C"), CANCEL_ACTION, str(record["id"]))
        answer = await click(server.base_url, standin, the_click)
        assert answer.status == 200, answer.body
        text = await answer_at(standin, the_click.response_key)
        assert text.startswith("You have no access to Attune"), text
        assert await status_of(api, record["id"]) not in {"canceling", "cancelled"}
    finally:
        await cancel_quietly(api, record["id"])


async def test_an_api_user_with_the_none_role_reaches_only_their_own_account(
    server: Server,
) -> None:
    login = f"nora-{new_id('x').lower()}"
    code, out, err = await run_cli(
        ["user", "create", login, "--role", "none"], server.env, server.tmp
    )
    assert code == 0, err
    password = out.strip().splitlines()[-1]  # alone on the last line
    async with client(server.base_url) as anon:
        logged_in = await call(
            anon, "POST", "/auth/login", json={"login": login, "password": password}
        )
    assert logged_in.status == 200, logged_in.body
    async with client(server.base_url, logged_in.data["access_token"]) as nora:
        me = await call(nora, "GET", "/auth/me")
        assert me.status == 200, me.body
        assert me.data["role"] == "none"
        assert me.data["effective_permissions"] == []
        actions = await call(nora, "GET", "/api/v1/actions")
        assert actions.status == 403, actions.body
        assert "attune user set-role" in actions.error
        run = await call(
            nora, "POST", "/api/v1/executions/execute", json={"action_ref": "core.echo"}
        )
        assert run.status == 403, run.body
