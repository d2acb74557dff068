"""Mentions and DMs as ways in (issue 14), and chat's history, help and "did you mean", through
events signed as Slack signs them, posted to a real ``attune serve`` (SQLite, in-process broker)
that talks to the Slack stand-in.

Roles: OPERATOR may run ``core.*`` and this module's ``ev_*`` actions, not ``examples.*``;
VIEWER may view only ``core.*``; anyone else is a viewer too (``ATTUNE_SLACK_DEFAULT_ROLE``);
NOBODY has the ``none`` role.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.render import ABORT_ACTION, CONFIRM_ACTION
from tests.e2e.conftest import Server
from tests.scenario.harness import (
    new_channel,
    running_server,
    scenario_env,
    settle,
    start_server,
    stop_server,
)
from tests.scenario.slack_events import callback, direct, mention, post_event
from tests.scenario.slack_standin import BOT_ID, BOT_USER_ID, Call, Canned, SlackStandIn
from tests.trust.support import (
    SlackUser,
    answer_at,
    buttons,
    click,
    executed,
    executions_of,
    inline_action,
    new_click,
    new_id,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

OPERATOR = new_id("U")
VIEWER = new_id("U")
NOBODY = new_id("U")
#: An operator whose name Slack tells (``users.info``).
NORA = new_id("U")
PERMISSIONS = {
    "operator": {"run": ["core.*", "ev_*"], "view": ["*"]},
    "viewer": {"view": ["core.*"]},
}
WAIT_S = 15.0


def env_of(tmp: Any, standin: SlackStandIn) -> dict[str, str]:
    return scenario_env(
        tmp,
        standin,
        ATTUNE_SLACK_ROLES=json.dumps(
            {OPERATOR: "operator", VIEWER: "viewer", NOBODY: "none", NORA: "operator"}
        ),
        ATTUNE_SLACK_DEFAULT_ROLE="viewer",
        ATTUNE_PERMISSIONS=json.dumps(PERMISSIONS),
    )


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-events")
    async with running_server("serve", env_of(tmp, standin), tmp) as srv:
        yield srv


def said_in(standin: SlackStandIn, method: str, channel: str, words: str) -> list[Call]:
    return [c for c in standin.find(method, target=channel, ok=True) if words in c.all_text()]


async def answer(standin: SlackStandIn, method: str, channel: str, words: str) -> Call:
    """The (first) ``method`` call to ``channel`` whose text holds ``words`` (bounded wait)."""
    calls = await eventually(
        lambda: said_in(standin, method, channel, words),
        f"{method} to {channel} saying {words!r}",
        WAIT_S,
        interval_s=0.02,
    )
    return calls[0]


def execution_number(text: str) -> int:
    found = re.search(r"#(\d+)", text)
    assert found, text
    return int(found.group(1))


# -- ways in ------------------------------------------------------------------------------------


async def test_a_mention_runs_the_action_answers_in_its_thread_and_cards_the_channel(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    event = mention(OPERATOR, channel, 'run core.echo message="from a mention"')
    status, _ = await post_event(server.base_url, callback(event))
    assert status == 200

    reply = await answer(standin, "chat.postMessage", channel, "queued")
    assert reply.params.get("thread_ts") == event["ts"], reply.params
    execution_id = execution_number(reply.all_text())
    record, _ = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert record["config"] == {"message": "from a mention"}
    assert record["requester"]["user_id"] == OPERATOR
    assert record["requester"]["channel"] == channel

    # The card goes to the channel itself, as for /attune, and ends completed.
    cards = standin.find(
        "chat.postMessage",
        target=channel,
        ok=True,
        where=lambda c: "thread_ts" not in c.params and f"#{execution_id}" in c.all_text(),
    )
    assert len(cards) == 1, [c.params for c in standin.find("chat.*", target=channel)]
    final = standin.find("chat.update", target=channel, ok=True)
    assert "completed" in (final[-1] if final else cards[0]).all_text()


async def test_a_dm_runs_and_is_answered_in_the_dm(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, "ev", "dm", "echo ran from a dm")
    dm = new_id("D")
    status, _ = await post_event(server.base_url, callback(direct(OPERATOR, dm, f"run {action}")))
    assert status == 200
    reply = await answer(standin, "chat.postMessage", dm, "queued")
    assert "thread_ts" not in reply.params, reply.params
    record, _ = await settle(api, execution_number(reply.all_text()))
    assert record["status"] == "completed"
    assert record["action_ref"] == action
    assert record["requester"]["channel"] == dm


async def test_a_dm_keeps_the_name_slack_tells_and_history_finds_it_by_name(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    named = {"ok": True, "user": {"id": NORA, "name": "nora", "tz": "Europe/Paris"}}
    standin.queue("users.info", Canned(200, named), where=lambda c: c.params.get("user") == NORA)
    dm = new_id("D")
    await post_event(server.base_url, callback(direct(NORA, dm, "run core.noop")))
    reply = await answer(standin, "chat.postMessage", dm, "queued")
    record, _ = await settle(api, execution_number(reply.all_text()))
    assert record["requester"]["user_name"] == "nora"
    assert record["requester"]["user_id"] == NORA

    await post_event(server.base_url, callback(direct(NORA, dm, "history @nora")))
    found = await answer(standin, "chat.postMessage", dm, "Recent executions by nora")
    assert f"#{record['id']} `core.noop` completed" in found.all_text()


async def test_a_dm_without_permission_is_refused_with_the_reason(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, "ev", "refused", "echo never")
    stranger, dm, dm_none = new_id("U"), new_id("D"), new_id("D")
    await post_event(server.base_url, callback(direct(stranger, dm, f"run {action}")))
    refusal = await answer(standin, "chat.postMessage", dm, "Not allowed")
    assert f"the viewer role lacks the 'run' permission on {action}" in refusal.all_text()

    await post_event(server.base_url, callback(direct(NOBODY, dm_none, "help")))
    no_access = await answer(standin, "chat.postMessage", dm_none, "no access")
    assert "ATTUNE_SLACK_ROLES" in no_access.all_text()
    # A first "hi" (no command at all) gets the same reason, not the usage.
    dm_hi = new_id("D")
    await post_event(server.base_url, callback(direct(NOBODY, dm_hi, "hi there")))
    greeted = await answer(standin, "chat.postMessage", dm_hi, "no access")
    assert "Unknown command" not in greeted.all_text()
    assert await executions_of(api, action) == []


async def test_a_mention_of_a_confirm_action_asks_first_and_the_button_runs_it(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, "ev", "careful", "echo confirmed", confirm=True)
    channel = new_channel()
    await post_event(server.base_url, callback(mention(OPERATOR, channel, f"run {action}")))
    asked = await answer(standin, "chat.postMessage", channel, "Confirm")
    found = buttons(asked.blocks)
    assert set(found) == {CONFIRM_ACTION, ABORT_ACTION}, asked.blocks
    assert await executions_of(api, action) == []  # nothing runs before the click

    pressed = new_click(
        SlackUser(OPERATOR, "olivia"), channel, CONFIRM_ACTION, found[CONFIRM_ACTION]
    )
    assert (await click(server.base_url, standin, pressed)).status == 200
    confirmed = await answer_at(standin, pressed.response_key)
    record, _ = await settle(api, execution_number(confirmed))
    assert record["status"] == "completed"
    assert record["requester"]["user_id"] == OPERATOR


async def test_bots_edits_and_deletions_are_ignored(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, "ev", "ignored", "echo never")
    dm, channel = new_id("D"), new_channel()
    ignored = [
        direct(OPERATOR, dm, f"run {action}", bot_id="B0THER"),  # another bot's message
        direct(BOT_USER_ID, dm, f"run {action}"),  # our own
        direct(OPERATOR, dm, f"run {action}", subtype="message_changed"),
        direct(OPERATOR, dm, f"run {action}", subtype="message_deleted"),
        {**direct(OPERATOR, dm, f"run {action}"), "channel_type": "channel"},  # not a DM
        mention(OPERATOR, channel, f"run {action}", bot_id=BOT_ID, subtype="bot_message"),
    ]
    for event in ignored:
        status, _ = await post_event(server.base_url, callback(event))
        assert status == 200
    # Ignored events are dropped before the request is answered; one that is not, after
    # them, gets its answer: nothing else was said in either place.
    await post_event(server.base_url, callback(direct(OPERATOR, dm, "help")))
    await answer(standin, "chat.postMessage", dm, "What you may run")
    await post_event(server.base_url, callback(mention(OPERATOR, channel, "help")))
    await answer(standin, "chat.postEphemeral", channel, "What you may run")
    assert len(standin.find("chat.*", target=dm)) == 1
    assert len(standin.find("chat.*", target=channel)) == 1
    assert await executions_of(api, action) == []


async def test_slack_verifies_the_request_url(server: Server) -> None:
    status, body = await post_event(
        server.base_url, {"type": "url_verification", "challenge": "c-42", "token": "t"}
    )
    assert status == 200
    assert b"c-42" in body


async def test_a_retried_event_runs_once_also_in_another_process(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    action = await inline_action(api, "ev", "retried", "echo once")
    channel = new_channel()
    body = json.dumps(callback(mention(OPERATOR, channel, f"run {action}"))).encode()
    assert (await post_event(server.base_url, body))[0] == 200
    await answer(standin, "chat.postMessage", channel, "queued")

    # Slack's retry: the same body, signed anew, marked X-Slack-Retry-Num; to this process.
    assert (await post_event(server.base_url, body, retry=1, age_s=1))[0] == 200
    # And to a second process on the same database, which never saw the first.
    other = await start_server("serve-b", env_of(server.tmp, standin), server.tmp)
    try:
        assert (await post_event(other.base_url, body, retry=2, age_s=2))[0] == 200
        await eventually(
            lambda: "came again" in other.serve.stderr(), "the second process to skip it", WAIT_S
        )
    finally:
        await stop_server(other)
    runs = await executions_of(api, action)
    assert len(runs) == 1, runs
    assert len(said_in(standin, "chat.postMessage", channel, "queued")) == 1


# -- discovery and history ---------------------------------------------------------------------


async def test_help_lists_only_what_the_user_may_run(server: Server, standin: SlackStandIn) -> None:
    channel = new_channel()
    await post_event(server.base_url, callback(mention(OPERATOR, channel, "help")))
    # A read in a channel is answered for the asker alone, as the slash command answers it.
    shown = await answer(standin, "chat.postEphemeral", channel, "What you may run")
    assert shown.params.get("user") == OPERATOR
    listing = shown.all_text()
    assert "`core.echo`" in listing
    assert "examples.greet" not in listing  # the operator may not run examples.*
    assert "history" in listing
    assert "last" in listing

    dm = new_id("D")
    await post_event(server.base_url, callback(direct(VIEWER, dm, "help")))
    nothing = (await answer(standin, "chat.postMessage", dm, "You may not run any")).all_text()
    assert "core.echo" not in nothing


async def test_history_shows_only_what_the_viewer_may_view(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    hidden = await inline_action(api, "ev", "hidden", "echo hidden")
    hidden_run = await executed(api, hidden)
    channel = new_channel()
    await post_event(server.base_url, callback(mention(OPERATOR, channel, "run core.noop")))
    shown_run = execution_number(
        (await answer(standin, "chat.postMessage", channel, "queued")).all_text()
    )
    await settle(api, shown_run)

    dm = new_id("D")
    await post_event(server.base_url, callback(direct(VIEWER, dm, "history 50")))
    listing = (await answer(standin, "chat.postMessage", dm, "Recent executions")).all_text()
    assert f"#{shown_run} `core.noop` completed" in listing
    assert f"<@{OPERATOR}>" in listing
    assert hidden not in listing
    assert f"#{hidden_run['id']} " not in listing

    # The operator, who may view everything, sees both, newest first.
    await post_event(server.base_url, callback(mention(OPERATOR, channel, "history 50")))
    full = (await answer(standin, "chat.postEphemeral", channel, "Recent executions")).all_text()
    assert full.index(f"#{shown_run} ") < full.index(f"#{hidden_run['id']} ")

    # Asking for an action one may not view is refused, with the reason.
    dm2 = new_id("D")
    await post_event(server.base_url, callback(direct(VIEWER, dm2, f"history {hidden}")))
    refusal = await answer(standin, "chat.postMessage", dm2, "Not allowed")
    assert "'view' permission" in refusal.all_text()

    # `history @user` and `last`.
    await post_event(
        server.base_url, callback(mention(OPERATOR, channel, f"history <@{OPERATOR}> 5"))
    )
    mine = (await answer(standin, "chat.postEphemeral", channel, "Recent executions by")).all_text()
    assert f"#{shown_run} " in mine
    assert f"#{hidden_run['id']} " not in mine
    await post_event(server.base_url, callback(mention(OPERATOR, channel, "last")))
    last = (await answer(standin, "chat.postEphemeral", channel, "Your last execution")).all_text()
    assert f"#{shown_run} `core.noop` completed" in last
    # None of these reads was said for the whole channel to see.
    for words in ("What you may run", "Recent executions", "Your last execution"):
        assert not said_in(standin, "chat.postMessage", channel, words), words


async def test_typos_get_did_you_mean(server: Server, standin: SlackStandIn) -> None:
    channel = new_channel()
    await post_event(server.base_url, callback(mention(OPERATOR, channel, "run core.ecoh a=1")))
    # An error is for the person who typed it: ephemeral, in the mention's thread.
    typo = await answer(standin, "chat.postEphemeral", channel, "not found")
    assert typo.params["user"] == OPERATOR
    assert "Did you mean `core.echo`?" in typo.all_text()

    await post_event(server.base_url, callback(mention(OPERATOR, channel, "hsitory core.echo")))
    verb = await answer(standin, "chat.postEphemeral", channel, "Unknown command")
    assert "Did you mean `history core.echo`?" in verb.all_text()

    dm = new_id("D")
    await post_event(server.base_url, callback(direct(OPERATOR, dm, "help core.slep")))
    help_typo = await answer(standin, "chat.postMessage", dm, "not found")
    assert "Did you mean `core.sleep`?" in help_typo.all_text()
