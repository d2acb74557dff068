"""Inquiries in Slack, end to end through signed requests: the question posted in the card's
thread with buttons (yes/no) or an Answer button opening a modal, only the assignee may answer
(others are refused, ephemerally), a bad modal answer is refused naming the field, and the
question is updated to say who answered.

One ``attune serve`` (SQLite, in-process broker, its worker and sweeps in the same process) for
the module, its Slack Web API pointed at the stand-in; each test has its own channel.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bot.render import INQUIRY_MODAL, INQUIRY_OPEN_ACTION
from tests.e2e.conftest import Server
from tests.scenario.harness import (
    API_WAIT_S,
    admin_api,
    new_channel,
    new_user,
    post_signed,
    running_server,
    scenario_env,
    settle,
    slash,
)
from tests.scenario.slack_standin import TEAM_ID, Call, Canned, SlackStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-inquiries")
    async with running_server("serve", scenario_env(tmp, standin), tmp) as srv:
        yield srv


def _user(user_id: str) -> dict[str, Any]:
    return {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": TEAM_ID}


async def click(
    server: Server, standin: SlackStandIn, user: str, channel: str, button: dict[str, Any]
) -> str:
    """A signed ``block_actions`` click; returns the key of its response URL."""
    key = uuid.uuid4().hex
    payload = {
        "type": "block_actions",
        "user": _user(user),
        "api_app_id": "ASCENARIO",
        "token": "legacy-verification-token",
        "container": {"type": "message", "message_ts": "1.0", "channel_id": channel},
        "trigger_id": f"1337.42.{uuid.uuid4().hex}",
        "team": {"id": TEAM_ID, "domain": "scenario"},
        "channel": {"id": channel, "name": "ops"},
        "response_url": standin.response_url(key),
        "actions": [
            {
                "action_id": button["action_id"],
                "block_id": "b",
                "value": button["value"],
                "type": "button",
                "text": button["text"],
                "action_ts": f"{uuid.uuid4().int % 10**6}.000001",
            }
        ],
    }
    status, body, _ = await post_signed(server.base_url, {"payload": json.dumps(payload)})
    assert status == 200, body
    return key


async def submit(
    server: Server, user: str, inquiry_id: int, values: dict[str, str]
) -> tuple[int, Any]:
    """A signed ``view_submission`` of the inquiry's modal."""
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "scenario"},
        "user": _user(user),
        "api_app_id": "ASCENARIO",
        "token": "legacy-verification-token",
        "trigger_id": f"1337.43.{uuid.uuid4().hex}",
        "view": {
            "id": "VSCENARIO",
            "type": "modal",
            "callback_id": INQUIRY_MODAL,
            "private_metadata": str(inquiry_id),
            "hash": "h",
            "state": {
                "values": {
                    f"field:{name}": {"value": {"type": "plain_text_input", "value": value}}
                    for name, value in values.items()
                }
            },
        },
    }
    status, body, _ = await post_signed(server.base_url, {"payload": json.dumps(payload)})
    return status, body


async def question(standin: SlackStandIn, channel: str) -> Call:
    def posted() -> Call | None:
        found = standin.find(
            "chat.postMessage",
            target=channel,
            where=lambda c: "Inquiry #" in c.params.get("text", ""),
        )
        return found[0] if found else None

    return await eventually(posted, f"the question in {channel}", API_WAIT_S)


def buttons(call: Call) -> list[dict[str, Any]]:
    return [e for b in call.blocks if b["type"] == "actions" for e in b["elements"]]


async def refusal(standin: SlackStandIn, key: str) -> str:
    def said() -> str | None:
        found = standin.find("response_url", target=key)
        return found[0].params.get("text") if found else None

    return str(await eventually(said, "the ephemeral refusal", API_WAIT_S))


async def test_a_yes_no_question_is_answered_by_its_assignee_with_a_button(
    server: Server, standin: SlackStandIn
) -> None:
    channel, asker, assignee, stranger = new_channel(), new_user(), new_user(), new_user()
    reply = await slash(
        server.base_url,
        standin,
        f"run core.ask prompt='Ship it?' assigned_to={assignee}",
        channel=channel,
        user=asker,
    )
    execution_id = reply.execution_id
    asked = await question(standin, channel)
    card = standin.find("chat.postMessage", target=channel, where=lambda c: c is not asked)
    assert isinstance(card[0].response, dict)
    assert asked.params.get("thread_ts") == card[0].response["ts"]  # in the card's thread
    yes, no = buttons(asked)
    assert (yes["text"]["text"], no["text"]["text"]) == ("Yes", "No")

    key = await click(server, standin, stranger, channel, yes)
    assert "not assigned" in await refusal(standin, key)
    async with admin_api(server.base_url) as api:
        assert (await api.get(f"/api/v1/executions/{execution_id}")).status == 200
        await click(server, standin, assignee, channel, yes)
        record, _ = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert record["result"]["data"]["response"] == {"approved": True}
    assert record["result"]["data"]["responded_by"] == f"<@{assignee}>"

    assert isinstance(asked.response, dict)
    asked_ts = asked.response["ts"]

    def updated() -> Call | None:
        found = standin.find(
            "chat.update", target=channel, where=lambda c: c.params.get("ts") == asked_ts
        )
        return found[0] if found else None

    shown = await eventually(updated, "the question updated", API_WAIT_S)
    assert f"answered by <@{assignee}>" in shown.all_text()
    assert buttons(shown) == []


