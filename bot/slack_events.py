"""Slack events as ways in: ``@attune <text>`` in a channel (``app_mention``) and direct
messages to the bot (``message`` events with ``channel_type: im``). The text goes to the same
command handler as ``/attune``, so the same gate, permissions, confirmation and audit apply.

Answers: in a DM, in the DM. In a channel, in the mention's thread: what the person asked to
be done (a run's ack, a cancel) for all to see; what they asked to read (``help``,
``history``, ``last``, ``status``, lists) and refusals or usage messages only for them, as an
ephemeral message where Slack allows (as the slash command answers: their history or last
output may come from a DM or a private channel). The cards and results of what runs go to
that channel, as for the slash command.

Ignored: messages from bots (ours too), edits, deletions and every other ``subtype``.

Slack retries an event it got no timely 200 for, with the same ``event_id``: a process acts on
an event once (its memory of event ids; in HTTP mode the signed-request memory in
:mod:`bot.slack_app` answers the retry before it gets here), and across processes the event id
is the idempotency key of what it runs, so another process finds the first's execution and
stays silent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache
from slack_bolt.app.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from bot import commands
from bot.handler import ChatContext, CommandHandler, Reply
from bot.slack_app import RecentKeys, unescape
from bot.slack_roles import SlackRoles
from bot.slack_zones import UserZones
from engine.background import Background
from engine.gate import batch_key

log = logging.getLogger(f"attune.{__name__}")

#: A user mention as Slack writes it: ``<@U123>`` or ``<@U123|name>``.
_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")
#: A link as Slack writes it in a message: ``<https://x.example/a|label>`` or ``<mailto:...>``.
_LINK = re.compile(r"<((?:https?|mailto):[^|>\s]+)(?:\|[^>]*)?>")
#: Prefix of the idempotency key of what an event runs.
EVENT_KEY = "slack-event:"
#: Bound on asking Slack for a user's name, and how long an answer is kept.
NAME_LOOKUP_TIMEOUT_S = 1.0
NAME_TTL_S = 3600.0


class UserNames:
    """Slack users' names (``users.info``, the ``users:read`` scope): an event carries only the
    user id, while a slash command also carries the name, which executions keep beside the id
    (for ``history @name`` and for people to read). Without an answer the id stands in (and is
    asked again next time)."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client
        self._known: TTLCache[str, str] = TTLCache(maxsize=10_000, ttl=NAME_TTL_S)

    async def name_of(self, user_id: str) -> str:
        known = self._known.get(user_id)
        if known is not None:
            return known
        try:
            resp = await asyncio.wait_for(
                self.client.users_info(user=user_id), NAME_LOOKUP_TIMEOUT_S
            )
        except Exception as exc:  # Slack's errors, a missing scope, a timeout
            log.info("Slack user %s: no name from users.info: %s", user_id, exc)
            return user_id
        name = (resp.get("user") or {}).get("name")
        if not isinstance(name, str) or not name:
            return user_id
        self._known[user_id] = name
        return name


@dataclass(frozen=True)
class Said:
    """A person talking to the bot: the command text and where to answer."""

    text: str
    user_id: str
    channel_id: str
    team_id: str | None
    #: The message's own ``ts`` and its thread's (None outside a thread).
    ts: str | None
    thread_ts: str | None
    direct: bool

    @property
    def answer_thread(self) -> str | None:
        """Where the answer goes: the mention's thread in a channel; in a DM, the thread it
        was typed in (None: the DM itself)."""
        if self.direct:
            return self.thread_ts
        return self.thread_ts or self.ts


#: Commands that only read: in a channel their answer is for the asker alone.
READS = (
    commands.Help,
    commands.HelpAliases,
    commands.Actions,
    commands.History,
    commands.Last,
    commands.Status,
    commands.Templates,
    commands.Schedules,
    commands.Rules,
)


def asks_to_read(text: str) -> bool:
    """Whether ``text`` is a command that only reads (see :data:`READS`)."""
    try:
        return isinstance(commands.parse(text), READS)
    except commands.UsageError:
        return False


def bot_user_ids(body: Mapping[str, Any]) -> set[str]:
    """Our bot's user id(s), from the event's ``authorizations`` (Slack sends them)."""
    found = set()
    for grant in body.get("authorizations") or []:
        if isinstance(grant, Mapping) and grant.get("is_bot") and grant.get("user_id"):
            found.add(str(grant["user_id"]))
    return found


