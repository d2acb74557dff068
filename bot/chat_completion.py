"""What Tab completes in ``attune chat``: command words, action refs, an action's parameter
names (``key=``), ``@template`` refs, pack names, rule refs, and the fixed words of the action
aliases (``restart`` then, after the service, ``on``).

Each kind of word comes from a :class:`CompletionSource`: it loads what it offers with
:meth:`~CompletionSource.refresh` (at the start of the chat and after each command, so a new
pack or template is offered without a restart) and answers :meth:`~CompletionSource.candidates`
from what it loaded, without I/O, as a key press needs. Another source (aliases, say) is one
more object with those two methods appended to :attr:`ChatCompleter.sources`.
"""

from __future__ import annotations

import logging
import re
import shlex
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from bot import commands
from engine.errors import EngineError
from engine.params import secret_names

if TYPE_CHECKING:
    from engine.gate import Requester
    from engine.runtime import Runtime

log = logging.getLogger(f"attune.{__name__}")

#: A description shown beside a candidate is cut to this many characters.
META_CHARS = 60


@dataclass(frozen=True)
class Candidate:
    """A word Tab may put in place of the one being typed, and a line about it."""

    text: str
    meta: str = ""


class CompletionSource(Protocol):
    """One kind of word the chat completes."""

    async def refresh(self, runtime: Runtime, who: Requester) -> None:
        """Load what is offered (may fail: the previous words stay)."""
        ...

    def candidates(self, words: Sequence[str]) -> Iterable[Candidate]:
        """Words that may come after ``words`` (the complete words before the cursor); the
        completer keeps those that start with what is typed."""
        ...


@dataclass
class CommandWords:
    """The first word of a line: the chat's commands (``bot.commands.VERBS``)."""

    words: tuple[str, ...] = commands.VERBS

    async def refresh(self, runtime: Runtime, who: Requester) -> None:
        return None

    def candidates(self, words: Sequence[str]) -> Iterable[Candidate]:
        return [Candidate(w) for w in self.words] if not words else []


@dataclass(frozen=True)
class ActionWords:
    """What completion knows of an action."""

    ref: str
    description: str
    parameters: tuple[str, ...]
    secrets: frozenset[str]


def _meta(text: str) -> str:
    line = text.strip().split("\n", 1)[0]
    return line if len(line) <= META_CHARS else line[: META_CHARS - 1] + "…"


@dataclass
class ActionRefs:
    """Action refs after ``run`` and ``help``, pack names after ``actions``, and after
    ``run pack.action`` the names of its parameters not given yet (as ``name=``)."""

    actions: dict[str, ActionWords] = field(default_factory=dict)

    async def refresh(self, runtime: Runtime, who: Requester) -> None:
        loaded: dict[str, ActionWords] = {}
        for action in await runtime.catalog.actions():
            spec = action.spec
            if not spec.enabled:
                continue
            props = spec.param_schema.get("properties") or {}
            loaded[spec.ref] = ActionWords(
                spec.ref, spec.description, tuple(props), secret_names(spec.param_schema)
            )
        self.actions = loaded

    def candidates(self, words: Sequence[str]) -> Iterable[Candidate]:
        if len(words) == 1 and words[0] in ("run", "help"):
            return [Candidate(a.ref, _meta(a.description)) for a in self.actions.values()]
        if len(words) == 1 and words[0] == "actions":
            return [Candidate(p) for p in sorted({r.split(".", 1)[0] for r in self.actions})]
        if len(words) >= 2 and words[0] == "run" and words[1] in self.actions:
            given = {w.split("=", 1)[0] for w in words[2:]}
            return [
                Candidate(f"{name}=", "secret" if name in action.secrets else "")
                for action in [self.actions[words[1]]]
                for name in action.parameters
                if name not in given
            ]
        return []


@dataclass
class TemplateRefs:
    """``@template`` after ``run``: the templates this user may run."""

    #: ref -> (description, action ref)
    templates: dict[str, tuple[str, str]] = field(default_factory=dict)

    async def refresh(self, runtime: Runtime, who: Requester) -> None:
        from engine.exec_templates import templates_of

        views = await templates_of(runtime).list(who, "run")
        self.templates = {
            v.template.ref: (v.template.fields.description, v.template.action_ref) for v in views
        }

    def candidates(self, words: Sequence[str]) -> Iterable[Candidate]:
        if len(words) == 1 and words[0] == "run":
            return [
                Candidate(f"@{ref}", _meta(about or action_ref))
                for ref, (about, action_ref) in self.templates.items()
            ]
        return []


