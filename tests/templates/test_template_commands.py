"""Parsing of the template and schedule chat commands: ``run @template key=value``,
``templates``, ``schedule in|at|every|cron ... run ...``, ``schedules``, ``unschedule``."""

from __future__ import annotations

import pytest

from bot.commands import (
    Run,
    RunTemplate,
    ScheduleRun,
    Schedules,
    Templates,
    Unschedule,
    UsageError,
    parse,
)


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "schedule in 10m run core.echo message=hi",
            ScheduleRun("in", "10m", Run("core.echo", {"message": "hi"})),
        ),
        ("schedule at 17:00 run @nightly", ScheduleRun("at", "17:00", RunTemplate("nightly"))),
        (
            "schedule at 2026-12-01 17:00 run core.echo",
            ScheduleRun("at", "2026-12-01 17:00", Run("core.echo")),
        ),
        (
            'schedule every 1h run core.echo message="a run b"',
            ScheduleRun("every", "1h", Run("core.echo", {"message": "a run b"})),
        ),
        (
            'schedule cron "0 9 * * 1-5" run core.echo',
            ScheduleRun("cron", "0 9 * * 1-5", Run("core.echo")),
        ),
        ("schedules", Schedules()),
        ("unschedule #4", Unschedule(4)),
    ],
)
def test_schedule_commands(text: str, expected: object) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("schedule tomorrow run core.echo", "usage: `schedule in 10m"),
        ("schedule in 10m", "usage"),
        ("schedule every 1h status 4", "usage"),
        ("schedule cron 0 9 * * * run core.echo", "in quotes"),
        ("schedule in 1m run nope", "not an action reference"),
        ("unschedule web", "schedule number"),
        ("schedules all", "takes nothing"),
    ],
)
def test_bad_schedule_commands_say_why(text: str, words: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert words in caught.value.message
