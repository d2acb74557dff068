"""Run forms in Slack: ``/attune run pack.action`` with required parameters missing opens a
modal built from the action's schema (:mod:`bot.slack_forms`); submitting it runs the action
through the same handler, gate, confirmation and audit as a typed ``run``.

Opening: only for a single ``run`` of a known, enabled action that the user's role may run
(anyone else gets the handler's reply: the refusal, audited, or the usage message, and no
modal). ``views.open`` is called on the ack path (the command's ``trigger_id`` lasts 3 s),
bounded by :data:`OPEN_TIMEOUT_S`; when it fails, the command gets the usage message as before.

Submitting: the values are read and checked against the schema; problems are shown on their
fields (``response_action: errors``) and nothing runs. The permission is checked again (the
gate's check, audited). The execution's idempotency key is the view's id, so a form submitted
twice, to this process or another one on the same database, runs once; this process also
remembers the views it acted on, so a confirmation is not asked twice either. The card goes to
the channel the command was typed in (kept in the view's metadata); the reply the command would
have had (the execution number, or the confirmation buttons) is sent ephemerally through the
command's ``response_url`` (past its 30 minutes, ephemerally in the channel).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Coroutine
from typing import Any

from cachetools import TTLCache
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bot import commands
from bot.handler import ChatContext, CommandHandler, Reply
from bot.slack_forms import (
    ERROR_MAX,
    FIELD_PREFIX,
    RUN_FORM,
    FormOrigin,
    build_form,
    first_field,
    missing_required,
    properties,
    read_form,
)
from bot.slack_roles import SlackRoles
from engine.background import Background
from engine.errors import EngineError
from engine.policy import NO_ACCESS

log = logging.getLogger(f"attune.{__name__}")

#: Bound on ``views.open`` (Slack's ``trigger_id`` expires 3 s after the command).
OPEN_TIMEOUT_S = 2.0
#: How long Slack honours a slash command's ``response_url`` (a little less, to be safe).
RESPONSE_URL_TTL_S = 29 * 60
#: How long this process remembers the forms it acted on (Slack keeps a view for hours).
SEEN_TTL_S = 6 * 3600.0
SEEN_MAX = 10_000
#: A parameter named in the gate's refusal, to show it on that field.
_NAMED = re.compile(r"parameter '([^'.]+)")


def form_key(view_id: str) -> str:
    """The idempotency key of the execution a form starts."""
    return f"slack-view:{view_id}"


class RunForms:
    def __init__(self, handler: CommandHandler, client: AsyncWebClient, roles: SlackRoles) -> None:
        self.handler = handler
        self.client = client
        self.roles = roles
        self._acted: TTLCache[str, bool] = TTLCache(maxsize=SEEN_MAX, ttl=SEEN_TTL_S)
        self._background = Background()

    async def offer(self, text: str, ctx: ChatContext, trigger_id: str) -> bool:
        """Open the form when ``text`` is one ``run`` missing required parameters that the
        user may run; True when the modal was opened (the command is then answered empty)."""
        try:
            command = commands.parse(text)
        except commands.UsageError:
            return False
        if not isinstance(command, commands.Run) or not trigger_id:
            return False
        runtime = self.handler.runtime
        if ctx.role == NO_ACCESS or not runtime.gate.policy.allows(
            ctx.role, "run", command.action_ref
        ):
            return False  # the handler refuses it, audited
        try:
            action = await runtime.catalog.get_action(command.action_ref)
        except EngineError:
            return False  # unknown: the handler says so
        schema, given = action.param_schema, command.parameters
        if not action.enabled or not missing_required(schema, given):
            return False
        if set(given) - set(properties(schema)):
            return False  # an unknown name: the usage message names it
        secrets = {k: v for k, v in given.items() if k in action.secrets}
        origin = FormOrigin(
            action_ref=action.ref,
            channel_id=ctx.channel_id,
            team_id=ctx.team_id,
            response_url=ctx.response_url,
            asked_at=time.time(),
            sealed=runtime.gate.secrets.seal(secrets),
        )
        view = build_form(
            action.ref,
            action.description,
            schema,
            {k: v for k, v in given.items() if k not in secrets},
            origin,
            kept_secrets=frozenset(secrets),
            confirm=action.confirm,
        )
        if view is None:
            log.info("%s: its form would not fit a Slack modal; usage given", action.ref)
            return False
        try:
            await asyncio.wait_for(
                self.client.views_open(trigger_id=trigger_id, view=view), OPEN_TIMEOUT_S
            )
        except Exception as exc:
            log.warning("%s: the form was not opened (%s); usage given", action.ref, exc)
            return False
        return True

    def register(self, app: AsyncApp) -> None:
        app.view(RUN_FORM)(self.on_submit)

    async def on_submit(self, ack: Any, body: dict[str, Any], view: dict[str, Any]) -> None:
        """A submitted form: its problems on its fields, or the run (see the module)."""
        where = first_field(view) or FIELD_PREFIX
        origin = FormOrigin.from_metadata(str(view.get("private_metadata") or ""))
        view_id = str(view.get("id") or "")
        if origin is None or not view_id:
            await ack(response_action="errors", errors={where: "This form cannot be used."})
            return
        if view_id in self._acted:
            await ack()  # submitted twice: acted on already
            return
        user = body.get("user") or {}
        user_id = str(user.get("id", ""))
        fresh = time.time() - origin.asked_at < RESPONSE_URL_TTL_S
        ctx = ChatContext(
            source="slack",
            sink="slack",
            user_id=user_id,
            user_name=str(user.get("username") or user.get("name") or user_id),
            role=self.roles.role_for(user_id),
            channel_id=origin.channel_id,
            team_id=origin.team_id or (body.get("team") or {}).get("id"),
            response_url=origin.response_url if fresh else None,
        )
        runtime = self.handler.runtime
        parameters: dict[str, Any] = {}
        if runtime.gate.policy.allows(ctx.role, "run", origin.action_ref):
            try:
                action = await runtime.catalog.get_action(origin.action_ref)
                kept = runtime.gate.secrets.open(origin.sealed)
            except EngineError as exc:
                await ack(response_action="errors", errors={where: exc.message[:ERROR_MAX]})
                return
            values = (view.get("state") or {}).get("values") or {}
            submission = read_form(action.param_schema, values, kept)
            if submission.errors:
                await ack(response_action="errors", errors=submission.errors)
                return
            parameters = submission.parameters
        # Refused here (no permission any more) or run: the gate checks and audits either way.
        self._acted[view_id] = True
        reply = await self.handler.run(
            commands.Run(origin.action_ref, parameters), ctx, idempotency_key=form_key(view_id)
        )
        if not reply.ok:
            self._acted.pop(view_id, None)
            named = _NAMED.search(reply.text)
            block = FIELD_PREFIX + named.group(1) if named else where
            if not any(b.get("block_id") == block for b in view.get("blocks") or []):
                block = where
            await ack(response_action="errors", errors={block: reply.text[:ERROR_MAX]})
            return
        await ack()
        self._in_background(self._tell(ctx, reply))

    async def _tell(self, ctx: ChatContext, reply: Reply) -> None:
        """The reply the typed command would have had, seen only by its requester: through
        the command's ``response_url`` while it lasts, else as an ephemeral message in the
        channel (a modal outlives the URL, and a confirmation must not go unseen)."""
        try:
            if ctx.response_url:
                await AsyncWebhookClient(ctx.response_url, session=self.client.session).send(
                    text=reply.text, blocks=reply.blocks, response_type="ephemeral"
                )
            elif ctx.channel_id:
                await self.client.chat_postEphemeral(
                    channel=ctx.channel_id, user=ctx.user_id, text=reply.text, blocks=reply.blocks
                )
        except Exception as exc:
            log.warning("a form's reply was not sent: %s", exc)

    def _in_background(self, work: Coroutine[Any, Any, object]) -> None:
        self._background.run(work)
