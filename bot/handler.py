"""The command handler shared by Slack and the terminal chat: text in, a reply out.

Everything goes through the engine's gate (permissions, confirmations, audit). It never
raises: a bad command, an unknown action, a bad parameter or a missing permission becomes a
clear reply meant for the requester only; an unexpected error is logged and reported without
a trace.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from bot import alias_chat, commands, discovery, render
from bot import history as chat_history
from bot.commands import (
    Abort,
    Actions,
    Cancel,
    Confirm,
    Help,
    HelpAliases,
    History,
    Last,
    Rerun,
    Rules,
    RuleSwitch,
    Run,
    RunMany,
    RunTemplate,
    ScheduleRun,
    Schedules,
    Status,
    Templates,
    Unschedule,
    UsageError,
)
from bot.render_workflow import status_tree
from engine.catalog import action_record
from engine.clock import now_utc
from engine.errors import EngineError, Forbidden, NotYours
from engine.exec_schedules import ScheduleRequest, parse_every, schedules_of
from engine.exec_templates import TemplateView, templates_of
from engine.gate import BatchItem, NeedsConfirmation, Requester, Submitted
from engine.policy import NO_ACCESS
from engine.runtime import Runtime
from engine.workflows.run_tree import workflow_trees

log = logging.getLogger(f"attune.{__name__}")

Sink = Literal["slack", "terminal"]


@dataclass(frozen=True)
class ChatContext:
    """Who typed the command, with which role, and where results should go."""

    source: Literal["slack", "chat"]
    sink: Sink
    user_id: str
    user_name: str
    role: str = "operator"
    channel_id: str | None = None
    team_id: str | None = None
    response_url: str | None = None
    #: Terminal chat session whose listener prints this execution's news.
    session: str | None = None
    #: The user's IANA time zone where known (Slack's ``users.info``), for ``schedule``.
    timezone: str | None = None

    def requester(self) -> Requester:
        """Slack users are known by their stable user id (user names can change and are not
        unique across time); the name is kept beside it for people to read."""
        if self.source == "slack":
            extra: dict[str, Any] = {"user_id": self.user_id, "user_name": self.user_name}
            if self.team_id:
                extra["team_id"] = self.team_id
            return Requester(
                identity=self.user_id,
                role=self.role,
                source="slack",
                channel=self.channel_id,
                extra=extra,
            )
        return Requester(
            identity=self.user_name, role=self.role, source=self.source, channel=self.channel_id
        )

    def chat_route(self) -> dict[str, Any]:
        if self.sink == "terminal":
            return {"sink": "terminal", "session": self.session}
        route: dict[str, Any] = {
            "sink": "slack",
            "channel": self.channel_id,
            "user": self.user_id,
            "team": self.team_id,
        }
        if self.response_url:
            route["response_url"] = self.response_url
            route["response_url_expires"] = time.time() + 30 * 60
        return route


@dataclass
class Reply:
    text: str
    blocks: list[dict[str, Any]] | None = None
    execution_id: int | None = None
    ok: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class CommandHandler:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def handle(
        self, text: str, ctx: ChatContext, idempotency_key: str | None = None
    ) -> Reply:
        try:
            command = commands.parse(text)
        except UsageError as exc:  # maybe an action alias ("restart nginx on web1")
            return await alias_chat.answer(self, text, ctx, idempotency_key, exc)
        return await self.run(command, ctx, idempotency_key, what=text)

    async def run(
        self,
        command: commands.Command,
        ctx: ChatContext,
        idempotency_key: str | None = None,
        what: str = "",
    ) -> Reply:
        """Carry out a parsed command (typed, or a button's); never raises."""
        try:
            if ctx.role == NO_ACCESS:
                return await self._no_access(command, ctx)
            return await self.dispatch(command, ctx, idempotency_key)
        except EngineError as exc:
            hint = await discovery.hint_for(self.runtime, command, ctx.requester(), exc)
            return Reply(_user_message(exc, ctx) + hint, ok=False)
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("command failed (ref %s): %r", ref, what[:200] or command)
            return Reply(
                f"Something went wrong on our side (error ref {ref}); it is logged.", ok=False
            )

    async def dispatch(
        self, command: commands.Command, ctx: ChatContext, idempotency_key: str | None = None
    ) -> Reply:
        gate, catalog = self.runtime.gate, self.runtime.catalog
        who = ctx.requester()
        match command:
            case Run(action_ref, parameters):
                outcome = await gate.run(
                    who,
                    action_ref,
                    parameters,
                    chat=ctx.chat_route(),
                    idempotency_key=idempotency_key,
                )
                return self._submitted(outcome, ctx)
            case RunTemplate(template_ref, overrides):
                outcome = await templates_of(self.runtime).execute(
                    who,
                    template_ref,
                    overrides,
                    chat=ctx.chat_route(),
                    idempotency_key=idempotency_key,
                )
                reply = self._submitted(outcome, ctx)
                if isinstance(outcome, Submitted):
                    reply.text = reply.text.replace(":", f" from template `{template_ref}`:", 1)
                return reply
            case Templates():
                return Reply(_templates_list(await templates_of(self.runtime).list(who, "run")))
            case ScheduleRun():
                return await self._schedule(command, ctx, idempotency_key)
            case Schedules():
                service = schedules_of(self.runtime)
                visible = await service.visible(who)
                shown = [await service.view(x) for x in visible[:LIST_MAX]]
                return Reply(_schedules_list(shown, len(visible)))
            case Unschedule(schedule_id):
                await schedules_of(self.runtime).delete(who, schedule_id)
                return Reply(f"Schedule #{schedule_id} deleted: it will not run again.")
            case RunMany(runs):
                batch = await gate.run_many(
                    who,
                    [BatchItem(run.action_ref, run.parameters) for run in runs],
                    chat=ctx.chat_route(),
                    idempotency_key=idempotency_key,
                )
                ids = [record.id for record in batch.records]
                return Reply(
                    render.batch(batch.records, replayed=batch.replayed),
                    execution_id=ids[-1],
                    extra={"execution_ids": ids},
                )
            case Rerun(execution_id):
                outcome = await gate.rerun(
                    who, execution_id, chat=ctx.chat_route(), idempotency_key=idempotency_key
                )
                return self._submitted(outcome, ctx, rerun_of=execution_id)
            case Confirm(code):
                return self._submitted(await gate.confirm(who, code), ctx)
            case Abort(code):
                action_ref = await gate.abort(who, code)
                return Reply(f"Aborted: `{action_ref}` will not run.")
            case Rules():
                rules = await self.runtime.automation.list_rules()
                return Reply(render.rules_list(rules))
            case RuleSwitch(rule_ref, enable):
                return await self._switch_rule(who, rule_ref, enable)
            case Help(None):
                prefix = "/attune run" if ctx.source == "slack" else "run"
                return Reply(await discovery.help_text(self.runtime, who, prefix))
            case HelpAliases(words):
                return Reply(await alias_chat.help_matching(self.runtime, who, words))
            case History():
                slack = ctx.sink == "slack"
                return Reply(await chat_history.history(self.runtime, who, command, slack=slack))
            case Last():
                text, last_id = await chat_history.last(
                    self.runtime, who, slack=ctx.sink == "slack"
                )
                return Reply(text, execution_id=last_id)
            case Help(action_ref) if action_ref is not None:
                row = await catalog.action(action_ref)
                await gate.deny(who, "view", action_ref, audit_verb="help")
                prefix = "/attune run" if ctx.source == "slack" else "run"
                return Reply(render.action_help(action_record(row), prefix))
            case Actions(pack):
                if pack:
                    await catalog.pack(pack)
                rows = [
                    row
                    for row in await catalog.actions(pack)
                    if gate.policy.allows(who.role, "view", row.spec.ref)
                ]
                return Reply(render.actions_list(rows, pack))
            case Status(execution_id):
                record = await gate.view(who, execution_id)
                tree = await workflow_trees(self.runtime).tree(record)
                if tree is not None:  # a workflow: its tasks under it
                    return Reply(status_tree(tree), execution_id=execution_id)
                lines = [render.status_line(record)]
                error = (record.result or {}).get("error")
                if error and record.status != "completed":
                    lines.append(f"error: {error}")
                return Reply("\n".join(lines), execution_id=execution_id)
            case Cancel(execution_id):
                record = await gate.cancel(who, execution_id)
                if record.status not in render.TERMINAL_WORDS - {"cancelled"}:
                    word = "cancelled" if record.status == "cancelled" else "being cancelled"
                    text = f"Execution #{execution_id} is {word}."
                else:  # it had ended: its pending retry was called off
                    text = (
                        f"The retry of execution #{execution_id} is called off "
                        f"(it stays {record.status})."
                    )
                return Reply(text, execution_id=execution_id)
        return Reply(commands.USAGE, ok=False)

    async def _no_access(self, command: commands.Command | None, ctx: ChatContext) -> Reply:
        """The ``none`` role may do nothing, ``help`` included: say so, and who grants more
        (audited, like every refusal). ``command`` None: text that is no command."""
        who = ctx.requester()
        word = type(command).__name__.lower() if command is not None else "text"
        await self.runtime.audit.record(
            who.entry("chat", "denied", detail=f"the {NO_ACCESS} role may do nothing ({word})")
        )
        if ctx.source == "slack":
            example = json.dumps({ctx.user_id: "operator"})
            grant = (
                "An Attune administrator can grant you a role by adding your Slack user id "
                f"`{ctx.user_id}` (or one of your user groups) to `ATTUNE_SLACK_ROLES`, "
                f"e.g. `{example}`."
            )
        else:
            grant = (
                f"An Attune administrator can grant you a role with "
                f"`attune user set-role {ctx.user_name} viewer` (or operator, admin)."
            )
        return Reply(
            f"You have no access to Attune (your role is `{NO_ACCESS}`). {grant}", ok=False
        )

    async def _switch_rule(self, who: Requester, rule_ref: str, enable: bool) -> Reply:
        automation, policy = self.runtime.automation, self.runtime.gate.policy
        rule = await automation.get_rule(rule_ref)
        verb = "rule enable" if enable else "rule disable"
        allowed = who.role in ("admin", "operator") and (
            not enable or policy.allows(who.role, "run", rule.action_ref)
        )
        if not allowed:
            await self.runtime.audit.record(who.entry(verb, "denied", target=rule_ref))
            raise Forbidden(f"the {who.role} role may not {verb.split()[1]} rule {rule_ref}")
        await automation.set_rule_enabled(rule_ref, enable)
        await self.runtime.audit.record(who.entry(verb, "accepted", target=rule_ref))
        return Reply(f"Rule `{rule_ref}` is {'enabled' if enable else 'disabled'}.")

    async def _schedule(
        self, command: ScheduleRun, ctx: ChatContext, idempotency_key: str | None
    ) -> Reply:
        """Times are read in the user's zone where known (Slack), else in
        ATTUNE_DEFAULT_TIMEZONE; the reply names the zone. The same request again (a Slack
        retry in another process) finds the schedule it made."""
        service = schedules_of(self.runtime)
        run = command.run
        if isinstance(run, RunTemplate):
            action_ref, template_ref, params = None, run.template_ref, run.overrides
        else:
            action_ref, template_ref, params = run.action_ref, None, run.parameters
        when: dict[str, Any] = {}
        if command.how == "in":
            seconds = parse_every(command.when, "in")
            when["at"] = (now_utc() + timedelta(seconds=seconds)).isoformat()
        else:
            when[command.how] = command.when
        route = {k: v for k, v in ctx.chat_route().items() if not k.startswith("response_url")}
        made = await service.create(
            ctx.requester(),
            ScheduleRequest(action_ref, template_ref, params, timezone=ctx.timezone, **when),
            chat=route,
            idempotency_key=idempotency_key,
        )
        view = await service.view(made)
        what = f"`@{template_ref}`" if template_ref else f"`{action_ref}`"
        shown = render.params_text(view["parameters"])
        if shown:
            what += f" `{render.escape(shown)}`"
        return Reply(
            f"Schedule #{made.id}: {what} {_timing_text(view)}; next run "
            f"{view['next_fire_local']} ({view['timezone']}). `unschedule {made.id}` deletes it."
        )

    @staticmethod
    def _submitted(
        outcome: Submitted | NeedsConfirmation, ctx: ChatContext, rerun_of: int | None = None
    ) -> Reply:
        if isinstance(outcome, NeedsConfirmation):
            text, blocks = render.confirmation(
                outcome.code,
                outcome.action_ref,
                outcome.config,
                outcome.expires_in_s,
                buttons=ctx.sink == "slack",
            )
            return Reply(text, blocks, extra={"confirm_code": outcome.code})
        record = outcome.record
        params = render.params_text(record.config)
        text = f"Execution #{record.id} queued: `{record.action_ref}`"
        if params:
            text += f" `{params}`"
        if rerun_of is not None:
            text += f" (re-run of #{rerun_of})"
        if outcome.replayed:
            text += " (already queued for this same request: not run again)"
        return Reply(text, execution_id=record.id)


#: Entries a chat list shows.
LIST_MAX = 50


def _templates_list(views: list[TemplateView]) -> str:
    if not views:
        return "No templates you may run. Save one with POST /api/v1/templates."
    lines = [f"*Templates* ({len(views)}): run one with `run @<template> key=value`"]
    for v in views[:LIST_MAX]:
        params = render.params_text(v.parameters)
        line = f"• `@{v.template.ref}` → `{v.template.action_ref}`"
        if params:
            line += f" `{render.escape(params)}`"
        if v.template.fields.description:
            line += f" — {render.escape(v.template.fields.description[:80])}"
        lines.append(line)
    if len(views) > LIST_MAX:
        lines.append(f"… and {len(views) - LIST_MAX} more (GET /api/v1/templates)")
    return "\n".join(lines)


def _timing_text(view: dict[str, Any]) -> str:
    if view["kind"] == "every":
        return f"every {view['every_s']:g} s"
    if view["kind"] == "cron":
        return f"on cron `{view['cron']}`"
    return "once"


def _schedules_list(views: list[dict[str, Any]], total: int) -> str:
    """``views``: the first LIST_MAX of the ``total`` schedules (only those are read)."""
    if not views:
        return "No schedules. Make one with `schedule every 1h run ...`."
    lines = [f"*Schedules* ({total}):"]
    for v in views:
        what = f"@{v['template_ref']}" if v["template_ref"] else v["action_ref"]
        state = "paused" if v["paused"] else f"next {v['next_fire_local'] or 'never (ended)'}"
        lines.append(f"• #{v['id']} `{what}` {_timing_text(v)}, {state} ({v['timezone']})")
    if total > len(views):
        lines.append(f"… and {total - len(views)} more (GET /api/v1/schedules)")
    return "\n".join(lines)


def _user_message(exc: EngineError, ctx: ChatContext) -> str:
    if isinstance(exc, NotYours):
        user_id = exc.executor.get("user_id")
        if ctx.sink == "slack" and user_id:
            # Slack renders a mention as the person's name, whatever their login is here.
            return f"Not allowed: only <@{user_id}> (or an admin) can {exc.verb} this request."
    if exc.code == "NOT_FOUND" and exc.message.startswith(("action", "pack")):
        return f"{exc.message[:1].upper()}{exc.message[1:]}. Try `actions` to list them."
    if exc.code == "INVALID_PARAMETERS":
        return f"Invalid parameters: {exc.message}. Try `help <action>`."
    if exc.code == "FORBIDDEN":
        return f"Not allowed: {exc.message}."
    if exc.message.startswith("executions["):  # a batch item's: as the API names it
        return f"Refused: {exc.message}"
    return exc.message[:1].upper() + exc.message[1:]
