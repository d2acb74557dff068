"""Shared pieces of the trust tests (permissions, audit, idempotency, login throttling,
confirmations and buttons): API calls that return what a client sees, tokens made with
``attune token create``, Slack slash commands and button clicks signed as Slack signs them,
and bounded waits."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.e2e.conftest import Server, run_cli
from tests.scenario.harness import post_signed
from tests.scenario.slack_signing import slash_fields
from tests.scenario.slack_standin import TEAM_ID, Call, SlackStandIn
from tests.waiting import eventually

EXECUTE = "/api/v1/executions/execute"
POLL_S = 0.05


# -- API --------------------------------------------------------------------------------------


@dataclass
class Answer:
    """An HTTP answer as a client sees it."""

    status: int
    body: Any
    headers: dict[str, str]

    @property
    def error(self) -> str:
        assert isinstance(self.body, dict), self.body
        return str(self.body.get("error", ""))

    @property
    def data(self) -> Any:
        assert isinstance(self.body, dict), (self.status, self.body)
        assert "data" in self.body, (self.status, self.body)
        return self.body["data"]

    @property
    def items(self) -> list[Any]:
        """A list answer's items (``{"items": [...], "pagination": {...}}``)."""
        assert isinstance(self.body, dict), (self.status, self.body)
        assert "items" in self.body, (self.status, self.body)
        return list(self.body["items"])


