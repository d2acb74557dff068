"""One alias format against one chat text (pure): StackStorm's format language, our code.

A format is a regular expression in which ``{{ name }}`` stands for a value and
``{{ name = default }}`` for a value that may be left out. A value typed in chat is a single
word, several words (as many as the text around them allows), ``"double"`` or ``'single'``
quoted text, or a ``{...}`` JSON object. Named groups of the format's own regular expression
(``(?P<issue>[A-Z]+-[0-9]+)``) are values too. ``key=value`` pairs at the end of the text are
extra values, whatever the format says.

As StackStorm does, the format is anchored at both ends (``^\\s*`` and ``\\s*$`` are added)
unless it holds an anchor of its own (``^`` or ``\\A`` for the start, ``$`` or ``\\Z`` for the
end), and the text is matched with a space added at either end.

Where we differ (on purpose): regular expressions run on RE2 (linear time in the text: a
format cannot stall the server; back-references and look-arounds are refused when the alias is
saved); a trailing pair's key must be a parameter name (``[A-Za-z_][A-Za-z0-9_.-]*``), so a URL
holding ``=`` stays a value; and the pairs are cut from the end of the text only (StackStorm
removes every copy of their text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import re2

from engine.errors import InvalidRequest

#: Longest chat text matched against aliases (each ``{{ value }}`` may span any part of it).
MAX_TEXT_CHARS = 2000
#: Longest format accepted.
MAX_FORMAT_CHARS = 1000
#: Our group names start with this (a format's own groups must not).
_OURS = "zzalias"
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_.-]*)\s*")

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False
_RE2_OPTIONS.dot_nl = True  # a value may hold a newline (StackStorm matches with DOTALL)


class FormatError(InvalidRequest):
    """A format that cannot be used (a bad regular expression, an unclosed ``{{``)."""


@dataclass(frozen=True)
class Placeholder:
    """``{{ name }}`` or ``{{ name = default }}`` in a format."""

    name: str
    default: str | None = None


@dataclass(frozen=True)
class Compiled:
    """A format made ready to match: the RE2 program and its placeholders by group."""

    source: str
    regex: Any
    #: Our group name -> placeholder.
    placeholders: dict[str, Placeholder]
    #: The format's own named groups.
    own_groups: tuple[str, ...]
    #: The author anchored the start (``^``, ``\\A``): the text is matched without the space
    #: StackStorm puts before it (with it, StackStorm's ``^foo`` can never match).
    anchored_start: bool = False


@dataclass(frozen=True)
class Extracted:
    """What a text gave for a format: the values (text, as typed), which came from defaults,
    and how many of the text's visible characters the format's fixed words matched (more is
    more specific)."""

    values: dict[str, str]
    defaulted: frozenset[str] = field(default_factory=frozenset)
    fixed_chars: int = 0


class NoMatch(Exception):
    """The text does not match the format."""


# -- the trailing key=value pairs -----------------------------------------------------------


def split_pairs(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``text`` without its trailing ``key=value`` pairs, and the pairs in order. A value is a
    word, ``"quoted"`` or ``'quoted'`` text (quotes removed) or a ``{...}`` object."""
    rest = text.rstrip()
    pairs: list[tuple[str, str]] = []
    while rest:
        found = _last_pair(rest)
        if found is None:
            break
        key, value, start = found
        pairs.insert(0, (key, value))
        rest = rest[:start].rstrip()
    return rest, pairs


def _key_before(text: str, end: int) -> tuple[str, int] | None:
    """The ``key=`` that ends at ``end`` (the index of ``=``) and starts the text or follows a
    space: (key, its start)."""
    if end <= 0 or text[end] != "=":
        return None
    start = end
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    key = text[start:end]
    return (key, start) if _KEY.fullmatch(key) else None


def _last_pair(text: str) -> tuple[str, str, int] | None:
    last = text[-1]
    if last in "\"'" and len(text) >= 2:
        opening = text.rfind(last, 0, len(text) - 1)
        if opening > 0:
            found = _key_before(text, opening - 1)
            if found is not None:
                return found[0], text[opening + 1 : -1], found[1]
    if last == "}":
        depth = 0
        for i in range(len(text) - 1, -1, -1):
            depth += {"}": 1, "{": -1}.get(text[i], 0)
            if depth == 0:
                found = _key_before(text, i - 1) if i > 0 else None
                if found is not None:
                    return found[0], text[i:], found[1]
                break
    start = len(text)
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:]
    key, eq, value = word.partition("=")
    if eq and value and _KEY.fullmatch(key):
        return key, value, start
    return None


# -- formats --------------------------------------------------------------------------------


def _read_default(fmt: str, i: int) -> tuple[str, int]:
    """The default starting at ``fmt[i]`` (after ``=`` and spaces) and the index just past
    the closing ``}}``: quoted (quotes removed), a ``{...}`` group (``{{ x }}`` included), or
    the text up to the first ``}}``."""
    n = len(fmt)
    ch = fmt[i] if i < n else ""
    if ch in "\"'":
        end = fmt.find(ch, i + 1)
        if end >= 0:
            close = _closing(fmt, end + 1)
            if close is not None:
                return fmt[i + 1 : end], close
    if ch == "{":
        depth = 0
        for j in range(i, n):
            depth += {"{": 1, "}": -1}.get(fmt[j], 0)
            if depth == 0:
                close = _closing(fmt, j + 1)
                if close is not None:
                    return fmt[i : j + 1], close
                break
    end = fmt.find("}}", i)
    if end < 0:
        raise FormatError(f"format {_shown(fmt)}: '{{{{' is not closed by '}}}}'")
    return fmt[i:end].strip(), end + 2


def _closing(fmt: str, i: int) -> int | None:
    """Index past ``\\s*}}`` at ``i``, or None."""
    while i < len(fmt) and fmt[i].isspace():
        i += 1
    return i + 2 if fmt.startswith("}}", i) else None


def placeholders_of(fmt: str) -> list[tuple[int, int, Placeholder]]:
    """The ``{{ ... }}`` of a format: (start, end, placeholder)."""
    out: list[tuple[int, int, Placeholder]] = []
    i = 0
    while True:
        start = fmt.find("{{", i)
        if start < 0:
            return out
        named = _NAME.match(fmt, start + 2)
        if named is None:
            raise FormatError(f"format {_shown(fmt)}: '{{{{' must be followed by a parameter name")
        name, j = named.group(1), named.end()
        if fmt.startswith("}}", j):
            out.append((start, j + 2, Placeholder(name)))
            i = j + 2
        elif fmt.startswith("=", j):
            j += 1
            while j < len(fmt) and fmt[j].isspace():
                j += 1
            default, end = _read_default(fmt, j)
            out.append((start, end, Placeholder(name, default)))
            i = end
        else:
            raise FormatError(f"format {_shown(fmt)}: '{{{{ {name}' is not closed by '}}}}'")


def _value_pattern(group: str) -> str:
    """A value: quoted, a ``{...}`` object, or as few characters as the format allows."""
    return (
        f"(?P<{group}>\"(?P<{group}q>[^\"]*)\"|'(?P<{group}s>[^']*)'"
        f"|(?P<{group}j>\\{{.+?\\}})|(?P<{group}b>.+?))"
    )


def _anchors(literal: str) -> tuple[bool, bool]:
    """Whether the format's own text (outside ``{{ }}``) anchors the start and the end:
    ``^``/``\\A`` and ``$``/``\\Z``/``\\z`` outside a character class."""
    start = end = False
    i, n, in_class = 0, len(literal), False
    while i < n:
        ch = literal[i]
        if ch == "\\" and i + 1 < n:
            nxt = literal[i + 1]
            if not in_class:
                start = start or nxt == "A"
                end = end or nxt in "Zz"
            i += 2
            continue
        if in_class:
            in_class = ch != "]" or literal[i - 1] == "["
        elif ch == "[":
            in_class = True
            if literal.startswith("[^", i):
                i += 1
        elif ch == "^":
            start = True
        elif ch == "$":
            end = True
        i += 1
    return start, end


@lru_cache(maxsize=1024)
def compile_format(fmt: str) -> Compiled:
    """Compile a format; :class:`FormatError` naming the problem when it cannot be used."""
    if len(fmt) > MAX_FORMAT_CHARS:
        raise FormatError(f"a format is at most {MAX_FORMAT_CHARS} characters")
    parts: list[str] = []
    literal: list[str] = []
    groups: dict[str, Placeholder] = {}
    at = 0
    for index, (start, end, placeholder) in enumerate(placeholders_of(fmt)):
        before = fmt[at:start]
        stripped = before.rstrip()
        space = before[len(stripped) :]
        parts.append(stripped)
        literal.append(stripped)
        group = f"{_OURS}{index}"
        groups[group] = placeholder
        if placeholder.default is None:
            parts.append(space + _value_pattern(group))
        else:
            parts.append(f"(?:{space}{_value_pattern(group)})?")
        at = end
    parts.append(fmt[at:])
    literal.append(fmt[at:])
    pattern = "".join(parts)
    anchored_start, anchored_end = _anchors("".join(literal))
    if not anchored_start:
        pattern = r"^\s*" + pattern
    if not anchored_end:
        pattern += r"\s*$"
    pattern = pattern.replace(r"\Z", r"\z")  # Python's end of text, as RE2 writes it
    try:
        regex = re2.compile(pattern, _RE2_OPTIONS)
    except UnicodeEncodeError:
        raise FormatError(f"format {_shown(fmt)} holds text that is not valid Unicode") from None
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise FormatError(
            f"format {_shown(fmt)} is not a regular expression RE2 accepts (no "
            f"back-references or look-arounds): {text}"
        ) from None
    own = tuple(name for name in regex.groupindex if not name.startswith(_OURS))
    return Compiled(fmt, regex, groups, own, anchored_start)


def extract(fmt: str, text: str) -> Extracted:
    """The values ``text`` gives for ``fmt`` (raise :class:`NoMatch` when it does not match):
    the format's values (defaults where left out), the format's own named groups, then the
    trailing ``key=value`` pairs (which win)."""
    compiled = compile_format(fmt)
    if len(text) > MAX_TEXT_CHARS:
        raise NoMatch(f"the text is longer than {MAX_TEXT_CHARS} characters")
    text = text.encode("utf-8", "replace").decode("utf-8")  # no lone surrogates for RE2
    head, pairs = split_pairs(text)
    stream = f"{head} " if compiled.anchored_start else f" {head} "
    found = compiled.regex.search(stream)
    if found is None:
        raise NoMatch(f"{_shown(text)} does not match {_shown(fmt)}")
    values: dict[str, str] = {}
    defaulted: set[str] = set()
    covered = [False] * len(stream)
    index = compiled.regex.groupindex
    for group, placeholder in compiled.placeholders.items():
        value = _value_of(found, group)
        if value:
            _cover(covered, found.span(index[group]))
            if placeholder.name in defaulted:  # an earlier copy was left out: this one wins
                defaulted.discard(placeholder.name)
                values[placeholder.name] = value
            else:
                values.setdefault(placeholder.name, value)
        elif placeholder.default is not None and placeholder.name not in values:
            values[placeholder.name] = placeholder.default
            defaulted.add(placeholder.name)
    # A typed value is never counted as a default: only defaults are rendered as templates.
    for name in compiled.own_groups:
        value = found.group(name)
        if value is not None:
            _cover(covered, found.span(index[name]))
            values[name] = value
            defaulted.discard(name)
    for key, value in pairs:
        values[key] = value
        defaulted.discard(key)
    if fmt and not (head.strip() or any(values.values())):
        raise NoMatch("no value given and no default")
    fixed = sum(1 for ch, hit in zip(stream, covered, strict=True) if not hit and not ch.isspace())
    return Extracted(values, frozenset(defaulted), fixed)


def _value_of(found: Any, group: str) -> str | None:
    for kind in ("q", "s", "j", "b"):
        value = found.group(group + kind)
        if value is not None:
            return str(value)
    return None


def _cover(covered: list[bool], span: tuple[int, int]) -> None:
    start, end = span
    for i in range(max(start, 0), max(end, 0)):
        covered[i] = True


def _shown(text: str, limit: int = 80) -> str:
    text = text.replace("\n", " ")
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")
