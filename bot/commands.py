"""The chat command grammar (pure: text in, command out, or a :class:`UsageError`).

    run pack.action key=value ...    values: bare, "double", 'single', JSON {...} / [...], key=
    run pack.action k=a,b,c --each k one execution per value of k (a batch)
    run <one pack.action k=v per line>  a batch: one execution per line
    run @template key=value ...      a saved template, the values overriding its own
    templates
    schedule in|at|every|cron <when> run ...  |  schedules  |  unschedule <id>
    help [pack.action]               what you may run (grouped by pack), or one action's help
    help <words>                     the action aliases whose help lines hold the words
    actions [pack]
    history [pack.action|pack|@user] [n]   recent executions you may view, newest first (n 1-50)
    last                             your own last execution, with its output
    status <id> | cancel <id> | rerun <id>
    confirm <code> | abort <code>
    rules | rule enable|disable <pack.rule>

``@user`` is a Slack mention (``<@U123>``, ``<@U123|ana>``), a Slack user id or a name.
A first word that is no command raises :class:`UnknownCommand` (made by :func:`unknown_verb`,
with the closest commands as "did you mean").

Slack's smart quotes and non-breaking spaces are normalised first. Values stay text here except
JSON objects and arrays; the action's schema coerces them later (``count=5`` -> 5).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

#: Characters Slack (and phones) substitute for ASCII ones.
_NORMALISE = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u00a0": " ",
        "\u2007": " ",
        "\u202f": " ",
        "\u2009": " ",
        "\u200a": " ",
        "\u3000": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)
_REF = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_PACK = re.compile(r"^[A-Za-z0-9_-]+$")
_TEMPLATE = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
_CODE = re.compile(r"^[0-9a-f]{8}$")
#: Deepest JSON nesting accepted in a value.
MAX_JSON_DEPTH = 32

USAGE = (
    "Usage:\n"
    "  run <pack.action> [key=value ...]   run an action\n"
    "  run @<template> [key=value ...]     run a saved template, values override its own\n"
    "  templates                           list the templates you may run\n"
    '  schedule in 10m|at 17:00|every 1h|cron "0 9 * * 1-5" run ...   run it later\n'
    "  schedules | unschedule <id>         list schedules / delete one\n"
    "  run <pack.action> k=a,b --each k    run it once per value of k (one batch)\n"
    "  run <one pack.action k=v per line>  run several actions as one batch\n"
    "  help [pack.action]                  what you may run, or an action's parameters\n"
    "  help <words>                        the action aliases that hold these words\n"
    "  actions [pack]                      list actions\n"
    "  history [pack.action|@user] [n]     recent executions, newest first (n: 1 to 50)\n"
    "  last                                your own last execution and its output\n"
    "  status <id>                         show an execution\n"
    "  cancel <id>                         cancel an execution\n"
    "  rerun <id>                          run an execution again with the same parameters\n"
    "  confirm <code> | abort <code>       answer a request that asks for confirmation\n"
    "  rules                               list rules\n"
    "  rule enable|disable <pack.rule>     switch a rule on or off\n"
    'Values: word, "two words", \'two words\', {"json": 1}, [1, 2] or empty (key=).'
)


class UsageError(Exception):
    """A command that cannot be understood; ``message`` is shown to the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownCommand(UsageError):
    """Text whose first word is no command; ``text`` is what was typed (normalised)."""

    def __init__(self, message: str, text: str) -> None:
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class Run:
    action_ref: str
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RunTemplate:
    """``run @ref key=value``: a saved template, the values overriding its own."""

    template_ref: str
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Templates:
    pass


@dataclass(frozen=True)
class ScheduleRun:
    """``schedule in|at|every|cron <when> run ...``."""

    how: Literal["in", "at", "every", "cron"]
    when: str
    run: Run | RunTemplate


@dataclass(frozen=True)
class Schedules:
    pass


@dataclass(frozen=True)
class Unschedule:
    schedule_id: int


@dataclass(frozen=True)
class RunMany:
    """Several runs asked as one batch: all checked first, then all recorded, or none."""

    runs: tuple[Run, ...]


@dataclass(frozen=True)
class Help:
    action_ref: str | None = None


@dataclass(frozen=True)
class HelpAliases:
    """``help <words>`` (not an action ref): the aliases whose help lines hold the words."""

    words: str


@dataclass(frozen=True)
class Actions:
    pack: str | None = None


#: Executions ``history`` shows when no number is given, and at most.
HISTORY_DEFAULT = 10
HISTORY_MAX = 50