def command_text(raw: str, bots: set[str]) -> str:
    """The command in a message: the bot's mentions dropped (a leading mention of anyone when
    the bot's id is not known), links unwrapped to their address, Slack's escapes undone."""
    text = raw.strip()
    if bots:
        text = _MENTION.sub(lambda m: "" if m.group(1) in bots else m.group(0), text)
    else:
        text = re.sub(r"^\s*" + _MENTION.pattern, "", text)
    text = _LINK.sub(lambda m: m.group(1), text)
    return unescape(text).strip()


def said(event: Mapping[str, Any], body: Mapping[str, Any]) -> Said | None:
    """What a person said to the bot in ``event``, or None when the event is not that (a bot's
    message, an edit, a deletion, a message in a channel without a mention)."""
    kind = event.get("type")
    if kind == "app_mention":
        direct = False
    elif kind == "message" and event.get("channel_type") == "im":
        direct = True
    else:
        return None
    user = event.get("user")
    bots = bot_user_ids(body)
    if (
        event.get("subtype")
        or event.get("bot_id")
        or event.get("bot_profile")
        or not isinstance(user, str)
        or not user
        or user in bots
        or not event.get("channel")
    ):
        return None
    return Said(
        text=command_text(str(event.get("text") or ""), bots),
        user_id=user,
        channel_id=str(event["channel"]),
        team_id=event.get("team") or body.get("team_id"),
        ts=event.get("ts"),
        thread_ts=event.get("thread_ts"),
        direct=direct,
    )


def register_events(
    app: AsyncApp, handler: CommandHandler, client: AsyncWebClient, roles: SlackRoles
) -> None:
    """Listen for mentions and DMs on ``app`` (HTTP mode and Socket Mode alike)."""
    taken = RecentKeys()
    zones = UserZones(client)
    names = UserNames(client)
    in_background = Background().run

    async def on_event(ack: Any, body: dict[str, Any], event: dict[str, Any]) -> None:
        await ack()  # first: Slack retries an event not acked within 3 s
        heard = said(event, body)
        if heard is None:
            return
        event_id = str(body.get("event_id") or "")
        if event_id and not taken.add(event_id):
            return  # Slack's retry of an event this process took
        in_background(answer(heard, event_id))

    async def answer(heard: Said, event_id: str) -> None:
        key = f"{EVENT_KEY}{event_id}" if event_id else None
        try:
            if key is not None and await already_ran(key):
                log.warning(
                    "Slack event %s came again: its execution exists; not acted on again", event_id
                )
                return
            scheduling = commands.normalise(heard.text).lower().startswith("schedule ")
            ctx = ChatContext(
                source="slack",
                sink="slack",
                user_id=heard.user_id,
                user_name=await names.name_of(heard.user_id),
                role=roles.role_for(heard.user_id),
                channel_id=heard.channel_id,
                team_id=heard.team_id,
                timezone=await zones.zone_of(heard.user_id) if scheduling else None,
            )
            reply = await handler.handle(heard.text, ctx, key)
            await post(heard, reply)
        except Exception:
            log.exception("Slack event %s was not answered", event_id or "(no id)")

    async def already_ran(key: str) -> bool:
        """Another process (or an earlier life of this one) acted on this event: its run, or
        the first run of its batch, is recorded under the event's key."""
        service = handler.runtime.service
        for candidate in (key, batch_key(key, 0)):
            if await service.find_idempotent(candidate) is not None:
                return True
        return False

    async def post(heard: Said, reply: Reply) -> None:
        if not reply.text and not reply.blocks:
            return  # nothing to say (an alias whose ack is off): Slack refuses an empty message
        thread = heard.answer_thread
        if not heard.direct and (not reply.ok or asks_to_read(heard.text)):
            try:
                await client.chat_postEphemeral(
                    channel=heard.channel_id,
                    user=heard.user_id,
                    text=reply.text,
                    blocks=reply.blocks,
                    thread_ts=thread,
                )
                return
            except Exception as exc:  # e.g. the person left: say it in the thread instead
                log.info("ephemeral answer refused (%s); answering in the thread", exc)
        await client.chat_postMessage(
            channel=heard.channel_id, text=reply.text, blocks=reply.blocks, thread_ts=thread
        )

    app.event("app_mention")(on_event)
    app.event("message")(on_event)