async def call(session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> Answer:
    async with session.request(method, path, **kwargs) as resp:
        text = await resp.text()
        try:
            body: Any = json.loads(text) if text else None
        except ValueError:
            body = text
        return Answer(resp.status, body, dict(resp.headers))


async def execute(
    session: aiohttp.ClientSession,
    ref: str,
    parameters: dict[str, Any] | None = None,
    *,
    key: str | None = None,
) -> Answer:
    body: dict[str, Any] = {"action_ref": ref}
    if parameters is not None:
        body["parameters"] = parameters
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await call(session, "POST", EXECUTE, json=body, headers=headers)


async def executed(
    session: aiohttp.ClientSession, ref: str, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Run an action that must be accepted; return its record."""
    answer = await execute(session, ref, parameters)
    assert answer.status == 201, answer.body
    return dict(answer.data)


async def executions_of(session: aiohttp.ClientSession, ref: str) -> list[dict[str, Any]]:
    answer = await call(session, "GET", f"/api/v1/executions?action_ref={ref}&per_page=100")
    assert answer.status == 200, answer.body
    return answer.items


async def inline_action(
    admin: aiohttp.ClientSession,
    pack: str,
    name: str,
    script: str,
    *,
    parameters: dict[str, Any] | None = None,
    confirm: bool = False,
) -> str:
    """Create an inline shell action (admin only) under a fresh pack name; return its ref."""
    ref = f"{pack}_{uuid.uuid4().hex[:6]}.{name}"
    body: dict[str, Any] = {
        "ref": ref,
        "entrypoint": script,
        "runtime_ref": "core.shell",
        "confirm": confirm,
    }
    if parameters is not None:
        body["parameters"] = parameters
    answer = await call(admin, "POST", "/api/v1/actions", json=body)
    assert answer.status == 201, answer.body
    return ref


async def audit(admin: aiohttp.ClientSession, **filters: str | int) -> list[dict[str, Any]]:
    """``GET /api/v1/audit`` with ``filters``, newest first (one page of 100)."""
    answer = await call(
        admin,
        "GET",
        "/api/v1/audit",
        params={"per_page": 100, **{k: str(v) for k, v in filters.items()}},
    )
    assert answer.status == 200, answer.body
    return answer.items


async def cancel_quietly(admin: aiohttp.ClientSession, execution_id: int) -> None:
    """Clean-up: stop a long run (it may already have ended)."""
    await call(admin, "POST", f"/api/v1/executions/{execution_id}/cancel")


async def register(base_url: str, login: str, password: str) -> None:
    """``POST /auth/register`` (the server runs with registration on, and gives registered
    users the role its ``ATTUNE_REGISTRATION_ROLE`` names)."""
    async with aiohttp.ClientSession(base_url=base_url) as session:
        answer = await call(
            session, "POST", "/auth/register", json={"login": login, "password": password}
        )
    assert answer.status == 200, answer.body
    assert answer.data["user"]["login"] == login, answer.body


async def token_for(server: Server, login: str, role: str) -> str:
    """``attune token create --login LOGIN --role ROLE`` on the server's database."""
    code, out, err = await run_cli(
        ["token", "create", "--name", f"trust-{role}", "--login", login, "--role", role],
        server.env,
        server.tmp,
    )
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert token.startswith("att_"), out
    return token


# -- waiting ----------------------------------------------------------------------------------


async def status_of(admin: aiohttp.ClientSession, execution_id: int) -> str:
    answer = await call(admin, "GET", f"/api/v1/executions/{execution_id}")
    assert answer.status == 200, answer.body
    return str(answer.data["status"])


async def wait_status(
    admin: aiohttp.ClientSession, execution_id: int, wanted: set[str], timeout_s: float = 10.0
) -> str:
    status: str = await eventually(
        lambda: status_of(admin, execution_id),
        f"execution #{execution_id} to be one of {sorted(wanted)}",
        timeout_s,
        interval_s=POLL_S,
        done=lambda s: s in wanted,
    )
    return status


# -- Slack ------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:10].upper()


@dataclass(frozen=True)
class SlackUser:
    id: str
    name: str


@dataclass
class SlackAnswer:
    status: int
    body: Any
    elapsed_s: float

    @property
    def text(self) -> str:
        return str(self.body.get("text", "")) if isinstance(self.body, dict) else str(self.body)


async def _post_signed(
    base_url: str, fields: dict[str, str], headers: dict[str, str] | None = None
) -> SlackAnswer:
    return SlackAnswer(*await post_signed(base_url, fields, headers=headers))


async def slash(
    base_url: str, standin: SlackStandIn, user: SlackUser, channel: str, text: str
) -> SlackAnswer:
    """``/attune <text>`` typed by ``user`` in ``channel``, signed as Slack signs it."""
    fields = slash_fields(
        text,
        channel_id=channel,
        user_id=user.id,
        user_name=user.name,
        response_url=standin.response_url(uuid.uuid4().hex),
    )
    return await _post_signed(base_url, fields)


@dataclass(frozen=True)
class Click:
    """One click of a button, as Slack describes it in a ``block_actions`` payload."""

    user: SlackUser
    channel: str
    action_id: str
    value: str
    response_key: str
    action_ts: str

    def payload(self, standin: SlackStandIn) -> dict[str, Any]:
        return {
            "type": "block_actions",
            "user": {
                "id": self.user.id,
                "username": self.user.name,
                "name": self.user.name,
                "team_id": TEAM_ID,
            },
            "api_app_id": "ASCENARIO",
            "token": "legacy-verification-token",
            "container": {
                "type": "message",
                "message_ts": "1700000000.000100",
                "channel_id": self.channel,
                "is_ephemeral": False,
            },
            "trigger_id": f"1337.42.{uuid.uuid4().hex}",
            "team": {"id": TEAM_ID, "domain": "scenario"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": self.channel, "name": "ops"},
            "response_url": standin.response_url(self.response_key),
            "actions": [
                {
                    "action_id": self.action_id,
                    "block_id": f"block-{self.value}",
                    "value": self.value,
                    "type": "button",
                    "text": {"type": "plain_text", "text": self.action_id},
                    "action_ts": self.action_ts,
                }
            ],
        }


def new_click(user: SlackUser, channel: str, action_id: str, value: str) -> Click:
    return Click(
        user=user,
        channel=channel,
        action_id=action_id,
        value=str(value),
        response_key=uuid.uuid4().hex,
        action_ts=f"{time.time():.6f}",
    )


async def click(
    base_url: str, standin: SlackStandIn, the_click: Click, *, retry_num: int | None = None
) -> SlackAnswer:
    """POST the click to ``/slack/events`` (form field ``payload``), signed like a command;
    ``retry_num`` marks it as Slack's retry of an earlier delivery."""
    headers = {}
    if retry_num is not None:
        headers = {"X-Slack-Retry-Num": str(retry_num), "X-Slack-Retry-Reason": "http_timeout"}
    fields = {"payload": json.dumps(the_click.payload(standin))}
    return await _post_signed(base_url, fields, headers)


def answers(standin: SlackStandIn, key: str) -> list[Call]:
    """What the app POSTed to the response URL ``key``."""
    return standin.find("response_url", target=key)


async def answer_at(standin: SlackStandIn, key: str, timeout_s: float = 10.0) -> str:
    """The text of the first answer posted to the response URL ``key`` (bounded wait)."""
    posted = await eventually(
        lambda: answers(standin, key), f"an answer posted to response URL {key}", timeout_s
    )
    return str(posted[0].json().get("text", ""))


def buttons(blocks: list[dict[str, Any]] | None) -> dict[str, str]:
    """action_id -> value of every button in ``blocks``."""
    found: dict[str, str] = {}
    for block in blocks or []:
        for element in block.get("elements") or []:
            if element.get("type") == "button":
                found[str(element["action_id"])] = str(element.get("value", ""))
    return found
