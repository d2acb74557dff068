"""Forms for parameters, end to end through signed requests: ``/attune run pack.action`` with
required parameters missing opens a modal (``views.open`` at the Slack stand-in) with a field
per parameter; its submission runs the action once, with typed parameters, the card in the
channel the command was typed in; bad values are shown on their fields and nothing runs; a
user who may not run the action gets the refusal and no modal.

One ``attune serve`` (SQLite, in-process broker) for the module; the actions are made over the
API with a script that prints the parameters it was given on stdin.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.render import ABORT_ACTION, CONFIRM_ACTION
from bot.slack_forms import RUN_FORM
from tests.e2e.conftest import Server
from tests.scenario.harness import (
    API_WAIT_S,
    SLACK_ACK_BUDGET_S,
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
from tests.trust.support import audit, call, inline_action
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

VIEWER = "UVIEWERFORMS"
SECRET_KEY = "forms-secret-key-" + "k" * 32
TOKEN = "hunter2-not-shown"
DEPLOY_PARAMETERS = {
    "service": {"type": "string", "required": True, "description": "What to deploy"},
    "replicas": {"type": "integer", "required": True, "minimum": 1, "maximum": 20},
    "dry_run": {"type": "boolean", "required": True},
    "env": {"type": "string", "enum": ["staging", "production"], "required": True},
    "token": {"type": "string", "secret": True, "required": True},
    "ratio": {"type": "number", "default": 0.5},
    "extra": {"type": "object"},
}
PRINT_PARAMETERS = "cat"


def env(tmp: Path, standin: SlackStandIn, **more: str) -> dict[str, str]:
    return scenario_env(
        tmp,
        standin,
        ATTUNE_SLACK_ROLES=json.dumps({VIEWER: "viewer"}),
        ATTUNE_SECRET_KEY=SECRET_KEY,
        **more,
    )


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-forms")
    async with running_server("serve", env(tmp, standin), tmp) as srv:
        yield srv


@pytest.fixture(scope="module")
async def deploy(server: Server) -> str:
    async with admin_api(server.base_url) as api:
        return await inline_action(
            api, "forms", "deploy", PRINT_PARAMETERS, parameters=DEPLOY_PARAMETERS
        )


# -- helpers ----------------------------------------------------------------------------------


def opened_in(standin: SlackStandIn, channel: str) -> list[Call]:
    """The ``views.open`` calls of run forms asked for in ``channel``."""

    def ours(c: Call) -> bool:
        view = the_view(c)
        return view.get("callback_id") == RUN_FORM and f'"c":"{channel}"' in str(
            view.get("private_metadata")
        )

    return standin.find("views.open", where=ours)


def the_view(c: Call) -> dict[str, Any]:
    view = c.params.get("view") or {}
    return dict(json.loads(view) if isinstance(view, str) else view)


def fields(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        b["block_id"].removeprefix("param:"): b["element"]
        for b in view["blocks"]
        if b["type"] == "input"
    }


async def open_form(
    server: Server, standin: SlackStandIn, text: str, user: str | None = None
) -> tuple[dict[str, Any], str, str]:
    """Type ``text``; the modal must open at once: (the view as Slack has it, channel, user)."""
    channel, user = new_channel(), user or new_user()
    reply = await slash(server.base_url, standin, text, channel=channel, user=user)
    assert reply.status == 200, reply.body
    assert reply.elapsed_s < SLACK_ACK_BUDGET_S
    assert not reply.body, reply.body  # the modal answers: no message
    (opened,) = opened_in(standin, channel)
    assert isinstance(opened.response, dict), opened.response
    assert opened.ok, opened.response
    assert str(opened.params.get("trigger_id", "")).startswith("1337.42.")
    return dict(opened.response["view"]), channel, user


def values_of(**by_name: dict[str, Any]) -> dict[str, Any]:
    return {f"param:{name}": {"value": v} for name, v in by_name.items()}


def typed(value: str) -> dict[str, Any]:
    return {"type": "plain_text_input", "value": value}


def number(value: str) -> dict[str, Any]:
    return {"type": "number_input", "value": value}


def choice(value: str | None, kind: str = "static_select") -> dict[str, Any]:
    return {"type": kind, "selected_option": None if value is None else {"value": value}}


async def submit(
    server: Server, view: dict[str, Any], user: str, values: dict[str, Any]
) -> tuple[int, Any]:
    """A signed ``view_submission`` of ``view`` (as ``views.open`` returned it)."""
    payload = {
        "type": "view_submission",
        "team": {"id": TEAM_ID, "domain": "scenario"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": TEAM_ID},
        "api_app_id": "ASCENARIO",
        "token": "legacy-verification-token",
        "trigger_id": f"1337.43.{uuid.uuid4().hex}",
        "view": {**view, "hash": uuid.uuid4().hex, "state": {"values": values}},
    }
    status, body, _ = await post_signed(server.base_url, {"payload": json.dumps(payload)})
    return status, body


def good_values(**override: dict[str, Any]) -> dict[str, Any]:
    chosen = {
        "service": typed("api"),
        "replicas": number("3"),
        "dry_run": choice("false", "radio_buttons"),
        "env": choice('"production"'),
        "token": typed(TOKEN),
        "ratio": number(""),
        "extra": typed('{"zone": "eu", "weights": [1, 2]}'),
    }
    chosen.update(override)
    return values_of(**chosen)


async def runs_of(api: aiohttp.ClientSession, ref: str) -> list[dict[str, Any]]:
    answer = await call(api, "GET", f"/api/v1/executions?action_ref={ref}&per_page=100")
    assert answer.status == 200, answer.body
    return list(answer.items)


async def confirm_action(api: aiohttp.ClientSession, name: str) -> str:
    """A ``confirm: true`` action with one required parameter, ``target``."""
    return await inline_action(
        api,
        "forms",
        name,
        PRINT_PARAMETERS,
        parameters={"target": {"type": "string", "required": True}},
        confirm=True,
    )


def the_reply(standin: SlackStandIn, view: dict[str, Any]) -> Call | None:
    """What the form's command got through its response URL."""
    url = json.loads(view["private_metadata"])["r"]
    found = standin.find("response_url", target=url.rsplit("/", 1)[-1])
    return found[-1] if found else None