async def test_any_other_schema_is_answered_in_a_modal_that_names_a_bad_field(
    server: Server, standin: SlackStandIn
) -> None:
    channel, asker, assignee = new_channel(), new_user(), new_user()
    schema = json.dumps(
        {
            "type": "object",
            "properties": {
                "reason": {"type": "string", "minLength": 3},
                "count": {"type": "integer"},
            },
            "required": ["reason"],
        },
        separators=(",", ":"),
    )
    reply = await slash(
        server.base_url,
        standin,
        f"run core.ask prompt='Why?' assigned_to={assignee} response_schema='{schema}'",
        channel=channel,
        user=asker,
    )
    execution_id = reply.execution_id
    asked = await question(standin, channel)
    (answer,) = buttons(asked)
    assert answer["action_id"] == INQUIRY_OPEN_ACTION
    inquiry_id = int(answer["value"])

    await click(server, standin, assignee, channel, answer)

    def opened() -> Call | None:
        found = standin.find("views.open", where=lambda c: str(inquiry_id) in str(c.params))
        return found[0] if found else None

    modal = await eventually(opened, "the modal opened", API_WAIT_S)
    assert INQUIRY_MODAL in str(modal.params.get("view"))

    status, body = await submit(server, assignee, inquiry_id, {"reason": "no", "count": "2"})
    assert status == 200, body
    assert body["response_action"] == "errors"
    assert "response.reason" in body["errors"]["field:reason"]
    status, body = await submit(server, new_user(), inquiry_id, {"reason": "because"})
    assert status == 200, body
    assert "not assigned" in json.dumps(body)

    status, body = await submit(server, assignee, inquiry_id, {"reason": "because", "count": "2"})
    assert status == 200, body
    async with admin_api(server.base_url) as api:
        record, _ = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert record["result"]["data"]["response"] == {"reason": "because", "count": 2}


async def _question_shown_ended(standin: SlackStandIn, channel: str, asked: Call) -> Call:
    """The question's message once updated to say how it ended."""
    assert isinstance(asked.response, dict)
    asked_ts = asked.response["ts"]

    def updated() -> Call | None:
        found = standin.find(
            "chat.update", target=channel, where=lambda c: c.params.get("ts") == asked_ts
        )
        return found[0] if found else None

    return await eventually(updated, "the question updated", API_WAIT_S)


async def test_a_question_that_times_out_loses_its_buttons(
    server: Server, standin: SlackStandIn
) -> None:
    channel, asker, assignee = new_channel(), new_user(), new_user()
    reply = await slash(
        server.base_url,
        standin,
        f"run core.ask prompt='Restart the primary?' assigned_to={assignee} timeout_seconds=2",
        channel=channel,
        user=asker,
    )
    asked = await question(standin, channel)
    assert buttons(asked)
    async with admin_api(server.base_url) as api:
        record, _ = await settle(api, reply.execution_id)
    assert record["status"] == "timeout"
    shown = await _question_shown_ended(standin, channel, asked)
    assert "not answered in time" in shown.all_text()
    assert buttons(shown) == []
    # A click on the old buttons (a client that kept them) is told the question ended.
    key = await click(server, standin, assignee, channel, buttons(asked)[0])
    assert "timeout" in await refusal(standin, key)


async def test_a_question_answered_over_the_api_is_shown_answered_in_slack(
    server: Server, standin: SlackStandIn
) -> None:
    channel, asker = new_channel(), new_user()
    reply = await slash(
        server.base_url, standin, "run core.ask prompt='Drain web1?'", channel=channel, user=asker
    )
    asked = await question(standin, channel)
    (yes, _no) = buttons(asked)
    inquiry_id = json.loads(yes["value"])["i"]
    async with admin_api(server.base_url) as api:
        answered = await api.post(
            f"/api/v1/inquiries/{inquiry_id}/respond", json={"response": {"approved": False}}
        )
        assert answered.status == 200, await answered.text()
        record, _ = await settle(api, reply.execution_id)
    assert record["result"]["data"]["response"] == {"approved": False}
    shown = await _question_shown_ended(standin, channel, asked)
    assert "answered by admin" in shown.all_text()
    assert buttons(shown) == []


async def test_a_question_whose_update_slack_refused_is_updated_again(
    server: Server, standin: SlackStandIn
) -> None:
    channel, asker = new_channel(), new_user()
    reply = await slash(
        server.base_url, standin, "run core.ask prompt='Fail over?'", channel=channel, user=asker
    )
    asked = await question(standin, channel)
    (yes, _no) = buttons(asked)
    assert isinstance(asked.response, dict)
    asked_ts = asked.response["ts"]

    def the_question(call: Call) -> bool:
        return bool(call.params.get("ts") == asked_ts)

    standin.queue("chat.update", Canned.error("internal_error"), where=the_question)
    async with admin_api(server.base_url) as api:
        answered = await api.post(
            f"/api/v1/inquiries/{json.loads(yes['value'])['i']}/respond",
            json={"response": {"approved": True}},
        )
        assert answered.status == 200, await answered.text()
        await settle(api, reply.execution_id)

    def shown() -> Call | None:
        found = standin.find("chat.update", target=channel, ok=True, where=the_question)
        return found[0] if found else None

    updated = await eventually(shown, "the question updated after Slack refused once", API_WAIT_S)
    assert "answered by admin" in updated.all_text()
    tries = standin.find("chat.update", target=channel, where=the_question)
    assert len(tries) == 2  # refused once, then done
