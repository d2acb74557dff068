"""The chat grammar: examples a user types, and properties over arbitrary text."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.commands import (
    _NORMALISE,
    USAGE,
    Actions,
    Cancel,
    Help,
    HelpAliases,
    Rerun,
    Run,
    Status,
    UsageError,
    parse,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run core.echo message=hi", Run("core.echo", {"message": "hi"})),
        ('run core.echo message="hello world"', Run("core.echo", {"message": "hello world"})),
        ("run core.echo message='hello world'", Run("core.echo", {"message": "hello world"})),
        ("run core.echo message=", Run("core.echo", {"message": ""})),
        ("run core.echo a= b=2", Run("core.echo", {"a": "", "b": "2"})),
        ('run ops.x data={"a": [1, {"b": "}"}]}', Run("ops.x", {"data": {"a": [1, {"b": "}"}]}})),
        ("run ops.x hosts=[1, 2]", Run("ops.x", {"hosts": [1, 2]})),
        ('run ops.x q="say \\"hi\\""', Run("ops.x", {"q": 'say "hi"'})),
        ("run ops.x msg=don't", Run("ops.x", {"msg": "don't"})),
        ("RUN ops.restart_service host=web1", Run("ops.restart_service", {"host": "web1"})),
        ("run core.noop", Run("core.noop", {})),
        ("  run   core.echo   message=hi  ", Run("core.echo", {"message": "hi"})),
        ("help", Help()),
        ("help restart nginx", HelpAliases("restart nginx")),
        ("", Help()),
        ("help core.echo", Help("core.echo")),
        ("actions", Actions()),
        ("actions ops", Actions("ops")),
        ("status 42", Status(42)),
        ("status #42", Status(42)),
        ("cancel 7", Cancel(7)),
        ("rerun 9", Rerun(9)),
    ],
)
def test_parses(text: str, expected: object) -> None:
    assert parse(text) == expected


def test_slack_smart_quotes_and_nbsp_are_normalised() -> None:
    # What Slack sends when a user types run core.echo message="hi there" on a phone.
    text = "run\u00a0core.echo message=\u201chi there\u201d other=\u2018a b\u2019"
    assert parse(text) == Run("core.echo", {"message": "hi there", "other": "a b"})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('run core.echo message="hello', "unbalanced"),
        ("run core.echo message='hello", "unbalanced"),
        ('run core.echo data={"a": 1', "unbalanced brackets"),
        ("run core.echo data={a: 1}", "not valid JSON"),
        ("run core.echo message", "expected key=value"),
        ("run core.echo 1x=2", "not a parameter name"),
        ("run core.echo a=1 a=2", "given twice"),
        ("run", "needs an action"),
        ("run echo", "not an action reference"),
        ("status", "needs an execution number"),
        ("cancel abc", "needs an execution number"),
        ("frobnicate", "Unknown command"),
        ("core.echo message=hi", "Did you mean `run core.echo message=hi`"),
        ('run core.echo message="a"b', "space after the closing"),
    ],
)
def test_usage_errors_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert says in caught.value.message


def test_unknown_command_shows_usage() -> None:
    with pytest.raises(UsageError) as caught:
        parse("deploy everything")
    assert USAGE in caught.value.message


def test_deep_json_is_refused_not_crashing() -> None:
    with pytest.raises(UsageError, match="nested deeper"):
        parse("run a.b x=" + "[" * 5000 + "]" * 5000)


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200))
def test_never_raises_anything_but_usage_error(text: str) -> None:
    try:
        parse(text)
    except UsageError as exc:
        message = exc.message
        assert message  # always something to show


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from("run core.echo a=b\"'{}[]:,1 \u201c\u201d\u00a0\\"), max_size=80
    )
)
def test_never_raises_on_quote_and_bracket_soup(text: str) -> None:
    with contextlib.suppress(UsageError):
        parse(text)


#: Characters that normalisation rewrites (smart quotes, odd spaces): excluded from round trips.
_REWRITTEN = set(_NORMALISE)
_value_chars = st.characters(
    blacklist_characters=[chr(c) for c in _REWRITTEN], blacklist_categories=("Cs",)
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True),
        st.text(alphabet=_value_chars, max_size=30),
        max_size=5,
    )
)
def test_double_quoted_values_round_trip(params: dict[str, str]) -> None:
    """Quote every value as a user would (escaping " and \\): the values come back exactly."""

    def quote(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = "run pack.action " + " ".join(f"{k}={quote(v)}" for k, v in params.items())
    assert parse(text) == Run("pack.action", params)
