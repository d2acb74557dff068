"""Action aliases in chat: text that is no command is matched against the aliases, and a
match runs its action through the gate exactly as ``run`` does (permissions, confirmation,
audit). The execution's chat route carries the alias's ref (``alias``), so its ``result``
format renders the result wherever it is shown (:func:`alias_result`).

Replies: the alias's ``ack.format`` when set (else the usual "queued" line), nothing when
``ack.enabled`` is false; two aliases that match equally: the error naming both; nothing that
matches: the closest alias help lines and command words, and ``help``.
"""

from __future__ import annotations

import difflib
import logging
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from bot import render
from bot.commands import VERBS, UnknownCommand, UsageError
from engine.aliases.matching import closest, readable, search
from engine.aliases.service import aliases_of, execution_context
from engine.errors import EngineError
from engine.gate import Requester, Submitted
from engine.page_links import execution_page_url
from engine.policy import NO_ACCESS
from engine.records import Execution

if TYPE_CHECKING:
    from bot.handler import ChatContext, CommandHandler, Reply
    from engine.runtime import Runtime

log = logging.getLogger(f"attune.{__name__}")

#: An action alias's result message of an execution with this chat route: (shown at all, its
#: text or None for ours), or None when no alias started it (:func:`alias_result`).
AliasResult = Callable[[Execution, dict[str, Any]], Awaitable[tuple[bool, str | None] | None]]

#: Help lines of aliases shown per pack in ``help``, and in all.
HELP_PER_PACK = 10
HELP_MAX = 40


async def answer(
    handler: CommandHandler,
    text: str,
    ctx: ChatContext,
    idempotency_key: str | None,
    error: UsageError,
) -> Reply:
    """Text the command grammar refused: an alias's run, or the grammar's message (a known
    command used wrongly), or what may have been meant (no command). Never raises."""
    from bot.handler import Reply, _user_message

    try:
        if ctx.role == NO_ACCESS:  # the reason, as for any command (and no alias is shown)
            return await handler._no_access(None, ctx)
        return await _run_alias(handler, text, ctx, idempotency_key, error)
    except EngineError as exc:
        return Reply(_user_message(exc, ctx), ok=False)
    except Exception:
        ref = uuid.uuid4().hex[:8]
        log.exception("alias text failed (ref %s): %r", ref, text[:200])
        return Reply(f"Something went wrong on our side (error ref {ref}); it is logged.", ok=False)


async def _run_alias(
    handler: CommandHandler,
    text: str,
    ctx: ChatContext,
    idempotency_key: str | None,
    error: UsageError,
) -> Reply:
    from bot.commands import normalise
    from bot.handler import Reply

    runtime = handler.runtime
    service = aliases_of(runtime)
    who = ctx.requester()
    said = normalise(text)
    found = await service.match(who, said)
    if found is None:
        if not isinstance(error, UnknownCommand):
            return Reply(error.message, ok=False)
        return Reply(await no_match(runtime, who, said, error), ok=False)
    # Refused (and audited) before anything of the alias is rendered for someone who may not.
    await runtime.gate.deny(who, "run", found.alias.action_ref, audit_verb="run")
    planned = await service.plan(found, who)
    who = replace(who, extra={**who.extra, "alias": found.alias.ref})  # the run records it
    outcome = await runtime.gate.run(
        who,
        planned.action_ref,
        planned.parameters,
        chat={**ctx.chat_route(), "alias": found.alias.ref},
        idempotency_key=idempotency_key,
    )
    reply = handler._submitted(outcome, ctx)
    reply.extra["alias"] = found.alias.ref
    if not isinstance(outcome, Submitted) or outcome.replayed:
        return reply
    record = outcome.record
    seen = execution_context(record)
    if ctx.sink == "slack":
        seen = slack_safe(seen)
    enabled, formatted = await service.message(found.alias, "ack", seen)
    if not enabled:
        reply.text = ""
        return reply
    if formatted is not None:
        reply.text = formatted
        spec = found.alias.message("ack")
        url = _page_url(runtime, record.id)
        if spec is not None and spec.append_url and url:
            reply.text += f"\n{url}"
    return reply


def _page_url(runtime: Runtime, execution_id: int) -> str | None:
    try:
        return execution_page_url(runtime.settings, execution_id, secret_key=runtime.secret_key)
    except Exception:  # a page link is a nicety: never the reason an ack fails
        return None