@dataclass(frozen=True)
class History:
    """``history [pack.action|pack|@user] [n]``: at most one of the three narrows it."""

    action_ref: str | None = None
    pack: str | None = None
    user: str | None = None
    limit: int = HISTORY_DEFAULT


@dataclass(frozen=True)
class Last:
    pass


@dataclass(frozen=True)
class Status:
    execution_id: int


@dataclass(frozen=True)
class Cancel:
    execution_id: int


@dataclass(frozen=True)
class Rerun:
    execution_id: int


@dataclass(frozen=True)
class Rules:
    pass


@dataclass(frozen=True)
class RuleSwitch:
    rule_ref: str
    enable: bool


@dataclass(frozen=True)
class Confirm:
    code: str


@dataclass(frozen=True)
class Abort:
    code: str


Command = (
    (
        Run
        | RunMany
        | Help
        | Actions
        | Status
        | Cancel
        | Rerun
        | Confirm
        | Abort
        | Rules
        | RuleSwitch
    )
    | (RunTemplate | Templates | ScheduleRun | Schedules | Unschedule | History | Last)
    | HelpAliases
)

#: Every command's first word (for "did you mean").
VERBS = (
    "run",
    "help",
    "actions",
    "history",
    "last",
    "status",
    "cancel",
    "rerun",
    "confirm",
    "abort",
    "rules",
    "rule",
    "templates",
    "schedule",
    "schedules",
    "unschedule",
)


def normalise(text: str) -> str:
    return text.translate(_NORMALISE).strip()


def parse(text: str) -> Command:
    """Parse one command line; raise :class:`UsageError` with a message fit for the user."""
    text = normalise(text)
    if not text:
        return Help()
    verb, _, rest = text.partition(" ")
    verb = verb.lower()
    rest = rest.strip()
    if verb.startswith("run\n"):  # `run` alone on the first line of a batch
        verb, rest = "run", text[3:].strip()
    if verb == "run" and rest.startswith("@"):
        return _parse_run_template(rest[1:])
    if verb == "run":
        return _parse_runs(rest)
    if verb == "schedule":
        return _parse_schedule(rest)
    if verb == "schedules":
        if rest:
            raise UsageError("`schedules` takes nothing; `unschedule <id>` deletes one")
        return Schedules()
    if verb == "unschedule":
        raw = rest.lstrip("#")
        if not raw.isdigit() or len(raw) > 18:
            raise UsageError("`unschedule` needs a schedule number, e.g. `unschedule 3`")
        return Unschedule(int(raw))
    if verb == "templates":
        if rest:
            raise UsageError("`templates` takes nothing; `run @<template>` runs one")
        return Templates()
    if verb == "help":
        if rest and not _REF.match(rest):
            return HelpAliases(rest)
        return Help(rest or None)
    if verb == "actions":
        if rest and not _PACK.match(rest):
            raise UsageError(f"`actions` takes a pack name like `core`, not `{_clip(rest)}`")
        return Actions(rest or None)
    if verb == "history":
        return _parse_history(rest)
    if verb == "last":
        if rest:
            raise UsageError("`last` takes nothing; `history` lists more, `status <id>` one")
        return Last()
    if verb in ("status", "cancel", "rerun"):
        execution_id = _parse_id(verb, rest)
        if verb == "status":
            return Status(execution_id)
        return Cancel(execution_id) if verb == "cancel" else Rerun(execution_id)
    if verb == "rules":
        if rest:
            raise UsageError("`rules` takes nothing; `rule enable <ref>` switches one")
        return Rules()
    if verb == "rule":
        how, _, ref = rest.partition(" ")
        ref = ref.strip()
        if how.lower() not in ("enable", "disable") or not _REF.match(ref):
            raise UsageError("usage: `rule enable <pack.rule>` or `rule disable <pack.rule>`")
        return RuleSwitch(ref, how.lower() == "enable")
    if verb in ("confirm", "abort"):
        if not _CODE.match(rest):
            raise UsageError(f"`{verb}` needs the code of a request, e.g. `{verb} 1a2b3c4d`")
        return Confirm(rest) if verb == "confirm" else Abort(rest)
    if _REF.match(verb):
        raise UsageError(f"Did you mean `run {_clip(text)}`?\n{USAGE}")
    raise unknown_verb(verb, rest, text)


