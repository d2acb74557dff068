"""Trust through Slack (HTTP mode, against the local stand-in of Slack): roles by Slack user id,
confirmations with Confirm/Abort buttons, and the Cancel/Re-run buttons of status cards.

One ``attune serve`` (SQLite, in-process broker) serves the module. Vera's user id is mapped to
the viewer role; everyone else gets the default role, operator. Button clicks are posted to
``/slack/events`` as Slack posts them: a form field ``payload`` holding a ``block_actions``
JSON document, signed like a slash command; the app answers through the payload's
``response_url``, which points at the stand-in.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.render import ABORT_ACTION, CANCEL_ACTION, CONFIRM_ACTION, RERUN_ACTION
from tests.e2e.conftest import Server
from tests.scenario.harness import (
    SLACK_ACK_BUDGET_S,
    admin_api,
    running_server,
    scenario_env,
)
from tests.scenario.slack_standin import Call, SlackStandIn
from tests.trust.support import (
    SlackUser,
    answer_at,
    answers,
    audit,
    buttons,
    call,
    cancel_quietly,
    click,
    executions_of,
    inline_action,
    new_click,
    new_id,
    slash,
    wait_status,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

VIEWER = SlackUser(new_id("U"), "vera")
OPERATOR = SlackUser(new_id("U"), "olivia")
OTHER = SlackUser(new_id("U"), "mallory")
CODE = re.compile(r"^[0-9a-f]{8}$")
#: How long a test waits to be sure something does NOT happen (a retried click acting).
QUIET_S = 1.0


def slack_env(tmp: Path, standin: SlackStandIn, **overrides: str) -> dict[str, str]:
    return scenario_env(
        tmp,
        standin,
        ATTUNE_SLACK_ROLES=json.dumps({VIEWER.id: "viewer"}),
        ATTUNE_SLACK_DEFAULT_ROLE="operator",
        **overrides,
    )


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("trust-slack")
    async with running_server("serve", slack_env(tmp, standin), tmp) as srv:
        yield srv


async def confirm_action(api: aiohttp.ClientSession) -> str:
    """An inline action with ``confirm: true`` (created by the admin over the API)."""
    return await inline_action(
        api,
        "risky",
        "deploy",
        'cat > /dev/null; echo "deployed"',
        parameters={"target": {"type": "string", "default": "web1"}},
        confirm=True,
    )


def channel() -> str:
    return new_id("C")


def cards(standin: SlackStandIn, chan: str, execution_id: int) -> list[Call]:
    """Top-level posts in ``chan`` about execution ``execution_id``."""
    return standin.find(
        "chat.postMessage",
        target=chan,
        ok=True,
        where=lambda c: (
            not c.params.get("thread_ts")
            and re.search(rf"#{execution_id}\b", c.all_text()) is not None
        ),
    )


async def ask(
    base_url: str, standin: SlackStandIn, user: SlackUser, chan: str, text: str
) -> tuple[str, str]:
    """Type a command of a confirm action; return (the code, the reply's text)."""
    reply = await slash(base_url, standin, user, chan, text)
    assert reply.status == 200, reply.body
    assert reply.elapsed_s < SLACK_ACK_BUDGET_S
    assert reply.body["response_type"] == "ephemeral"
    found = buttons(reply.body.get("blocks"))
    assert set(found) == {CONFIRM_ACTION, ABORT_ACTION}, reply.body
    code = found[CONFIRM_ACTION]
    assert CODE.match(code), code
    assert found[ABORT_ACTION] == code
    labels = [e["text"]["text"] for b in reply.body["blocks"] for e in b.get("elements") or []]
    assert labels == ["Confirm", "Abort"], labels
    return code, reply.text


async def press(
    server: Server, standin: SlackStandIn, user: SlackUser, chan: str, action_id: str, value: str
) -> str:
    """Click a button; the HTTP answer is a fast 200; return what the response URL got."""
    the_click = new_click(user, chan, action_id, value)
    answer = await click(server.base_url, standin, the_click)
    assert answer.status == 200, answer.body
    assert answer.elapsed_s < SLACK_ACK_BUDGET_S, f"ack took {answer.elapsed_s:.2f} s"
    return await answer_at(standin, the_click.response_key)


# -- (a) roles --------------------------------------------------------------------------------


async def test_viewer_is_refused_and_nothing_runs(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    chan = channel()
    before = len(await executions_of(api, "core.echo"))
    reply = await slash(server.base_url, standin, VIEWER, chan, "run core.echo message=x")
    assert reply.status == 200, reply.body
    assert reply.body["response_type"] == "ephemeral"
    assert reply.text.startswith("Not allowed: "), reply.text
    assert "'run'" in reply.text
    assert "core.echo" in reply.text
    assert "viewer" in reply.text
    assert len(await executions_of(api, "core.echo")) == before
    assert not standin.find("chat.postMessage", target=chan)

    entries = await audit(api, actor=VIEWER.id, outcome="denied")  # Slack users by user id
    entry = next(e for e in entries if e["channel"] == chan)
    assert entry["verb"] == "run"
    assert entry["target"] == "core.echo"
    assert entry["role"] == "viewer"
    assert entry["source"] == "slack"

    # The same command from an operator (the default role) runs.
    ok = await slash(server.base_url, standin, OPERATOR, chan, "run core.echo message=x")
    assert ok.text.startswith("Execution #"), ok.text


# -- (b) confirmations ------------------------------------------------------------------------


async def test_confirm_button_runs_only_for_the_requester_and_only_once(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    ref = await confirm_action(api)
    chan = channel()
    code, text = await ask(server.base_url, standin, OPERATOR, chan, f"run {ref} target=web7")
    assert f"confirm {code}" in text
    assert await executions_of(api, ref) == [], "it ran before it was confirmed"

    # Someone else's click is refused.
    refused = await press(server, standin, OTHER, chan, CONFIRM_ACTION, code)
    assert f"only <@{OPERATOR.id}> (or an admin) can confirm" in refused, refused
    assert await executions_of(api, ref) == []

    # The requester's click runs it.
    mine = new_click(OPERATOR, chan, CONFIRM_ACTION, code)
    answer = await click(server.base_url, standin, mine)
    assert answer.status == 200
    assert answer.elapsed_s < SLACK_ACK_BUDGET_S
    queued = await answer_at(standin, mine.response_key)
    match = re.match(r"Execution #(\d+) queued", queued)
    assert match, queued
    execution_id = int(match.group(1))
    runs = await executions_of(api, ref)
    assert [r["id"] for r in runs] == [execution_id]
    assert runs[0]["config"] == {"target": "web7"}
    assert runs[0]["requester"]["identity"] == OPERATOR.id
    assert runs[0]["requester"]["user_name"] == OPERATOR.name
    assert await wait_status(api, execution_id, {"completed", "failed"}) == "completed"
    card = await eventually(lambda: cards(standin, chan, execution_id), "the card in the channel")
    assert ref in card[0].all_text()

    # Slack delivers the same click again: it does not act a second time.
    retry = await click(server.base_url, standin, mine, retry_num=1)
    assert retry.status == 200
    await asyncio.sleep(QUIET_S)
    assert len(await executions_of(api, ref)) == 1
    assert len(answers(standin, mine.response_key)) == 1, "the retried click was answered"
    # A fresh click on the same (used) code is told so, and runs nothing.
    again = await press(server, standin, OPERATOR, chan, CONFIRM_ACTION, code)
    assert "already confirmed" in again, again
    assert len(await executions_of(api, ref)) == 1

    entries = await audit(api, actor=OPERATOR.id, verb="confirm")
    assert [e["outcome"] for e in entries if e["detail"] == f"code {code}"] == ["accepted"]
    denied = await audit(api, actor=OTHER.id, verb="confirm", outcome="denied")
    assert any(code in (e["detail"] or "") for e in denied), denied


async def test_abort_button_runs_nothing(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    ref = await confirm_action(api)
    chan = channel()
    code, _ = await ask(server.base_url, standin, OPERATOR, chan, f"run {ref}")
    aborted = await press(server, standin, OPERATOR, chan, ABORT_ACTION, code)
    assert aborted.startswith("Aborted"), aborted
    assert ref in aborted
    later = await press(server, standin, OPERATOR, chan, CONFIRM_ACTION, code)
    assert "already aborted" in later, later
    assert await executions_of(api, ref) == []
    assert not standin.find("chat.postMessage", target=chan)


async def test_expired_confirmation_is_refused(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> None:
    ttl_s = 1.0
    tmp = tmp_path_factory.mktemp("trust-slack-ttl")
    env = slack_env(tmp, standin, ATTUNE_CONFIRM_TTL_S=str(ttl_s))
    async with running_server("serve-ttl", env, tmp) as srv, admin_api(srv.base_url) as api:
        ref = await confirm_action(api)
        chan = channel()
        code, _ = await ask(srv.base_url, standin, OPERATOR, chan, f"run {ref}")
        asked = time.monotonic()
        await asyncio.sleep(max(0.0, asked + ttl_s + 0.2 - time.monotonic()))
        late = await press(srv, standin, OPERATOR, chan, CONFIRM_ACTION, code)
        assert "expired" in late, late
        assert await executions_of(api, ref) == []
        assert not standin.find("chat.postMessage", target=chan)


async def test_confirmation_belongs_to_the_user_id_not_the_username(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    ref = await confirm_action(api)
    chan = channel()
    code, _ = await ask(server.base_url, standin, OPERATOR, chan, f"run {ref}")
    namesake = SlackUser(new_id("U"), OPERATOR.name)  # another person, same display handle
    answer = await press(server, standin, namesake, chan, CONFIRM_ACTION, code)
    assert await executions_of(api, ref) == [], f"a namesake confirmed it: {answer}"


# -- (c) card buttons -------------------------------------------------------------------------


async def test_card_cancel_and_rerun_buttons(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    chan = channel()
    before = {r["id"] for r in await executions_of(api, "core.sleep")}
    reply = await slash(server.base_url, standin, OPERATOR, chan, "run core.sleep seconds=30")
    match = re.match(r"Execution #(\d+) queued", reply.text)
    assert match, reply.text
    execution_id = int(match.group(1))
    rerun_ids: set[int] = set()
    try:
        posted = await eventually(lambda: cards(standin, chan, execution_id), "the status card")
        card = posted[0]
        assert buttons(card.blocks) == {CANCEL_ACTION: str(execution_id)}, card.blocks
        await wait_status(api, execution_id, {"running"})

        # A viewer's click on Cancel is refused.
        refused = await press(server, standin, VIEWER, chan, CANCEL_ACTION, str(execution_id))
        assert refused.startswith("Not allowed"), refused
        assert "'cancel'" in refused
        assert (await call(api, "GET", f"/api/v1/executions/{execution_id}")).data[
            "status"
        ] == "running"

        # The operator's click cancels it.
        done = await press(server, standin, OPERATOR, chan, CANCEL_ACTION, str(execution_id))
        assert f"#{execution_id}" in done, done
        assert "cancel" in done, done
        await wait_status(api, execution_id, {"cancelled"})

        # Once it has ended, the card offers Re-run.
        ts = card.response["ts"]  # type: ignore[index]

        def rerun_card() -> list[Call]:
            ups = standin.find("chat.update", target=chan, where=lambda c: c.params["ts"] == ts)
            return [u for u in ups[-1:] if RERUN_ACTION in buttons(u.blocks)]

        final = (await eventually(rerun_card, "the card to offer Re-run"))[0]
        assert buttons(final.blocks) == {RERUN_ACTION: str(execution_id)}
        assert "cancelled" in final.all_text()

        again = new_click(OPERATOR, chan, RERUN_ACTION, str(execution_id))
        answer = await click(server.base_url, standin, again)
        assert answer.status == 200
        assert answer.elapsed_s < SLACK_ACK_BUDGET_S
        queued = await answer_at(standin, again.response_key)
        match = re.match(r"Execution #(\d+) queued", queued)
        assert match, queued
        assert f"re-run of #{execution_id}" in queued
        rerun_ids = (
            {r["id"] for r in await executions_of(api, "core.sleep")} - before - {execution_id}
        )
        assert rerun_ids == {int(match.group(1))}
        rerun = (await call(api, "GET", f"/api/v1/executions/{int(match.group(1))}")).data
        assert rerun["config"] == {"seconds": 30}
        assert rerun["requester"]["identity"] == OPERATOR.id

        # Slack delivers the Re-run click again: no second execution.
        retry = await click(server.base_url, standin, again, retry_num=1)
        assert retry.status == 200
        await asyncio.sleep(QUIET_S)
        after = {r["id"] for r in await executions_of(api, "core.sleep")} - before
        assert after == {execution_id, *rerun_ids}, after
        assert len(answers(standin, again.response_key)) == 1
    finally:
        for some_id in (execution_id, *rerun_ids):
            await cancel_quietly(api, some_id)
