"""Wire formats between the engine and an action's process (pure functions).

An action receives its parameters as one document (``parameter_format``) and may declare that
its stdout is structured (``output_format``):

* :func:`format_parameters` renders the parameters as ``json`` (compact), ``dotenv``
  (``KEY='value'`` lines meant to be read by a POSIX shell's ``.``/``source``) or ``yaml``.
* :func:`parse_output` turns stdout into data for ``json``, ``yaml`` and ``jsonl``; ``text``
  yields no data. A parse failure is *returned* as a message, never raised: the runner decides
  what it means (a run that exited 0 but broke its declared output format is ``failed``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from engine.errors import InvalidParameters

#: Deepest nesting of parsed output kept as the result's data.
MAX_DATA_DEPTH = 64

#: Names a dotenv line may assign: what a POSIX shell accepts as a variable name.
DOTENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: Longest parser message kept in a parse error; YAML messages can quote large chunks of input.
MAX_PARSE_MESSAGE_CHARS = 300

PARAMETER_FORMATS = frozenset({"json", "dotenv", "yaml"})
OUTPUT_FORMATS = frozenset({"text", "json", "yaml", "jsonl"})


def shell_single_quote(value: str) -> str:
    """Quote ``value`` so a POSIX shell reads it back verbatim: ``it's`` -> ``'it'\\''s'``.

    Inside single quotes a shell expands nothing (no ``$``, backticks, ``\\`` or newlines are
    special); the only character that needs care is the quote itself.
    """
    return "'" + value.replace("'", "'\\''") + "'"


def _dotenv(params: Mapping[str, Any]) -> bytes:
    lines: list[str] = []
    for key, value in params.items():
        if not isinstance(key, str) or not DOTENV_KEY_RE.fullmatch(key):
            raise InvalidParameters(
                f"parameter '{key}' cannot be delivered as dotenv: a name must be letters, "
                "digits and '_' and not start with a digit"
            )
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if "\x00" in text:
            raise InvalidParameters(
                f"parameter '{key}' cannot be delivered as dotenv: it contains a NUL character"
            )
        lines.append(f"{key}={shell_single_quote(text)}\n")
    return "".join(lines).encode("utf-8")


def format_parameters(params: Mapping[str, Any], fmt: str) -> bytes:
    """Render ``params`` as one UTF-8 document in ``fmt`` (``json``, ``dotenv`` or ``yaml``).

    ``dotenv`` writes one ``KEY='value'`` line per parameter; strings are single-quoted for a
    POSIX shell (``'`` becomes ``'\\''``), other values are JSON-encoded first (``true``,
    ``3``, ``["a"]``, ``null``). A name that is not a shell identifier raises
    :class:`InvalidParameters` naming it. Note: a value containing ``'`` uses the shell's
    ``'\\''`` idiom, which shell readers understand but some dotenv libraries do not.
    """
    if fmt == "json":
        return json.dumps(dict(params), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    if fmt == "dotenv":
        return _dotenv(params)
    if fmt == "yaml":
        text = yaml.safe_dump(dict(params), sort_keys=False, allow_unicode=True)
        return text.encode("utf-8")
    raise ValueError(f"unknown parameter format '{fmt}'")


def _short(exc: Exception) -> str:
    message = " ".join(str(exc).split())
    if len(message) > MAX_PARSE_MESSAGE_CHARS:
        message = message[: MAX_PARSE_MESSAGE_CHARS - 3] + "..."
    return message


def parse_output(stdout: str, fmt: str) -> tuple[Any, str | None]:
    """Parse ``stdout`` per the declared ``fmt``; return ``(data, parse_error)``.

    * ``text``: ``(None, None)``.
    * ``json``: the whole of stdout as one JSON value; empty (or blank) stdout is ``None``.
    * ``yaml``: ``yaml.safe_load`` of stdout; empty stdout is ``None``.
    * ``jsonl``: a list with one parsed value per non-blank line.

    On a parse failure ``data`` is ``None`` and ``parse_error`` reads
    ``"could not parse stdout as <fmt>: <reason>"``.
    """
    if fmt == "text":
        return None, None
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format '{fmt}'")
    if not stdout.strip():
        return ([] if fmt == "jsonl" else None), None
    try:
        if fmt == "json":
            return _shallow(json.loads(stdout), fmt)
        if fmt == "yaml":
            return _shallow(yaml.safe_load(stdout), fmt)
    except (ValueError, yaml.YAMLError) as exc:
        return None, f"could not parse stdout as {fmt}: {_short(exc)}"
    except RecursionError:
        return None, f"could not parse stdout as {fmt}: nested too deeply"
    items: list[Any] = []
    for number, line in enumerate(stdout.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append(json.loads(line))
        except ValueError as exc:
            return None, f"could not parse stdout as jsonl: line {number}: {_short(exc)}"
        except RecursionError:
            return None, f"could not parse stdout as jsonl: line {number}: nested too deeply"
    return _shallow(items, fmt)


def _shallow(data: Any, fmt: str) -> tuple[Any, str | None]:
    """``data`` if it nests at most :data:`MAX_DATA_DEPTH` levels (so storing and showing it
    can never exhaust the stack), else a parse error."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DATA_DEPTH:
            return None, f"could not parse stdout as {fmt}: nested deeper than {MAX_DATA_DEPTH}"
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return data, None