# -- tests ------------------------------------------------------------------------------------


async def test_missing_parameters_open_a_form_with_a_field_per_parameter(
    server: Server, standin: SlackStandIn, deploy: str
) -> None:
    view, _, _ = await open_form(server, standin, f"run {deploy} service=api")
    f = fields(view)
    assert list(f) == list(DEPLOY_PARAMETERS)
    assert (f["service"]["type"], f["service"]["initial_value"]) == ("plain_text_input", "api")
    assert f["replicas"]["type"] == "number_input"
    assert f["replicas"]["is_decimal_allowed"] is False
    assert f["ratio"]["type"] == "number_input"
    assert f["ratio"]["initial_value"] == "0.5"  # the default
    assert f["dry_run"]["type"] == "radio_buttons"
    assert f["env"]["type"] == "static_select"
    assert [o["text"]["text"] for o in f["env"]["options"]] == ["staging", "production"]
    assert f["token"]["type"] == "plain_text_input"
    assert "initial_value" not in f["token"]
    assert f["extra"]["multiline"] is True
    optional = {b["block_id"] for b in view["blocks"] if b.get("optional")}
    assert optional == {"param:ratio", "param:extra"}


async def test_a_valid_submission_runs_once_with_typed_parameters_and_the_card_in_the_channel(
    server: Server, standin: SlackStandIn, deploy: str
) -> None:
    view, channel, user = await open_form(server, standin, f"run {deploy}")
    async with admin_api(server.base_url) as api:
        status, body = await submit(server, view, user, good_values())
        assert status == 200, body
        assert not body  # the modal closes
        (run,) = await runs_of(api, deploy)
        record, _ = await settle(api, run["id"])
        assert record["status"] == "completed", record
        assert record["config"] == {
            "service": "api",
            "replicas": 3,
            "dry_run": False,
            "env": "production",
            "token": "********",
            "ratio": 0.5,
            "extra": {"zone": "eu", "weights": [1, 2]},
        }
        assert json.loads(record["result"]["stdout"])["token"] == TOKEN  # the action got it
        assert record["requester"]["identity"] == user

        # the same submission again (Slack sent it twice, or a double click): nothing new
        status, body = await submit(server, view, user, good_values())
        assert status == 200, body
        assert len(await runs_of(api, deploy)) == 1

        entries = [e for e in await audit(api, actor=user, verb="run") if e["target"] == deploy]
        assert [e["outcome"] for e in entries] == ["accepted"]
        assert TOKEN not in json.dumps(entries)

    def card() -> Call | None:
        found = standin.find(
            "chat.postMessage",
            target=channel,
            ok=True,
            where=lambda c: re.search(rf"#{run['id']}\b", c.all_text()) is not None,
        )
        return found[0] if found else None

    posted = await eventually(card, f"the card of #{run['id']} in {channel}", API_WAIT_S)
    assert TOKEN not in posted.all_text()
    reply = await eventually(lambda: the_reply(standin, view), "the ephemeral reply", API_WAIT_S)
    assert f"Execution #{run['id']} queued" in str(reply.params.get("text"))
    assert reply.params.get("response_type") == "ephemeral"
    assert TOKEN not in json.dumps(reply.params)