def unknown_verb(verb: str, rest: str, text: str) -> UnknownCommand:
    """What unknown text gets: the closest commands (the rest kept), else the usage."""
    close = difflib.get_close_matches(verb, VERBS, n=2, cutoff=0.6)
    if not close:
        return UnknownCommand(f"Unknown command `{_clip(verb)}`.\n{USAGE}", text)
    guesses = " or ".join(f"`{_clip(f'{c} {rest}'.strip())}`" for c in close)
    return UnknownCommand(
        f"Unknown command `{_clip(verb)}`. Did you mean {guesses}? "
        "`help` lists the commands and what you may run.",
        text,
    )


#: A Slack user mention as Slack writes it (``<@U123>`` or ``<@U123|name>``).
_MENTION = re.compile(r"^<@([UW][A-Z0-9]+)(?:\|[^>]*)?>$")
_USER = re.compile(r"^@?([A-Za-z0-9][A-Za-z0-9._-]{0,79})$")


def _parse_history(rest: str) -> History:
    """``[pack.action|pack|@user] [n]``, the two in either order."""
    target: dict[str, str] = {}
    limit: int | None = None
    for word in rest.split():
        if word.isdigit() and limit is None and len(word) <= 6:
            limit = int(word)
            if not 1 <= limit <= HISTORY_MAX:
                raise UsageError(f"`history` shows 1 to {HISTORY_MAX} executions, not {word}")
            continue
        if target:
            raise UsageError(HISTORY_USAGE)
        mention = _MENTION.match(word)
        if mention:
            target["user"] = mention.group(1)
        elif word.startswith("@") and _USER.match(word):
            target["user"] = word[1:]
        elif _REF.match(word):
            target["action_ref"] = word
        elif _PACK.match(word) and not word.isdigit():
            target["pack"] = word
        else:
            raise UsageError(HISTORY_USAGE)
    return History(**target, limit=limit or HISTORY_DEFAULT)


HISTORY_USAGE = (
    "usage: `history [pack.action|pack|@user] [n]`, e.g. `history`, `history core.echo 20`, "
    f"`history @ana` (n: 1 to {HISTORY_MAX}, default {HISTORY_DEFAULT})"
)


def _parse_id(verb: str, rest: str) -> int:
    raw = rest.lstrip("#")
    if not raw.isdigit() or len(raw) > 18:
        raise UsageError(f"`{verb}` needs an execution number, e.g. `{verb} 42`")
    return int(raw)


#: ``--each NAME`` at the end of a run.
_EACH = re.compile(r"(?:^|\s)--each\s+(\S+)\s*$")
#: Most executions one chat command may start (the API's batch limit).
MAX_BATCH = 100


def _parse_runs(rest: str) -> Run | RunMany:
    """One run, one run per line (a batch), or one run per value of ``--each NAME``. Text
    that reads as one run (a quoted value may hold a newline) is one run."""
    lines = [line.strip() for line in rest.split("\n") if line.strip()]
    if len(lines) > 1:
        try:
            return _parse_each(rest)
        except UsageError:
            pass  # not one run: one per line
        if len(lines) > MAX_BATCH:
            raise UsageError(f"a batch holds at most {MAX_BATCH} runs, got {len(lines)}")
        runs = []
        for number, line in enumerate(lines, 1):
            if line.split(None, 1)[0].lower() == "run":
                line = line[3:].strip()
            try:
                runs.append(_parse_each(line))
            except UsageError as exc:
                raise UsageError(f"line {number}: {exc.message}") from None
        if any(isinstance(run, RunMany) for run in runs):
            raise UsageError("`--each` works on a single line, not in a batch of lines")
        return RunMany(tuple(run for run in runs if isinstance(run, Run)))
    return _parse_each(rest)


def _parse_each(rest: str) -> Run | RunMany:
    each = _EACH.search(rest)
    if each is None:
        return _parse_run(rest)
    name = each.group(1)
    run = _parse_run(rest[: each.start()])
    if name not in run.parameters:
        raise UsageError(f"`--each {_clip(name)}`: give the values, e.g. `{_clip(name)}=a,b,c`")
    value = run.parameters[name]
    values = value if isinstance(value, list) else str(value).split(",")
    if not values or any(isinstance(v, str) and not v.strip() for v in values):
        raise UsageError(f"`--each {_clip(name)}`: a value is empty in `{_clip(str(value))}`")
    if len(values) > MAX_BATCH:
        raise UsageError(f"a batch holds at most {MAX_BATCH} runs, got {len(values)}")
    return RunMany(
        tuple(
            Run(run.action_ref, {**run.parameters, name: v.strip() if isinstance(v, str) else v})
            for v in values
        )
    )


