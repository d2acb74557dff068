"""Alias formats against chat text, as pure functions: the cases of StackStorm's own parser
tests (``st2common/tests/unit/test_action_alias_utils.py``), written again here, and ours."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.aliases.formats import (
    FormatError,
    NoMatch,
    compile_format,
    extract,
    split_pairs,
)


def values(fmt: str, text: str) -> dict[str, str]:
    return extract(fmt, text).values


# -- StackStorm's cases ---------------------------------------------------------------------


def test_empty_format_and_text() -> None:
    assert values("", "") == {}


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        ("", "a=foobar1", {"a": "foobar1"}),
        ("foo", 'foo a="foobar2 poonies bar"', {"a": "foobar2 poonies bar"}),
        ("foo", "foo a='foobar2 poonies bar'", {"a": "foobar2 poonies bar"}),
        ("foo", 'foo a={"foobar2": "poonies"}', {"a": '{"foobar2": "poonies"}'}),
        (
            "",
            'a=foobar1 b="boobar2 3 4" c=\'coobar3 4\' d={"a": "b"}',
            {"a": "foobar1", "b": "boobar2 3 4", "c": "coobar3 4", "d": '{"a": "b"}'},
        ),
        (
            "{{ captain }} is my captain",
            'Malcolm Reynolds is my captain weirdo="River Tam"',
            {"captain": "Malcolm Reynolds", "weirdo": "River Tam"},
        ),
    ],
)
def test_arbitrary_pairs(fmt: str, text: str, expected: dict[str, str]) -> None:
    assert values(fmt, text) == expected


@pytest.mark.parametrize(
    ("fmt", "text", "expected"),
    [
        # simple, at the end, spaced (quoted multi-word value)
        (
            "skip {{a}} more skip {{b}} and skip more.",
            "skip a1 more skip b1 and skip more.",
            {"a": "a1", "b": "b1"},
        ),
        ("skip {{a}} more skip {{b}}", "skip a1 more skip b1", {"a": "a1", "b": "b1"}),
        (
            "skip {{a}} more skip {{b}} and skip more.",
            'skip "a1 a2" more skip b1 and skip more.',
            {"a": "a1 a2", "b": "b1"},
        ),
        # defaults
        (
            "acl {{a}} {{b}} {{c}} {{d=1}}",
            'acl "a1 a2" "b1" "c1"',
            {"a": "a1 a2", "b": "b1", "c": "c1", "d": "1"},
        ),
        ("acl {{a=test}}", "acl", {"a": "test"}),
        # JSON values
        (
            "skip {{a}} more skip.",
            'skip {"a": "b", "c": "d"} more skip.',
            {"a": '{"a": "b", "c": "d"}'},
        ),
        (
            "skip {{a}} more skip {{b}}.",
            'skip {"a": "b", "c": "d"} more skip x.',
            {"a": '{"a": "b", "c": "d"}', "b": "x"},
        ),
        # spaces inside the braces, around '='
        (
            "s {{a}} more {{ b }} more {{ c=99 }} more {{ d = 99 }}",
            "s one more two more three more",
            {"a": "one", "b": "two", "c": "three", "d": "99"},
        ),
        ("skip {{ a = value }} more", "skip one more", {"a": "one"}),
        ("skip {{ a = value }} more", "skip more", {"a": "value"}),
        # a default that is itself a template is kept as written
        (
            "two by two hands of {{ color = {{ colors.default_color }} }}",
            "two by two hands of",
            {"color": "{{ colors.default_color }}"},
        ),
        # trailing pairs with format values and defaults
        ("testing {{ a }}", "testing value b=value2", {"a": "value", "b": "value2"}),
        ("testing {{ a=new }}", 'testing b="another value"', {"a": "new", "b": "another value"}),
        (
            "testing {{ b=abc }} {{ c=xyz }}",
            'testing newvalue d={"1": "2"} e="long value"',
            {"b": "newvalue", "c": "xyz", "d": '{"1": "2"}', "e": "long value"},
        ),
        (
            "skip {{d=test1}} more skip {{e=test1}}.",
            "skip more skip",
            {"d": "test1", "e": "test1"},
        ),
        (
            "skip {{d=test}} more skip {{e=test}}",
            "skip ponies more skip",
            {"d": "ponies", "e": "test"},
        ),
        ("foo bar", "foo bar pony1=foo pony2=bar", {"pony1": "foo", "pony2": "bar"}),
    ],
)
def test_stackstorm_parsing_cases(fmt: str, text: str, expected: dict[str, str]) -> None:
    assert values(fmt, text) == expected


def test_all_the_things() -> None:
    fmt = "{{ p0='http' }} g {{ p1=p }} a {{ url }} {{ p2={'a':'b'} }} {{ p3={{ e.i }} }}"
    text = "g a http://google.com {{ execution.id }} p4='testing' p5={'a':'c'}"
    assert values(fmt, text) == {
        "p0": "http",
        "p1": "p",
        "url": "http://google.com",
        "p2": "{{ execution.id }}",
        "p3": "{{ e.i }}",
        "p4": "testing",
        "p5": "{'a':'c'}",
    }


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        ("skip {{d}} more skip {{e}}.", ""),
        ("foo bar ponies", "foo lulz ponies"),
        # StackStorm's "don't match" regex tests (whose assertion never ran there)
        (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)", "bar foo ASDF-1234"),
        (r"foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$", "foo ASDF-1234 bar"),
        (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$", "bar ASDF-1234"),
    ],
)
def test_no_match(fmt: str, text: str) -> None:
    with pytest.raises(NoMatch):
        extract(fmt, text)


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)", "foo ASDF-1234"),
        (r"foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+)\s*$", "foo ASDF-1234"),
        (r"^\s*foo (?P<issue_key>[A-Z][A-Z0-9]+-[0-9]+) bar\s*$", "foo ASDF-1234 bar"),
    ],
)
def test_regex_formats_with_anchors(fmt: str, text: str) -> None:
    assert values(fmt, text) == {"issue_key": "ASDF-1234"}


def test_an_author_start_anchor_matches_the_text_start() -> None:
    # StackStorm puts a space before the text, so its bare ``^foo`` never matches: ours does.
    assert values(r"^foo (?P<key>[A-Z]+-\d+)", "foo AB-1") == {"key": "AB-1"}
    with pytest.raises(NoMatch):  # the end is still anchored for the author
        extract(r"^foo (?P<key>[A-Z]+-\d+)", "foo AB-1 and more")
    # Not anchored by the author: both ends are, as StackStorm does.
    with pytest.raises(NoMatch):
        extract(r"foo (?P<key>[A-Z]+-\d+)", "say foo AB-1")


# -- ours -----------------------------------------------------------------------------------


def test_multi_word_values_between_fixed_words() -> None:
    assert values("restart {{service}} on {{host}}", "restart nginx proxy on web1") == {
        "service": "nginx proxy",
        "host": "web1",
    }


def test_a_url_with_equals_stays_a_value() -> None:
    assert values("open {{url}}", "open http://x/?a=b") == {"url": "http://x/?a=b"}


def test_fixed_chars_measure_specificity() -> None:
    text = "restart nginx on web1"
    general = extract("restart {{service}}", text)
    specific = extract("restart {{service}} on {{host}}", text)
    assert general.values == {"service": "nginx on web1"}
    assert specific.fixed_chars > general.fixed_chars


def test_defaults_are_reported() -> None:
    got = extract("deploy {{app}} {{env=staging}}", "deploy api")
    assert got.values == {"app": "api", "env": "staging"}
    assert got.defaulted == {"env"}


@pytest.mark.parametrize(
    "fmt",
    [
        r"tag (?P<v>\S+) {{ v = '{{ user }}' }}",  # the format's own group of that name
        r"tag {{ v = '{{ user }}' }} (?P<v>\S+)",
    ],
)
def test_a_typed_value_is_never_reported_as_a_default(fmt: str) -> None:
    """Only defaults (the author's text) are rendered as templates: a value typed in chat
    that lands in a parameter which also has a default must not count as that default."""
    got = extract(fmt, "tag {{7*7}}")
    assert got.values["v"] == "{{7*7}}"
    assert "v" not in got.defaulted


@pytest.mark.parametrize(
    ("fmt", "problem"),
    [
        ("restart {{service", "not closed"),
        ("restart {{ }}", "parameter name"),
        (r"(a)\1 {{x}}", "RE2"),
        (r"(?<=a)b {{x}}", "RE2"),
    ],
)
def test_bad_formats_are_refused_with_the_reason(fmt: str, problem: str) -> None:
    with pytest.raises(FormatError, match=problem):
        compile_format(fmt)


def test_text_that_is_not_valid_unicode_neither_crashes_nor_matches_oddly() -> None:
    assert values("say {{msg}}", "say a\ud800b") == {"msg": "a?b"}
    with pytest.raises(FormatError, match="not valid Unicode"):
        compile_format("say \ud800 {{msg}}")


def test_split_pairs() -> None:
    assert split_pairs('go now a=1 b="x y" c={"k": {"n": 1}}') == (
        "go now",
        [("a", "1"), ("b", "x y"), ("c", '{"k": {"n": 1}}')],
    )
    assert split_pairs('say "hello"') == ('say "hello"', [])


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
_words = st.lists(_word, min_size=1, max_size=4).map(" ".join)


@given(service=_words, host=_word)
def test_any_words_round_trip(service: str, host: str) -> None:
    """Any multi-word value before a fixed word, and one word at the end, come back as typed."""
    got = values("restart {{service}} on {{host}}", f"restart {service} on {host}")
    if " on " in f" {service} ":
        return  # the text is ambiguous by construction: any split is a right answer
    assert got == {"service": service, "host": host}


@given(
    value=st.text(
        alphabet=st.characters(blacklist_characters='"\x00', blacklist_categories=["Cs"]),
        max_size=30,
    )
)
def test_double_quoted_values_come_back_whole(value: str) -> None:
    if not value.strip() or value != value.strip():
        return
    assert values("say {{msg}} now", f'say "{value}" now') == {"msg": value}


@given(
    pairs=st.dictionaries(
        st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True),
        st.one_of(_word, _words.map(lambda w: f'"{w}"')),
        max_size=4,
    )
)
def test_trailing_pairs_are_all_taken(pairs: dict[str, str]) -> None:
    text = "status " + " ".join(f"{k}={v}" for k, v in pairs.items())
    assert values("status", text) == {k: v.strip('"') for k, v in pairs.items()}
