"""The Slack face: a Bolt ``AsyncApp`` answering ``/attune``, in HTTP mode (dispatched from our
own aiohttp route ``POST /slack/events``) or in Socket Mode (when an app token is set).

The ack carries the reply of the command handler, and waits only on the database write of the
submission: the card and the results are posted later by the callback listener. Signatures are
verified by Bolt (forged, or older than 5 minutes: 401).

Replays (HTTP mode): a signed request is good for 5 minutes, so each process remembers the
signatures (and body digests) it was sent for twice that long, and answers the same signed
request again without acting on it: a slash command with an ephemeral "already received", any
other request (a button click, Slack's retry marked ``X-Slack-Retry-Num``) with an empty 200 so
Slack stops retrying. Across processes (several ``attune serve`` behind a load balancer) the
memory is not shared; there a replayed ``run`` or ``rerun`` finds the execution of the first by
its idempotency key (the signature) in the database and starts nothing new.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from cachetools import TTLCache
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.authorization import AuthorizeResult
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands, render
from bot.handler import ChatContext, CommandHandler
from bot.slack_inquiries import may_answer_in_slack, parse_modal, show_settled
from bot.slack_roles import SlackRoles
from bot.slack_run_forms import RunForms
from bot.slack_zones import UserZones
from config import Settings
from engine.acks_first import AcksFirst
from engine.automation.webhooks import SEEN_MAX, SeenCalls
from engine.background import Background
from engine.errors import EngineError, InvalidRequest, Unauthorized
from engine.inquiries import InquiryService, inquiries_of
from engine.inquiry_records import Inquiry

log = logging.getLogger(f"attune.{__name__}")

SLASH_COMMAND = "/attune"
#: Time allowed for one Slack Web API call (retries come on top).
SLACK_TIMEOUT_S = 10


def unescape(text: str) -> str:
    """Undo Slack's escaping of ``&``, ``<`` and ``>`` in command text (``&amp;`` last)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def build_web_client(settings: Settings) -> AsyncWebClient:
    """Web API client; 429s wait for Retry-After, 5xx and connection errors retry once.

    It keeps one aiohttp session (connections reused); call from the running loop and close
    ``client.session`` at shutdown."""
    assert settings.slack_bot_token is not None
    base_url = (
        settings.slack_api_url
        if settings.slack_api_url.endswith("/")
        else (settings.slack_api_url + "/")
    )
    return AsyncWebClient(
        session=aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT_S)),
        token=settings.slack_bot_token.get_secret_value(),
        base_url=base_url,
        timeout=SLACK_TIMEOUT_S,
        retry_handlers=[
            AsyncRateLimitErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=1),
            AsyncConnectionErrorRetryHandler(max_retry_count=1),
        ],
    )


