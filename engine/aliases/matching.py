"""Which alias a chat text means (pure).

Every representation of every alias given is tried (:func:`engine.aliases.formats.extract`).
The most specific match wins: the one whose fixed words cover most of the text's characters
(``restart {{service}} on {{host}}`` over ``restart {{service}}`` for "restart nginx on web1").
Two different aliases that match equally well are an error naming both (StackStorm refuses any
second match, however much less specific); within one alias the first of its equal formats is
taken.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from engine.aliases.formats import Extracted, FormatError, NoMatch, extract
from engine.aliases.records import Alias
from engine.errors import InvalidRequest

#: Suggestions shown for a text that matches nothing.
MAX_SUGGESTIONS = 3
#: How alike (0..1: difflib's ratio of the whole text, averaged with that of the first words)
#: a display must be to be suggested.
SUGGEST_CUTOFF = 0.35
#: Characters of a text compared for suggestions and ``help <words>`` (a help line is short;
#: comparing 40,000 characters with every line held the event loop for seconds).
MAX_QUERY_CHARS = 200
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_.-]*)[^}]*\}\}")


@dataclass(frozen=True)
class AliasMatch:
    alias: Alias
    #: The format that matched, and its help line.
    representation: str
    display: str | None
    extracted: Extracted


class AmbiguousAlias(InvalidRequest):
    """Two aliases match a text equally well."""

    def __init__(self, text: str, first: AliasMatch, second: AliasMatch) -> None:
        super().__init__(
            f"`{_clip(text)}` matches two aliases equally well: `{first.alias.ref}` "
            f"(`{_clip(first.representation)}`) and `{second.alias.ref}` "
            f"(`{_clip(second.representation)}`). Add words to tell them apart, or ask an "
            "administrator to change one of them."
        )
        self.refs = (first.alias.ref, second.alias.ref)


def best_match(aliases: Iterable[Alias], text: str) -> AliasMatch | None:
    """The most specific enabled alias matching ``text``; None when none does;
    :class:`AmbiguousAlias` when two aliases tie."""
    best: AliasMatch | None = None
    rival: AliasMatch | None = None
    for alias in aliases:
        if not alias.enabled:
            continue
        for display, representations in alias.shapes():
            for representation in representations:
                try:
                    got = extract(representation, text)
                except (NoMatch, FormatError):
                    continue
                found = AliasMatch(alias, representation, display, got)
                if best is None or got.fixed_chars > best.extracted.fixed_chars:
                    best, rival = found, None
                elif got.fixed_chars == best.extracted.fixed_chars and alias.ref != best.alias.ref:
                    rival = rival or found
    if best is not None and rival is not None:
        raise AmbiguousAlias(text, best, rival)
    return best


def readable(display: str) -> str:
    """A display with ``{{ name=default }}`` shown as ``{name}``."""
    return _PLACEHOLDER.sub(lambda m: "{" + m.group(1) + "}", display)


def closest(aliases: Iterable[Alias], text: str, verbs: Sequence[str] = ()) -> list[str]:
    """What ``text`` may have meant: the displays of the most alike enabled aliases, then the
    command verbs alike to its first word (each as it would be typed)."""
    wanted = text.strip().lower()[:MAX_QUERY_CHARS]
    first = wanted.split(" ", 1)[0]
    scored: list[tuple[float, str]] = []
    for alias in aliases:
        if not alias.enabled:
            continue
        for display in alias.displays():
            shown = readable(display)
            whole = difflib.SequenceMatcher(None, wanted, shown.lower()).ratio()
            verb = difflib.SequenceMatcher(None, first, shown.lower().split(" ", 1)[0]).ratio()
            score = (whole + verb) / 2
            if score >= SUGGEST_CUTOFF:
                scored.append((score, shown))
    scored.sort(key=lambda item: -item[0])
    out = list(dict.fromkeys(shown for _, shown in scored))[:MAX_SUGGESTIONS]
    out += difflib.get_close_matches(first, list(verbs), n=2, cutoff=0.7)
    return out


def search(aliases: Iterable[Alias], words: str) -> list[tuple[Alias, str]]:
    """``help <words>``: the enabled aliases' help lines holding every word (any case), or
    whose alias ref, action or description does; in the order given."""
    terms = list(dict.fromkeys(words.lower()[:MAX_QUERY_CHARS].split()))
    found: list[tuple[Alias, str]] = []
    for alias in aliases:
        if not alias.enabled:
            continue
        about = f"{alias.ref} {alias.action_ref} {alias.description}".lower()
        for display in alias.displays():
            haystack = f"{display.lower()} {about}"
            if all(term in haystack for term in terms):
                found.append((alias, readable(display)))
    return found


def _clip(text: str, limit: int = 80) -> str:
    text = text.replace("`", "'").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