@dataclass
class RuleRefs:
    """``enable``/``disable`` after ``rule``, then the rule refs."""

    rules: dict[str, str] = field(default_factory=dict)

    async def refresh(self, runtime: Runtime, who: Requester) -> None:
        self.rules = {r.ref: r.description for r in await runtime.automation.list_rules()}

    def candidates(self, words: Sequence[str]) -> Iterable[Candidate]:
        if len(words) == 1 and words[0] == "rule":
            return [Candidate("enable"), Candidate("disable")]
        if len(words) == 2 and words[0] == "rule" and words[1] in ("enable", "disable"):
            return [Candidate(ref, _meta(about)) for ref, about in self.rules.items()]
        return []


#: A value's place in an alias's display as :func:`engine.aliases.matching.readable` shows it.
_VALUE = re.compile(r"^\{[^{}]*\}$")


@dataclass
class AliasWords:
    """The fixed words of the action aliases this user may run: the first word of a line, and
    the next fixed word once the words typed so far follow a display (a value is one word
    here; after a value of several words nothing is offered)."""

    #: Each display as a help line reads (``restart {service} on {host}``), split in words.
    displays: list[tuple[str, ...]] = field(default_factory=list)

    async def refresh(self, runtime: Runtime, who: Requester) -> None:
        from engine.aliases.matching import readable
        from engine.aliases.service import aliases_of

        shown = [
            readable(display)
            for alias in await aliases_of(runtime).runnable(who)
            for display in alias.displays()
        ]
        self.displays = [tuple(d.split()) for d in dict.fromkeys(shown)]

    def candidates(self, words: Sequence[str]) -> Iterable[Candidate]:
        found = []
        for tokens in self.displays:
            if len(tokens) <= len(words) or _VALUE.match(tokens[len(words)]):
                continue
            if all(
                _VALUE.match(token) or token.lower() == typed.lower()
                for token, typed in zip(tokens, words, strict=False)
            ):
                found.append(Candidate(tokens[len(words)], _meta(" ".join(tokens))))
        return found


def split_for_completion(text: str) -> tuple[list[str], str]:
    """The complete words before the cursor and the word being typed (``""`` after a space).
    Quotes are honoured where they are balanced; an open quote is read word by word."""
    current = "" if not text or text[-1].isspace() else text.split()[-1]
    before = text[: len(text) - len(current)]
    try:
        words = shlex.split(before)
    except ValueError:
        words = before.split()
    if words:
        words[0] = words[0].lower()
    return words, current


class ChatCompleter(Completer):
    """prompt_toolkit's completer over the chat's sources (the first word, then the rest)."""

    def __init__(self, sources: Sequence[CompletionSource] | None = None) -> None:
        self.actions = ActionRefs()
        self.templates = TemplateRefs()
        self.sources: list[CompletionSource] = (
            list(sources)
            if sources is not None
            else [CommandWords(), self.actions, self.templates, RuleRefs(), AliasWords()]
        )

    async def refresh(self, runtime: Runtime, who: Requester) -> None:
        """Reload every source; one that fails keeps its words (and says so in the log)."""
        for source in self.sources:
            try:
                await source.refresh(runtime, who)
            except EngineError as exc:
                log.debug("completion source %s not refreshed: %s", type(source).__name__, exc)

    def words_for(self, text: str) -> list[Candidate]:
        """The candidates for the line typed so far (``text``: up to the cursor), in order."""
        words, current = split_for_completion(text)
        seen: dict[str, Candidate] = {}
        for source in self.sources:
            for candidate in source.candidates(words):
                if candidate.text.startswith(current) and candidate.text not in seen:
                    seen[candidate.text] = candidate
        return list(seen.values())

    def secrets_given(self, line: str) -> bool:
        """Whether ``line`` gives a value to a secret parameter of a known action (directly, in
        a batch, a schedule or a template's overrides): such a line is kept out of the
        history file."""
        try:
            parsed = commands.parse(line)
        except commands.UsageError:
            return False
        if isinstance(parsed, commands.ScheduleRun):
            parsed = parsed.run
        runs: tuple[commands.Run | commands.RunTemplate, ...] = ()
        if isinstance(parsed, commands.RunMany):
            runs = parsed.runs
        elif isinstance(parsed, commands.Run | commands.RunTemplate):
            runs = (parsed,)
        for run in runs:
            if isinstance(run, commands.Run):
                ref, given = run.action_ref, set(run.parameters)
            else:
                ref = self.templates.templates.get(run.template_ref, ("", ""))[1]
                given = set(run.overrides)
            action = self.actions.actions.get(ref)
            if action is not None and action.secrets & given:
                return True
        return False

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        _, current = split_for_completion(text)
        for candidate in self.words_for(text):
            yield Completion(
                candidate.text, start_position=-len(current), display_meta=candidate.meta
            )