def _parse_run(rest: str) -> Run:
    if not rest:
        raise UsageError("`run` needs an action, e.g. `run core.echo message=hello`")
    ref, _, args = rest.partition(" ")
    if not _REF.match(ref):
        raise UsageError(f"`{_clip(ref)}` is not an action reference like `pack.action`")
    return Run(ref, _parameters(args))


SCHEDULE_USAGE = (
    "usage: `schedule in 10m run ...`, `schedule at 17:00 run ...`, `schedule every 1h run "
    '...` or `schedule cron "0 9 * * 1-5" run ...` (then an action or @template and values)'
)


def _parse_schedule(rest: str) -> ScheduleRun:
    how, _, tail = rest.partition(" ")
    how = how.lower()
    tail = tail.strip()
    if how == "cron":
        quote = tail[:1]
        end = tail.find(quote, 1) if quote in ("'", '"') else -1
        if end < 0:
            raise UsageError(
                'the cron expression goes in quotes, e.g. `schedule cron "0 9 * * 1-5" run '
                "core.echo message=hi`"
            )
        when, command = tail[1:end].strip(), tail[end + 1 :].strip()
    elif how in ("in", "at", "every"):
        at = f" {tail}".lower().find(" run ")
        if at < 0:
            raise UsageError(SCHEDULE_USAGE)
        when, command = tail[: max(at - 1, 0)].strip(), tail[at:].strip()
    else:
        raise UsageError(SCHEDULE_USAGE)
    if not when or not command.lower().startswith("run "):
        raise UsageError(SCHEDULE_USAGE)
    run = parse(command)
    if not isinstance(run, Run | RunTemplate):
        raise UsageError("`schedule` takes one `run` of an action or a @template")
    return ScheduleRun(how, when, run)  # type: ignore[arg-type]  # how is one of the four


def _parse_run_template(rest: str) -> RunTemplate:
    ref, _, args = rest.partition(" ")
    if not _TEMPLATE.match(ref):
        raise UsageError(
            f"`@{_clip(ref)}` is not a template name (letters, digits, '.', '_' or '-'), "
            "e.g. `run @restart_web host=web2`"
        )
    return RunTemplate(ref, _parameters(args))


def _parameters(args: str) -> dict[str, Any]:
    """The ``key=value`` pairs of ``args``, each key once."""
    params: dict[str, Any] = {}
    for key, value in _tokenise(args):
        if key in params:
            raise UsageError(f"parameter `{key}` is given twice")
        params[key] = value
    return params


def _tokenise(text: str) -> list[tuple[str, Any]]:
    pairs: list[tuple[str, Any]] = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isspace():
            i += 1
            continue
        start = i
        while i < n and text[i] != "=" and not text[i].isspace():
            i += 1
        key = text[start:i]
        if i >= n or text[i] != "=":
            raise UsageError(f"expected key=value, got `{_clip(key)}`")
        if not _KEY.match(key):
            raise UsageError(f"`{_clip(key)}` is not a parameter name")
        i += 1  # past '='
        value, i = _read_value(text, i, key)
        pairs.append((key, value))
    return pairs


def _read_value(text: str, i: int, key: str) -> tuple[Any, int]:
    n = len(text)
    if i >= n or text[i].isspace():
        return "", i
    ch = text[i]
    if ch in "\"'":
        return _read_quoted(text, i, key)
    if ch in "{[":
        end = _json_end(text, i, key)
        raw = text[i:end]
        try:
            return json.loads(raw), end
        except (ValueError, RecursionError):
            raise UsageError(f"parameter `{key}`: `{_clip(raw)}` is not valid JSON") from None
    start = i
    while i < n and not text[i].isspace():
        i += 1
    return text[start:i], i


def _read_quoted(text: str, i: int, key: str) -> tuple[str, int]:
    quote, i, out = text[i], i + 1, []
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and quote == '"' and i + 1 < n and text[i + 1] in '"\\':
            out.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            if i + 1 < n and not text[i + 1].isspace():
                raise UsageError(f"parameter `{key}`: put a space after the closing {quote}")
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise UsageError(f"parameter `{key}`: unbalanced {quote}: the value has no closing {quote}")


def _json_end(text: str, i: int, key: str) -> int:
    """Index just past the JSON value that starts at ``i`` (brackets balanced, strings skipped)."""
    depth, n, in_string = 0, len(text), False
    while i < n:
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise UsageError(f"parameter `{key}`: JSON nested deeper than {MAX_JSON_DEPTH}")
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise UsageError(f"parameter `{key}`: unbalanced brackets in the JSON value")


def _clip(text: str, limit: int = 60) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"
