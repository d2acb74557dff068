"""The command handler shared by Slack and the terminal chat: text in, a reply out.

It never raises: a bad command, an unknown action or a bad parameter becomes a clear reply
meant for the requester only; an unexpected error is logged and reported without a trace.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from bot import commands, render
from bot.commands import Actions, Cancel, Help, Rerun, Run, Status, UsageError
from engine.errors import EngineError
from engine.runtime import Runtime
from engine.service import Executor

log = logging.getLogger("attune.bot")

Sink = Literal["slack", "terminal"]


@dataclass(frozen=True)
class ChatContext:
    """Who typed the command and where results should go."""

    source: Literal["slack", "chat"]
    sink: Sink
    user_id: str
    user_name: str
    channel_id: str | None = None
    team_id: str | None = None
    response_url: str | None = None
    #: Terminal chat session whose listener prints this execution's news.
    session: str | None = None

    def executor(self) -> Executor:
        extra: dict[str, Any] = {"user_id": self.user_id} if self.source == "slack" else {}
        if self.team_id:
            extra["team_id"] = self.team_id
        return Executor(
            identity=self.user_name, source=self.source, channel=self.channel_id, extra=extra
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

    async def handle(self, text: str, ctx: ChatContext) -> Reply:
        try:
            command = commands.parse(text)
            return await self._dispatch(command, ctx)
        except UsageError as exc:
            return Reply(exc.message, ok=False)
        except EngineError as exc:
            return Reply(_user_message(exc), ok=False)
        except Exception:
            ref = uuid.uuid4().hex[:8]
            log.exception("command failed (ref %s): %r", ref, text[:200])
            return Reply(
                f"Something went wrong on our side (error ref {ref}); it is logged.", ok=False
            )

    async def _dispatch(self, command: commands.Command, ctx: ChatContext) -> Reply:
        service, catalog = self.runtime.service, self.runtime.catalog
        match command:
            case Run(action_ref, parameters):
                record = await service.submit(
                    action_ref, parameters, ctx.executor(), chat=ctx.chat_route()
                )
                params = render.params_text(record["config"])
                return Reply(
                    f"Execution #{record['id']} queued: `{action_ref}`"
                    + (f" `{params}`" if params else ""),
                    execution_id=record["id"],
                )
            case Help(None):
                return Reply(commands.USAGE)
            case Help(action_ref) if action_ref is not None:
                row = await catalog.get_action_row(action_ref)
                from engine.catalog import action_record

                prefix = "/attune run" if ctx.source == "slack" else "run"
                return Reply(render.action_help(action_record(row), prefix))
            case Actions(pack):
                if pack:
                    await catalog.get_pack(pack)
                return Reply(render.actions_list(await catalog.list_actions(pack), pack))
            case Status(execution_id):
                record = await service.get(execution_id)
                lines = [render.status_line(record)]
                error = (record.get("result") or {}).get("error")
                if error and record["status"] != "completed":
                    lines.append(f"error: {error}")
                return Reply("\n".join(lines), execution_id=execution_id)
            case Cancel(execution_id):
                record = await service.cancel(execution_id, ctx.user_name)
                word = "cancelled" if record["status"] == "cancelled" else "being cancelled"
                return Reply(f"Execution #{execution_id} is {word}.", execution_id=execution_id)
            case Rerun(execution_id):
                record = await service.rerun(execution_id, ctx.executor(), chat=ctx.chat_route())
                return Reply(
                    f"Execution #{record['id']} queued: `{record['action_ref']}` "
                    f"(re-run of #{execution_id})",
                    execution_id=record["id"],
                )
        return Reply(commands.USAGE, ok=False)


def _user_message(exc: EngineError) -> str:
    if exc.code == "NOT_FOUND" and exc.message.startswith(("action", "pack")):
        return f"{exc.message[:1].upper()}{exc.message[1:]}. Try `actions` to list them."
    if exc.code == "INVALID_PARAMETERS":
        return f"Invalid parameters: {exc.message}. Try `help <action>`."
    return exc.message[:1].upper() + exc.message[1:]