async def test_bad_values_are_shown_on_their_fields_and_nothing_runs(
    server: Server, standin: SlackStandIn, deploy: str
) -> None:
    view, _, user = await open_form(server, standin, f"run {deploy}")
    async with admin_api(server.base_url) as api:
        before = len(await runs_of(api, deploy))
        bad = good_values(
            replicas=number("40"),
            env=choice(None),
            extra=typed("{not json"),
            token=typed(""),
        )
        status, body = await submit(server, view, user, bad)
        assert status == 200, body
        assert body["response_action"] == "errors", body
        errors = body["errors"]
        assert set(errors) == {"param:replicas", "param:env", "param:extra", "param:token"}
        assert "replicas" in errors["param:replicas"]
        assert errors["param:env"] == "missing required parameter 'env'"
        assert errors["param:extra"].startswith("not valid JSON")
        assert len(await runs_of(api, deploy)) == before

        # fixed, the same form runs
        status, body = await submit(server, view, user, good_values())
        assert status == 200, body
        assert not body, body
        assert len(await runs_of(api, deploy)) == before + 1


async def test_a_user_who_may_not_run_it_gets_the_refusal_and_no_modal(
    server: Server, standin: SlackStandIn, deploy: str
) -> None:
    channel = new_channel()
    reply = await slash(server.base_url, standin, f"run {deploy}", channel=channel, user=VIEWER)
    assert reply.status == 200, reply.body
    assert reply.text.startswith("Not allowed: the viewer role"), reply.body
    assert opened_in(standin, channel) == []
    async with admin_api(server.base_url) as api:
        entries = await audit(api, actor=VIEWER, outcome="denied")
        assert any(e["target"] == deploy for e in entries)


async def test_permission_is_checked_again_at_submission(
    server: Server, standin: SlackStandIn, deploy: str
) -> None:
    view, _, _ = await open_form(server, standin, f"run {deploy}")
    async with admin_api(server.base_url) as api:
        before = len(await runs_of(api, deploy))
        status, body = await submit(server, view, VIEWER, good_values())
        assert status == 200, body
        assert body["response_action"] == "errors", body
        assert "Not allowed" in json.dumps(body["errors"])
        assert len(await runs_of(api, deploy)) == before


async def test_a_confirm_action_asks_for_confirmation_after_the_form(
    server: Server, standin: SlackStandIn
) -> None:
    async with admin_api(server.base_url) as api:
        ref = await confirm_action(api, "wipe")
        view, _, user = await open_form(server, standin, f"run {ref}")
        assert "confirm" in json.dumps(view["blocks"][0])
        status, body = await submit(server, view, user, values_of(target=typed("db1")))
        assert status == 200, body
        assert not body, body
        reply = await eventually(lambda: the_reply(standin, view), "the confirmation", API_WAIT_S)
        actions = [e["action_id"] for b in reply.params["blocks"] for e in b.get("elements", [])]
        assert actions == [CONFIRM_ACTION, ABORT_ACTION], reply.params
        assert await runs_of(api, ref) == []  # nothing runs before it is confirmed


async def test_a_form_submitted_after_its_response_url_expired_still_asks_to_confirm(
    server: Server, standin: SlackStandIn
) -> None:
    """Slack keeps a modal open for hours; its command's response URL lasts 30 minutes. The
    confirmation (the only news of a run that waits for it) then comes as an ephemeral
    message in the channel, not nowhere."""
    async with admin_api(server.base_url) as api:
        ref = await confirm_action(api, "wipe_late")
        view, channel, user = await open_form(server, standin, f"run {ref}")
        origin = json.loads(view["private_metadata"])
        origin["at"] -= 31 * 60  # asked for 31 minutes ago
        late = {**view, "private_metadata": json.dumps(origin, separators=(",", ":"))}
        status, body = await submit(server, late, user, values_of(target=typed("db1")))
        assert status == 200, body
        assert not body, body
        (told,) = await eventually(
            lambda: standin.find("chat.postEphemeral", target=channel, ok=True),
            "the confirmation, ephemeral in the channel",
            API_WAIT_S,
        )
        assert told.params.get("user") == user
        blocks = told.params["blocks"]
        blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
        actions = [e["action_id"] for b in blocks for e in b.get("elements", [])]
        assert actions == [CONFIRM_ACTION, ABORT_ACTION], told.params
        assert the_reply(standin, late) is None  # the expired URL is not used
        assert await runs_of(api, ref) == []