async def no_match(runtime: Runtime, who: Requester, text: str, error: UsageError) -> str:
    """What ``text`` may have meant: the closest aliases' help lines (with the commands whose
    word is alike), and how to see everything; with no alias alike, the grammar's own answer
    (its "did you mean" of commands, or the usage)."""
    aliases = await aliases_of(runtime).runnable(who)
    guesses = closest(aliases, text)
    if not guesses:
        return error.message
    word = text.split(None, 1)[0]
    verbs = difflib.get_close_matches(word.lower(), VERBS, n=2, cutoff=0.6)
    lines = [f"Unknown command `{_clip(word)}`. Did you mean:"]
    lines += [f"• `{render.escape(g)}`" for g in [*guesses, *verbs]]
    lines.append("`help` lists the commands and what you may run; `help <words>` finds aliases.")
    return "\n".join(lines)


async def help_matching(runtime: Runtime, who: Requester, words: str) -> str:
    """``help <words>``: the help lines of the aliases ``who`` may run that hold the words."""
    found = search(await aliases_of(runtime).runnable(who), words)
    if not found:
        return (
            f"No alias matches `{_clip(words)}`. `help` lists everything you may run; "
            "`help pack.action` shows an action's parameters."
        )
    lines = [f"*Aliases matching* `{_clip(words)}` ({len(found)}):"]
    for alias, display in found[:HELP_MAX]:
        lines.append(_help_line(display, alias.description, alias.action_ref))
    if len(found) > HELP_MAX:
        lines.append(f"… and {len(found) - HELP_MAX} more: add words to narrow it down")
    return "\n".join(lines)


async def help_lines(runtime: Runtime, who: Requester) -> list[str]:
    """The alias part of ``help`` for ``who``: per pack, the help lines of the aliases they
    may run (none: an empty list)."""
    by_pack: dict[str, list[str]] = defaultdict(list)
    for alias in await aliases_of(runtime).runnable(who):
        for display in alias.displays():
            by_pack[alias.pack_ref].append(
                _help_line(readable(display), alias.description, alias.action_ref)
            )
    if not by_pack:
        return []
    lines = ["*Aliases* (type them as they read):"]
    shown = 0
    for pack in sorted(by_pack):
        entries = by_pack[pack]
        lines.append(f"_{pack}_")
        lines += entries[:HELP_PER_PACK]
        if len(entries) > HELP_PER_PACK:
            lines.append(f"  … and {len(entries) - HELP_PER_PACK} more: `help {pack}`")
        shown += min(len(entries), HELP_PER_PACK)
        if shown >= HELP_MAX:
            lines.append("… more packs: `help <words>`")
            break
    return lines


def _help_line(display: str, description: str, action_ref: str) -> str:
    line = f"• `{render.escape(display)}`"
    about = description.strip() or action_ref
    return f"{line} — {render.escape(about[:80])}"


def slack_safe(value: Any) -> Any:
    """``value`` with every string escaped for Slack's mrkdwn (``&``, ``<``, ``>``): what an
    execution holds (typed parameters, the action's output) is shown by an alias's format as
    text, never as markup, so it cannot mention ``<!channel>`` or make links. The format's
    own markup is the author's and stays."""
    if isinstance(value, str):
        return render.escape(value)
    if isinstance(value, Mapping):
        return {k: slack_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [slack_safe(v) for v in value]
    return value


async def alias_result(
    runtime: Runtime, execution: Execution, chat: Mapping[str, Any], *, slack: bool = False
) -> tuple[bool, str | None] | None:
    """The result message of an execution an alias started: (shown at all, its text or None
    for the usual rendering); None when no alias started it (or the alias is gone). For Slack
    (``slack``), what the execution holds is escaped (:func:`slack_safe`)."""
    ref = chat.get("alias")
    if not isinstance(ref, str):
        return None
    alias = await aliases_of(runtime).repo.get(ref)
    if alias is None:
        return None
    seen = execution_context(execution)
    return await aliases_of(runtime).message(alias, "result", slack_safe(seen) if slack else seen)


def _clip(text: str, limit: int = 60) -> str:
    text = text.replace("`", "'").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