class RecentKeys:
    """Keys seen in the last ``ttl_s`` seconds: a retried interactive payload acts once.
    Bounded: past ``max_size`` the expired go, then the least recently added."""

    def __init__(self, ttl_s: float = 600.0, max_size: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self._seen: TTLCache[str, bool] = TTLCache(maxsize=max_size, ttl=ttl_s)

    def add(self, key: str) -> bool:
        """True the first time ``key`` is seen (within the TTL)."""
        if key in self._seen:
            return False
        self._seen[key] = True
        return True


def _button_command(action_id: str, value: str) -> commands.Command | None:
    try:
        if action_id == render.CANCEL_ACTION:
            return commands.Cancel(int(value))
        if action_id == render.RERUN_ACTION:
            return commands.Rerun(int(value))
    except ValueError:
        return None
    if action_id == render.CONFIRM_ACTION:
        return commands.Confirm(value)
    if action_id == render.ABORT_ACTION:
        return commands.Abort(value)
    return None


class _AcksFirstApp(AsyncApp):
    """Bolt's app, counting each request it dispatches (HTTP and Socket Mode alike) as one a
    person waits on: background work steps aside meanwhile (:mod:`engine.acks_first`). With
    ``process_before_response`` the dispatch includes the listener, so the ack is built."""

    def __init__(self, acks_first: AcksFirst, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._acks_first = acks_first

    async def async_dispatch(self, req: AsyncBoltRequest) -> BoltResponse:
        with self._acks_first.request():
            return await super().async_dispatch(req)


def build_slack_app(
    settings: Settings,
    handler: CommandHandler,
    client: AsyncWebClient,
    roles: SlackRoles | None = None,
) -> AsyncApp:
    """The Bolt app: ``/attune``, ``@attune`` mentions and DMs, and the buttons of cards and
    confirmations."""
    roles = roles or SlackRoles(settings.slack_roles, settings.slack_default_role)
    recent = RecentKeys()
    secret = settings.slack_signing_secret
    token = client.token or ""

    async def authorize(
        enterprise_id: str | None, team_id: str | None, user_id: str | None
    ) -> AuthorizeResult:
        # One workspace, one bot token: no auth.test call on the path of the ack.
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token)

    # Bolt's own copy of the client carries no token: the token comes from ``authorize``
    # (a client with one as well makes Bolt warn at every start that it is ignored).
    bolt_client = AsyncWebClient(
        base_url=client.base_url,
        timeout=client.timeout,
        session=client.session,
        retry_handlers=client.retry_handlers,
    )
    app = _AcksFirstApp(
        handler.runtime.acks_first,
        client=bolt_client,
        authorize=authorize,
        signing_secret=secret.get_secret_value() if secret else None,
        # The listener returns within the ack: no 10 ms ack polling, no lazy thread.
        process_before_response=True,
        request_verification_enabled=secret is not None,
    )

    zones = UserZones(client)
    forms = RunForms(handler, client, roles)
    forms.register(app)

    @app.command(SLASH_COMMAND)
    async def on_command(ack: Any, command: dict[str, Any], request: AsyncBoltRequest) -> None:
        text = unescape(str(command.get("text", "")))
        ctx = ChatContext(
            source="slack",
            sink="slack",
            user_id=str(command.get("user_id", "")),
            user_name=str(command.get("user_name") or command.get("user_id") or "unknown"),
            role=roles.role_for(str(command.get("user_id", ""))),
            channel_id=command.get("channel_id"),
            team_id=command.get("team_id"),
            response_url=command.get("response_url"),
            timezone=await zones.zone_of(str(command.get("user_id", "")))
            if commands.normalise(text).lower().startswith("schedule ")
            else None,
        )
        if await forms.offer(text, ctx, str(command.get("trigger_id") or "")):
            await ack()  # the form is open: it runs the action when submitted
            return
        # A signed request is one command: the same one replayed to another process (that did
        # not see it) finds the first's execution by this key instead of starting another.
        signature = _header(request.headers, _SIGNATURE)
        key = f"slack-signature:{signature}" if signature else None
        reply = await handler.handle(text, ctx, key)
        await ack(response_type="ephemeral", text=reply.text, blocks=reply.blocks)

    #: Runs work beside the request: with ``process_before_response`` Slack gets its ack
    #: only when the listener returns, so slow calls go here, off its 3 s.
    in_background = Background().run

    action_ids = re.compile(
        "^("
        + "|".join(
            (render.CANCEL_ACTION, render.RERUN_ACTION, render.CONFIRM_ACTION, render.ABORT_ACTION)
        )
        + ")$"
    )

    @app.action(action_ids)
    async def on_button(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        await ack()  # first: the work below must not hold Slack's 3 s budget
        user = body.get("user") or {}
        user_id = str(user.get("id", ""))
        key = f"{user_id}:{action.get('action_ts')}:{action.get('action_id')}"
        if not recent.add(key):
            return  # Slack retried a click that was already acted on
        command = _button_command(str(action.get("action_id")), str(action.get("value", "")))
        if command is None:
            return
        ctx = ChatContext(
            source="slack",
            sink="slack",
            user_id=user_id,
            user_name=str(user.get("username") or user.get("name") or user_id),
            role=roles.role_for(user_id),
            channel_id=(body.get("channel") or {}).get("id"),
            team_id=(body.get("team") or {}).get("id"),
            response_url=body.get("response_url"),
        )
        in_place = isinstance(command, commands.Confirm | commands.Abort)

        async def act() -> None:
            reply = await handler.run(command, ctx, idempotency_key=f"slack:{key}")
            try:
                await respond(text=reply.text, response_type="ephemeral", replace_original=in_place)
            except Exception as exc:
                log.warning("could not answer a button click: %s", exc)

        in_background(act())

    def inquiries() -> InquiryService:
        # Looked up when an answer comes, not when the app is built.
        return inquiries_of(handler.runtime)

    async def refuse(respond: Any, text: str) -> None:
        with contextlib.suppress(Exception):
            await respond(text=text, response_type="ephemeral", replace_original=False)

    async def answerable(inquiry_id: int, user_id: str, respond: Any) -> Inquiry | None:
        try:
            inquiry = await inquiries().get(inquiry_id)
        except EngineError as exc:
            await refuse(respond, exc.message)
            return None
        if not may_answer_in_slack(inquiry, user_id, roles.role_for(user_id)):
            await refuse(respond, f"You are not assigned to inquiry #{inquiry_id}.")
            return None
        if inquiry.status != "pending":
            await refuse(respond, f"Inquiry #{inquiry_id} is already {inquiry.status}.")
            return None
        return inquiry

    async def record_answer(inquiry: Inquiry, answer: Any, user_id: str) -> Inquiry | str:
        """Record the answer: the settled inquiry, or the problem (as text) when refused."""
        try:
            return await inquiries().answer(inquiry, answer, f"<@{user_id}>")
        except EngineError as exc:
            return exc.message

    @app.action(re.compile(f"^{render.INQUIRY_ANSWER_ACTION}_\\d+$"))
    async def on_inquiry_choice(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        await ack()
        user_id = str((body.get("user") or {}).get("id", ""))
        try:
            choice = json.loads(str(action.get("value", "")))
            inquiry_id, field, value = int(choice["i"]), str(choice["f"]), choice["v"]
        except (ValueError, KeyError, TypeError):
            return
        inquiry = await answerable(inquiry_id, user_id, respond)
        if inquiry is not None:
            settled = await record_answer(inquiry, {field: value}, user_id)
            if isinstance(settled, str):
                await refuse(respond, settled)
            else:
                in_background(show_settled(client, settled, inquiries()))

    @app.action(render.INQUIRY_OPEN_ACTION)
    async def on_inquiry_open(
        ack: Any, body: dict[str, Any], action: dict[str, Any], respond: Any
    ) -> None:
        await ack()
        user_id = str((body.get("user") or {}).get("id", ""))
        try:
            inquiry_id = int(str(action.get("value", "")))
        except ValueError:
            return
        inquiry = await answerable(inquiry_id, user_id, respond)
        if inquiry is None:
            return
        try:
            await client.views_open(
                trigger_id=str(body.get("trigger_id", "")), view=render.inquiry_modal(inquiry)
            )
        except Exception as exc:
            log.warning("inquiry %s: the modal was not opened: %s", inquiry_id, exc)

    @app.view(render.INQUIRY_MODAL)
    async def on_inquiry_modal(ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        user_id = str((body.get("user") or {}).get("id", ""))
        try:
            inquiry = await inquiries().get(int(str(view.get("private_metadata", ""))))
        except (ValueError, EngineError):
            await ack()  # nothing to answer any more
            return
        first: dict[str, Any] = next(iter(render.inquiry_modal(inquiry)["blocks"][1:]), {})
        where = str(first.get("block_id", "field:response"))
        if not may_answer_in_slack(inquiry, user_id, roles.role_for(user_id)):
            await ack(response_action="errors", errors={where: "You are not assigned to it."})
            return
        answer = parse_modal(inquiry, (view.get("state") or {}).get("values") or {})
        settled = await record_answer(inquiry, answer, user_id)
        if not isinstance(settled, str):
            await ack()
            in_background(show_settled(client, settled, inquiries()))
            return
        problem = settled
        named = re.match(r"response\.([^.:]+)", problem)
        block = f"field:{named.group(1)}" if named else where
        await ack(response_action="errors", errors={block: problem[:150]})

    # Mentions and DMs: the same handler (imported here: that module imports this one).
    from bot.slack_events import register_events

    register_events(app, handler, client, roles)

    @app.error
    async def on_error(error: Exception, body: dict[str, Any]) -> None:
        log.error("Slack request failed: %s", error, exc_info=error)

    return app


#: What Bolt raises on a body it cannot parse: JSON or UTF-8 errors (ValueError), a payload
#: that is JSON but not an object (AttributeError, TypeError, LookupError on ``.get``/``[]``).
_UNPARSABLE = (ValueError, TypeError, AttributeError, LookupError)


_TIMESTAMP = "X-Slack-Request-Timestamp"
_SIGNATURE = "X-Slack-Signature"
#: Set by Slack on its retries of a delivery it got no timely 200 for (same body).
_RETRY_NUM = "X-Slack-Retry-Num"
#: How old a signed request may be, as Bolt allows (Slack's own advice).
SIGNATURE_MAX_AGE_S = 300
#: What a replayed slash command is answered (it is not run again).
REPLAY_TEXT = (
    "This request was already received (the same signed request came twice); it was not run again."
)


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    """A header of a Bolt request (lower-case names, each a list of values)."""
    values = headers.get(name.lower())
    if isinstance(values, str):
        return values
    return str(values[0]) if values else None


class SeenRequests:
    """The signed Slack requests this process acted on, for as long as their signature is
    good (:data:`SIGNATURE_MAX_AGE_S` either way of the server's clock). Bounded in time and
    size as the webhooks' memory of timestamped calls
    (:class:`engine.automation.webhooks.SeenCalls`).

    A request is known by its signature and by its body's digest: Slack may sign its retry
    (``X-Slack-Retry-Num``) anew, over the same body. Only requests that carry a valid
    signature are remembered: anyone else cannot make a real request look like a replay."""

    def __init__(self, max_age_s: float = SIGNATURE_MAX_AGE_S, max_size: int = SEEN_MAX) -> None:
        self._seen = SeenCalls(max_age_s, max_size)

    def first_time(self, signature: str, body: bytes, retried: bool) -> bool:
        """True, and remembered, the first time; False for a replay or a retry of a request
        already taken."""
        by_signature = "signature:" + signature
        by_body = "body:" + hashlib.sha256(body).hexdigest()
        if self._seen.seen(by_body) or (not retried and self._seen.seen(by_signature)):
            return False
        self._seen.remember(by_signature)
        self._seen.remember(by_body)
        return True

    def failed(self, body: bytes) -> None:
        """The request failed on our side: Slack's retry of it may act."""
        self._seen.forget("body:" + hashlib.sha256(body).hexdigest())


def _replay_answer(bolt_request: AsyncBoltRequest) -> web.Response:
    """200, so Slack does not retry; a slash command also tells whoever sent it again."""
    body = bolt_request.body if isinstance(bolt_request.body, dict) else {}
    if body.get("command"):
        return web.json_response({"response_type": "ephemeral", "text": REPLAY_TEXT})
    return web.Response(status=200)


def _signed(secret: bytes, raw_body: bytes, headers: Mapping[str, str]) -> bool:
    """Whether ``raw_body`` carries Slack's signature (``v0=HMAC-SHA256(v0:<ts>:<body>)``),
    made within :data:`SIGNATURE_MAX_AGE_S`; over the bytes, so any body can be checked."""
    if not _well_formed(headers):
        return False
    timestamp = headers[_TIMESTAMP]
    if abs(time.time() - int(timestamp)) > SIGNATURE_MAX_AGE_S:
        return False
    base = b"v0:" + timestamp.encode() + b":" + raw_body
    expected = "v0=" + hmac.new(secret, base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, headers.get(_SIGNATURE, ""))


def _well_formed(headers: Mapping[str, str]) -> bool:
    """A timestamp of digits and an ASCII signature (Bolt fails with a 500 on others)."""
    timestamp = headers.get(_TIMESTAMP, "")
    signature = headers.get(_SIGNATURE, "")
    return timestamp.isascii() and timestamp.isdigit() and signature.isascii()


def slack_routes(app: AsyncApp, signing_secret: str | None = None) -> list[web.RouteDef]:
    """``POST /slack/events`` for the API server (slash commands and interactivity).

    Bolt verifies signatures after parsing the body, and fails with a 500 on a body it cannot
    parse or a timestamp header that is not a number: those are answered here instead, 401 when
    the request is not signed with ``signing_secret`` and 400 when it is, without a traceback.
    """
    secret = signing_secret.encode() if signing_secret else None
    seen = SeenRequests()

    async def refusal(request: web.Request) -> EngineError:
        if secret is not None and not _signed(secret, await request.read(), request.headers):
            return Unauthorized("invalid Slack request signature")
        return InvalidRequest("malformed Slack request")

    async def events(request: web.Request) -> web.Response:
        if secret is not None and not _well_formed(request.headers):
            raise Unauthorized("invalid Slack request signature")
        try:
            bolt_request = await to_bolt_request(request)
        except _UNPARSABLE:
            raise await refusal(request) from None
        raw = await request.read()
        # Bolt verifies every request below; a request signed here is one Bolt will take, so
        # only those are remembered (the others Bolt refuses with a 401).
        remembered = secret is not None and _signed(secret, raw, request.headers)
        if remembered:
            retried = _RETRY_NUM in request.headers
            if not seen.first_time(request.headers[_SIGNATURE], raw, retried):
                log.warning(
                    "a signed Slack request came again (%s); answered without acting on it",
                    f"Slack's retry {request.headers[_RETRY_NUM][:8]}" if retried else "a replay",
                )
                return _replay_answer(bolt_request)
        bolt_response = await app.async_dispatch(bolt_request)
        if remembered and bolt_response.status >= 500:
            seen.failed(raw)
        return await to_aiohttp_response(bolt_response)

    return [web.post("/slack/events", events)]
