"""Which alias a text means, as pure functions: the cases of StackStorm's matching tests
(``st2common/tests/unit/test_util_actionalias_matching.py``), written again, and ours (the most
specific wins, equal aliases are an error naming both, suggestions, ``help <words>``)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.aliases.matching import AmbiguousAlias, best_match, closest, readable, search
from engine.aliases.records import Alias, AliasSpec, normalise

NOW = datetime(2026, 11, 30, tzinfo=UTC)


def alias(ref: str, formats: list[Any], *, enabled: bool = True, description: str = "") -> Alias:
    pack, name = ref.split(".")
    return Alias(
        id=1,
        ref=ref,
        pack_ref=pack,
        name=name,
        action_ref="core.echo",
        description=description,
        enabled=enabled,
        formats=formats,
        ack=None,
        result=None,
        extra=None,
        immutable_parameters=None,
        adhoc=False,
        created=NOW,
        updated=NOW,
    )


# -- StackStorm's cases ---------------------------------------------------------------------


def test_format_strings_of_aliases() -> None:
    reese = alias("terminator.kyle_reese", ["Come with me if you want to live"])
    t800 = alias("terminator.t800", ["I need your {{item}}, your {{item2}} and your {{vehicle}}"])
    assert reese.shapes() == [
        ("Come with me if you want to live", ["Come with me if you want to live"])
    ]
    assert t800.displays() == ["I need your {{item}}, your {{item2}} and your {{vehicle}}"]


def test_display_and_representation() -> None:
    johnny = alias(
        "short_circuit.johnny_five_alive",
        [
            {
                "display": "Number 5 is {{status}}",
                "representation": ["Number 5 is {{status=alive}}"],
            },
            "Hey, laser lips, your mama was a snow blower.",
        ],
    )
    assert johnny.shapes() == [
        ("Number 5 is {{status}}", ["Number 5 is {{status=alive}}"]),
        (
            "Hey, laser lips, your mama was a snow blower.",
            ["Hey, laser lips, your mama was a snow blower."],
        ),
    ]
    found = best_match([johnny], "Number 5 is")
    assert found is not None
    assert found.extracted.values == {"status": "alive"}
    assert found.display == "Number 5 is {{status}}"


def test_display_only_and_representation_only() -> None:
    andy = alias("the_goonies.andy", [{"display": "He's just like his {{relation}}."}])
    data = alias("the_goonies.data", [{"representation": "You are my greatest invention."}])
    assert andy.shapes() == [("He's just like his {{relation}}.", [])]
    assert data.shapes() == [(None, ["You are my greatest invention."])]
    assert best_match([andy], "He's just like his father.") is None  # a display matches nothing
    assert best_match([data], "You are my greatest invention.") is not None
    assert data.displays() == []  # nothing to show in help


def test_a_format_is_a_string_or_an_object() -> None:
    assert normalise("Quite an experience to live in fear, isn't it?") == (
        "Quite an experience to live in fear, isn't it?",
        ["Quite an experience to live in fear, isn't it?"],
    )
    with pytest.raises(ValidationError):
        AliasSpec.model_validate(
            {"name": "x", "pack": "p", "action_ref": "p.a", "formats": [["a list"]]}
        )


def test_matching() -> None:
    spengler = alias("ghostbusters.spengler", ["{{choice}} cross the {{target}}"])
    found = best_match([spengler], "Don't cross the streams")
    assert found is not None
    assert found.alias.ref == "ghostbusters.spengler"
    assert found.representation == "{{choice}} cross the {{target}}"
    assert found.extracted.values == {"choice": "Don't", "target": "streams"}


# -- ours -----------------------------------------------------------------------------------


def test_the_most_specific_format_wins_across_aliases() -> None:
    general = alias("ops.restart", ["restart {{service}}"])
    specific = alias("ops.restart_on", ["restart {{service}} on {{host}}"])
    for order in ([general, specific], [specific, general]):
        found = best_match(order, "restart nginx on web1")
        assert found is not None
        assert found.alias.ref == "ops.restart_on"
        assert found.extracted.values == {"service": "nginx", "host": "web1"}
    found = best_match([general, specific], "restart nginx")
    assert found is not None
    assert found.alias.ref == "ops.restart"


def test_equal_matches_of_two_aliases_are_an_error_naming_both() -> None:
    one = alias("ops.page", ["page {{who}}"])
    two = alias("oncall.page", ["page {{person}}"])
    with pytest.raises(AmbiguousAlias) as caught:
        best_match([one, two], "page alice")
    assert caught.value.refs == ("ops.page", "oncall.page")
    assert "ops.page" in caught.value.message
    assert "oncall.page" in caught.value.message
    # one alias's two equal formats are not ambiguous: its first is taken
    both = alias("ops.page2", ["page {{who}}", "page {{person}}"])
    found = best_match([both], "page alice")
    assert found is not None
    assert found.extracted.values == {"who": "alice"}


def test_disabled_aliases_do_not_match() -> None:
    off = alias("ops.off", ["restart {{service}}"], enabled=False)
    assert best_match([off], "restart nginx") is None


def test_suggestions_and_search() -> None:
    aliases = [
        alias("ops.restart", ["restart {{service}} on {{ host=localhost }}"], description="Bounce"),
        alias("ops.page", ["page {{who}}"], description="Wake someone"),
    ]
    assert readable("restart {{service}} on {{ host=localhost }}") == "restart {service} on {host}"
    assert closest(aliases, "restrat nginx on web1")[0] == "restart {service} on {host}"
    assert "status" in closest(aliases, "stauts 4", ["run", "status", "cancel"])
    assert closest(aliases, "zzzz qqqq") == []
    assert [d for _, d in search(aliases, "RESTART")] == ["restart {service} on {host}"]
    assert [a.ref for a, _ in search(aliases, "wake")] == ["ops.page"]  # by description
    assert search(aliases, "restart page") == []  # every word must be there


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)


@given(service=_word, host=_word)
def test_more_fixed_words_always_win(service: str, host: str) -> None:
    general = alias("ops.a", ["restart {{service}}"])
    specific = alias("ops.b", ["restart {{service}} on {{host}}"])
    found = best_match([general, specific], f"restart {service} on {host}")
    assert found is not None
    assert found.alias.ref == "ops.b"


def test_suggestions_and_help_words_stay_quick_on_a_huge_text() -> None:
    """A DM may hold 40,000 characters (the terminal, any number): what it may have meant is
    found without stalling the process for seconds (the event loop serves everyone)."""
    many = [
        alias(f"p.a{i}", [f"restart {{{{ service }}}} on {{{{ host }}}} at {i}", f"stop {i}"])
        for i in range(150)
    ]
    huge = " ".join("restart nginx on web1 a" for _ in range(1700))  # about 40,000 characters
    started = time.perf_counter()
    closest(many, huge)
    search(many, huge)
    assert time.perf_counter() - started < 0.5
    # a short text is matched as before
    assert "restart {service} on {host} at 7" in closest(many, "restart nginx on web1 at 7")
    assert [a.ref for a, _ in search(many, "restart at 149")] == ["p.a149"]
