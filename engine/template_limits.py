"""Bounds on what a rule template may build (pure): a small payload must not stall the server.

Jinja's sandbox keeps templates away from Python's internals but not from arithmetic: with
``n`` from a 20-byte payload, ``{{ n ** n }}`` or ``{{ 'a' * n }}`` held the event loop for
seconds and grew the process by gigabytes. :class:`BoundedSandbox` intercepts the operators
that can grow a value without bound (``**``, ``*``, ``%`` formatting), the string methods and
filters that pad to a width, and refuses before computing what would be over the limits
below; :func:`check_output` caps what a template renders. A refusal is a
:class:`LimitExceeded`, which fails the enforcement with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import wraps
from typing import Any

from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from engine.errors import EngineError

#: Largest integer ``**`` may produce, in bits (about 1,200 decimal digits).
MAX_INT_BITS = 4096
#: Longest text or list a template may build (``*``, ``%``, padding) or render, in items.
MAX_OUTPUT_CHARS = 1_000_000
#: Filters whose integer arguments are sizes of what they build.
_SIZED_FILTERS = ("center", "indent", "wordwrap", "slice", "batch", "truncate")
#: String methods whose integer arguments are widths.
_SIZED_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
#: A ``%`` conversion's width and precision, or a ``*`` that takes them from the arguments.
_FORMAT_SIZES = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d*)(?:\.(\*|\d*))?")
#: In ``str.format``: a replacement field's spec with a nested field (a width from the
#: arguments) or a width or precision of 7 digits or more.
_BRACE_SIZES = re.compile(r"\{[^{}]*:[^{}]*(?:\{|\d{7})")


class LimitExceeded(EngineError):
    """A template would build something over a limit; 422 on the API."""

    code = "UNPROCESSABLE_ENTITY"
    http_status = 422


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_power(base: Any, exponent: Any) -> None:
    if not (_is_int(base) and _is_int(exponent)) or exponent <= 0 or abs(base) <= 1:
        return  # floats overflow at once (an error); 0, 1 and -1 stay small
    if exponent > MAX_INT_BITS or exponent * abs(base).bit_length() > MAX_INT_BITS:
        raise LimitExceeded(
            f"'**' would make a number of more than {MAX_INT_BITS} bits "
            f"(exponent {_short(exponent)})"
        )


def check_repeat(left: Any, right: Any) -> None:
    for seq, times in ((left, right), (right, left)):
        sized = isinstance(seq, str | list | tuple) and _is_int(times)
        if sized and len(seq) * times > MAX_OUTPUT_CHARS:
            raise LimitExceeded(
                f"'*' would make a {type(seq).__name__} of more than {MAX_OUTPUT_CHARS} "
                f"items ({len(seq)} x {_short(times)})"
            )


def check_format(template: Any, args: Any) -> None:
    if not isinstance(template, str):
        return
    for match in _FORMAT_SIZES.finditer(template):
        for size in match.groups():
            if size == "*":
                raise LimitExceeded("'%' formatting with a width or precision '*' is not allowed")
            if size and int(size) > MAX_OUTPUT_CHARS:
                raise LimitExceeded(f"'%' formatting wider than {MAX_OUTPUT_CHARS} characters")


def check_brace_format(template: str) -> None:
    if _BRACE_SIZES.search(template):
        raise LimitExceeded(
            f"'format' with a width from the arguments or over {MAX_OUTPUT_CHARS} characters"
        )


def check_sizes(what: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if _is_int(value) and abs(value) > MAX_OUTPUT_CHARS:
            raise LimitExceeded(f"{what}: a size over {MAX_OUTPUT_CHARS} ({_short(value)})")


def check_output(result: Any) -> None:
    """Refuse a rendered text (or list) longer than :data:`MAX_OUTPUT_CHARS`."""
    if isinstance(result, str | list) and len(result) > MAX_OUTPUT_CHARS:
        raise LimitExceeded(f"the result is longer than {MAX_OUTPUT_CHARS} characters")


def _short(number: int) -> str:
    return str(number) if number.bit_length() <= 64 else f"a number of {number.bit_length()} bits"


def _sized_filter(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_sizes(f"filter '{name}'", args[1:], kwargs)  # the first is the value filtered
        return fn(*args, **kwargs)

    return bounded


def _format_filter(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        check_format(value, args)
        return fn(value, *args, **kwargs)

    return bounded


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with the growth of values bounded (see the module's text)."""

    intercepted_binops = frozenset({"**", "*", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.globals.pop("lipsum", None)  # lipsum(n) writes n paragraphs
        for name in _SIZED_FILTERS:
            self.filters[name] = _sized_filter(name, self.filters[name])
        self.filters["format"] = _format_filter(self.filters["format"])

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            check_power(left, right)
        elif operator == "*":
            check_repeat(left, right)
        elif operator == "%":
            check_format(left, right)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)  # a str's format or format_map: sandboxed
        if wrapped is not None:
            check_brace_format(value.__self__)
        return wrapped

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        owner = getattr(__obj, "__self__", None)
        name = getattr(__obj, "__name__", "")
        if isinstance(owner, str) and name in _SIZED_METHODS:
            check_sizes(f"'{name}'", args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)
