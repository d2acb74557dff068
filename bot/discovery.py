"""What a person may do, told in chat: ``help`` lists the actions they may run (grouped by
pack, one short line each) and the commands; a mistyped action gets the closest refs they may
see ("did you mean").

:func:`help_sections` makes the listing's sections; more kinds of runnable things (action
aliases) add their section there. The rendering is plain functions; the catalog and the policy
are read through the runtime.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from itertools import groupby
from typing import TYPE_CHECKING

from bot import alias_chat, commands, render
from engine.catalog_records import Action
from engine.errors import EngineError, NotFound
from engine.gate import Requester
from engine.policy import Verb

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger(f"attune.{__name__}")

#: Longest description shown on a ``help`` line.
DESCRIPTION_CHARS = 70
#: Most actions ``help`` lists; past this it says how many more and how to see them.
HELP_ACTIONS_MAX = 60
#: Most refs a "did you mean" offers.
SUGGESTIONS_MAX = 3
#: How alike a ref must be to be offered (difflib's ratio, 0 to 1).
SUGGESTION_CUTOFF = 0.6

#: The commands, one short line each (``help`` ends with these; the full usage is shown on a
#: command that cannot be understood).
COMMANDS_SHORT = (
    "*Commands*: `run <pack.action> key=value ...` · `help <pack.action>` · `actions [pack]` · "
    "`history [pack.action|@user] [n]` · `last` · `status|cancel|rerun <id>` · "
    "`confirm|abort <code>` · `templates` · `run @<template>` · `schedule ... run ...` · "
    "`schedules` · `rules`"
)


def clip(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    """One line of at most ``limit`` characters (the first line, cut with an ellipsis)."""
    line = " ".join(text.split("\n", 1)[0].split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def actions_section(actions: Sequence[Action], prefix: str) -> str:
    """The actions ``help`` lists, grouped by pack: ``• `ref` — description``."""
    if not actions:
        return "You may not run any action here; ask an Attune administrator for a role."
    shown = sorted(actions, key=lambda a: a.ref)[:HELP_ACTIONS_MAX]
    lines = [f"*What you may run* ({len(actions)} actions): `{prefix} <pack.action> key=value`"]
    for pack, in_pack in groupby(shown, key=lambda a: a.spec.pack_ref):
        lines.append(f"*{render.escape(pack)}*")
        for action in in_pack:
            about = clip(action.spec.description or action.spec.label)
            line = f"• `{action.ref}`"
            if about:
                line += f" — {render.escape(about)}"
            if not action.spec.enabled:
                line += " (disabled)"
            lines.append(line)
    if len(actions) > len(shown):
        lines.append(f"… and {len(actions) - len(shown)} more: `actions <pack>` lists a pack's")
    return "\n".join(lines)


async def allowed_actions(runtime: Runtime, who: Requester, verb: Verb) -> list[Action]:
    """The catalog's actions ``who`` has the ``verb`` permission on."""
    policy = runtime.gate.policy
    return [a for a in await runtime.catalog.actions() if policy.allows(who.role, verb, a.ref)]


async def help_sections(runtime: Runtime, who: Requester, prefix: str) -> list[str]:
    """The sections of ``help``'s listing, in order: what ``who`` may run (actions, then
    action aliases when there are any)."""
    sections = [actions_section(await allowed_actions(runtime, who, "run"), prefix)]
    aliases = await alias_chat.help_lines(runtime, who)
    if aliases:
        sections.append("\n".join(aliases))
    return sections


async def help_text(runtime: Runtime, who: Requester, prefix: str) -> str:
    return "\n\n".join([*await help_sections(runtime, who, prefix), COMMANDS_SHORT])


def closest(word: str, candidates: Sequence[str], n: int = SUGGESTIONS_MAX) -> list[str]:
    """The candidates most like ``word`` (case aside), best first; none when nothing is close.
    Close: a like pack and a like action name, or the same action name in another pack."""
    target = word.lower()
    pack, _, name = target.partition(".")
    scored: list[tuple[float, str]] = []
    for candidate in candidates:
        low = candidate.lower()
        c_pack, _, c_name = low.partition(".")
        like_name = _ratio(name, c_name) >= SUGGESTION_CUTOFF
        if (like_name and _ratio(pack, c_pack) >= SUGGESTION_CUTOFF) or (name and c_name == name):
            scored.append((_ratio(target, low), candidate))
    scored.sort(key=lambda item: (-item[0], item[1]))
    return [candidate for _, candidate in scored[:n]]


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def did_you_mean(word: str, candidates: Sequence[str]) -> str:
    """`` Did you mean `a` or `b`?`` (with a leading space), or "" when nothing is close."""
    close = closest(word, candidates)
    if not close:
        return ""
    return " Did you mean " + " or ".join(f"`{c}`" for c in close) + "?"


async def suggest_action(runtime: Runtime, who: Requester, ref: str, verb: Verb) -> str:
    """ "Did you mean" for an action ``ref`` that does not exist: the closest refs ``who``
    has ``verb`` on."""
    refs = [a.ref for a in await allowed_actions(runtime, who, verb)]
    return did_you_mean(ref, [r for r in refs if r != ref])


def mistyped(command: commands.Command) -> tuple[str, Verb] | None:
    """The action ref a command names, with the permission whose refs to offer instead."""
    match command:
        case commands.Run(action_ref):
            return action_ref, "run"
        case commands.Help(action_ref) if action_ref:
            return action_ref, "view"
        case commands.History(action_ref=action_ref) if action_ref:
            return action_ref, "view"
    return None


async def hint_for(
    runtime: Runtime, command: commands.Command, who: Requester, exc: Exception
) -> str:
    """ "Did you mean" for a command refused because its action does not exist (or, for a
    role that may not run it, because no such action is there to allow); else ""."""
    named = mistyped(command)
    if named is None or not isinstance(exc, EngineError):
        return ""
    ref, verb = named
    try:
        if exc.code == "FORBIDDEN" and await _exists(runtime, ref):
            return ""  # it exists: the refusal stands on its own
        if exc.code not in ("FORBIDDEN", "NOT_FOUND") or ref not in exc.message:
            return ""
        return await suggest_action(runtime, who, ref, verb)
    except Exception:  # a hint is a courtesy: never the reason a reply fails
        log.exception("no suggestions for %r", ref)
        return ""


async def _exists(runtime: Runtime, ref: str) -> bool:
    try:
        await runtime.catalog.action(ref)
    except NotFound:
        return False
    return True
