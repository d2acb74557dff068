"""Parsing of the template chat commands: ``run @template key=value`` and ``templates``."""

from __future__ import annotations

import pytest

from bot.commands import Run, RunTemplate, Templates, UsageError, parse


def test_run_at_a_template_with_overrides() -> None:
    assert parse('run @ops.restart_web host=web2 note="two words"') == RunTemplate(
        "ops.restart_web", {"host": "web2", "note": "two words"}
    )
    assert parse("run @nightly") == RunTemplate("nightly", {})


def test_a_plain_run_is_unchanged() -> None:
    assert parse("run core.echo message=hi") == Run("core.echo", {"message": "hi"})


def test_templates_lists() -> None:
    assert parse("templates") == Templates()
    assert parse("TEMPLATES") == Templates()


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("run @", "not a template name"),
        ("run @bad!ref", "not a template name"),
        ("run @t a=1 a=2", "given twice"),
        ("run @t =1", ""),
        ("templates all", "`templates` takes nothing"),
    ],
)
def test_bad_template_commands_say_why(text: str, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert words in caught.value.message