async def test_too_many_fields_or_no_modal_gets_the_usage_message(
    server: Server, standin: SlackStandIn, deploy: str
) -> None:
    async with admin_api(server.base_url) as api:
        many = {f"p{i}": {"type": "string", "required": True} for i in range(120)}
        ref = await inline_action(api, "forms", "many", PRINT_PARAMETERS, parameters=many)
    channel = new_channel()
    reply = await slash(server.base_url, standin, f"run {ref}", channel=channel)
    assert reply.text.startswith("Invalid parameters: missing required parameter 'p0'")
    assert opened_in(standin, channel) == []

    # Slack refuses to open the modal (say, the trigger expired): the usage message, as before
    fault = standin.queue("views.open", Canned.error("expired_trigger_id"))
    try:
        channel = new_channel()
        reply = await slash(server.base_url, standin, f"run {deploy}", channel=channel)
        assert reply.text.startswith("Invalid parameters: missing required parameter"), reply.body
        assert [c.ok for c in opened_in(standin, channel)] == [False]
    finally:
        standin.remove(fault)


async def test_a_form_submitted_to_two_processes_runs_once(
    server: Server, standin: SlackStandIn, deploy: str, tmp_path: Path
) -> None:
    """A second ``attune serve`` on the same database (and key) gets the same submission:
    the view's id finds the first run; nothing new starts."""
    view, _, user = await open_form(server, standin, f"run {deploy}")
    status, body = await submit(server, view, user, good_values())
    assert status == 200, body
    assert not body, body
    database = server.env["ATTUNE_DATABASE_URL"]
    async with (
        running_server(
            "serve-b", env(tmp_path, standin, ATTUNE_DATABASE_URL=database), tmp_path
        ) as b,
        admin_api(server.base_url) as api,
    ):
        before = await runs_of(api, deploy)
        status, body = await submit(b, view, user, good_values())
        assert status == 200, body
        assert not body, body
        assert len(await runs_of(api, deploy)) == len(before)


async def test_a_secret_typed_in_the_command_is_kept_out_of_the_form(
    server: Server, standin: SlackStandIn, deploy: str
) -> None:
    view, _, user = await open_form(server, standin, f"run {deploy} token={TOKEN} service=web")
    assert TOKEN not in json.dumps(view)  # not in a field, not in the metadata
    token = next(b for b in view["blocks"] if b.get("block_id") == "param:token")
    assert token["optional"] is True
    assert fields(view)["service"]["initial_value"] == "web"
    async with admin_api(server.base_url) as api:
        status, body = await submit(server, view, user, good_values(token=typed("")))
        assert status == 200, body
        assert not body, body
        (run,) = [r for r in await runs_of(api, deploy) if r["requester"]["identity"] == user]
        record, _ = await settle(api, run["id"])
    assert record["config"]["token"] == "********"
    assert json.loads(record["result"]["stdout"])["token"] == TOKEN


async def test_a_confirm_form_submitted_to_two_processes_asks_once(
    server: Server, standin: SlackStandIn, tmp_path: Path
) -> None:
    """The confirmation's code comes from the view's id: a second process asked the same
    thing answers with the same code, and one click runs it once."""
    async with admin_api(server.base_url) as api:
        ref = await confirm_action(api, "drop")
    view, _, user = await open_form(server, standin, f"run {ref}")
    status, body = await submit(server, view, user, values_of(target=typed("db2")))
    assert status == 200, body
    first = await eventually(lambda: the_reply(standin, view), "the confirmation", API_WAIT_S)
    code = re.search(r"confirm ([0-9a-f]{8})", first.all_text())
    assert code, first.params
    database = server.env["ATTUNE_DATABASE_URL"]
    async with running_server(
        "serve-b", env(tmp_path, standin, ATTUNE_DATABASE_URL=database), tmp_path
    ) as b:
        status, body = await submit(b, view, user, values_of(target=typed("db2")))
        assert status == 200, body

        def second() -> Call | None:
            found = the_reply(standin, view)
            return found if found is not None and found is not first else None

        again = await eventually(second, "the second process's answer", API_WAIT_S)
    assert f"confirm {code.group(1)}" in again.all_text()
    async with admin_api(server.base_url) as api:
        asked = await audit(api, actor=user, verb="run", outcome="confirmation_requested")
        assert len([e for e in asked if e.get("target") == ref]) == 1, asked
