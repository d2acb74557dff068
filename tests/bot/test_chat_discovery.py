"""Pure pieces of the ways in and of discovery: the ``history``/``last`` grammar, "did you
mean", what an event says to the bot, and how history and help are written."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bot.commands import (
    HISTORY_MAX,
    USAGE,
    History,
    Last,
    UnknownCommand,
    UsageError,
    parse,
)
from bot.discovery import actions_section, clip, closest, did_you_mean
from bot.history import ago, duration, excerpt, history_text, last_text
from bot.slack_events import command_text, said
from engine.catalog_records import Action
from engine.packs import ActionSpec
from engine.records import Execution

# -- grammar ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("history", History()),
        ("HISTORY 20", History(limit=20)),
        ("history core.echo", History(action_ref="core.echo")),
        ("history core.echo 5", History(action_ref="core.echo", limit=5)),
        ("history 5 core.echo", History(action_ref="core.echo", limit=5)),
        ("history core", History(pack="core")),
        ("history @ana 3", History(user="ana", limit=3)),
        ("history <@U12AB>", History(user="U12AB")),
        ("history <@U12AB|ana> 50", History(user="U12AB", limit=50)),
        ("last", Last()),
        ("  last  ", Last()),
    ],
)
def test_history_and_last_parse(text: str, command: object) -> None:
    assert parse(text) == command


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("history 0", f"1 to {HISTORY_MAX}"),
        (f"history {HISTORY_MAX + 1}", f"1 to {HISTORY_MAX}"),
        ("history core.echo ops.restart", "usage: `history"),
        ("history a b c", "usage: `history"),
        ("history 5 6", "usage: `history"),
        ("history @", "usage: `history"),
        ("history #$%", "usage: `history"),
        ("last 3", "`last` takes nothing"),
    ],
)
def test_bad_history_and_last_say_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse(text)
    assert says in caught.value.message


@pytest.mark.parametrize(
    ("text", "suggested"),
    [
        ("hsitory core.echo", "`history core.echo`"),
        ("histroy", "`history`"),
        ("lst", "`last`"),
        ("hepl", "`help`"),
        ("cancle 42", "`cancel 42`"),
        ("satus 7", "`status 7`"),
    ],
)
def test_an_unknown_verb_suggests_the_closest(text: str, suggested: str) -> None:
    with pytest.raises(UnknownCommand) as caught:
        parse(text)
    assert f"Did you mean {suggested}" in caught.value.message
    assert caught.value.text == text  # kept whole for whoever reads unknown text next


def test_an_unknown_verb_like_nothing_gets_the_usage() -> None:
    with pytest.raises(UnknownCommand) as caught:
        parse("deploy everything now")
    assert "Did you mean" not in caught.value.message
    assert USAGE in caught.value.message


# -- did you mean (action refs) -----------------------------------------------------------------

REFS = ["core.echo", "core.noop", "core.sleep", "ops.restart_service", "ops.deploy", "web.echo"]


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("core.ecoh", ["core.echo"]),
        ("cor.echo", ["core.echo", "web.echo"]),
        ("ops.restart", ["ops.restart_service"]),
        ("core.slep", ["core.sleep"]),
        ("db.echo", ["core.echo", "web.echo"]),  # the same action name in other packs
        ("zzz.yyy", []),
        ("CORE.DEPLY", []),  # another pack and another name: not close
    ],
)
def test_closest_refs(word: str, expected: list[str]) -> None:
    assert sorted(closest(word, REFS)) == sorted(expected)


def test_the_closest_comes_first() -> None:
    assert closest("cor.echo", REFS)[0] == "core.echo"
    assert closest("OPS.DEPLY", REFS) == ["ops.deploy"]


def test_did_you_mean_reads_well_and_says_nothing_when_nothing_is_close() -> None:
    assert did_you_mean("core.ecoh", REFS) == " Did you mean `core.echo`?"
    assert did_you_mean("nothing.like", REFS) == ""
    assert len(closest("x.echo", [f"p{i}.echo" for i in range(10)])) == 3


# -- help -----------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def action(ref: str, description: str = "", enabled: bool = True) -> Action:
    pack, _, name = ref.partition(".")
    spec = ActionSpec(
        ref=ref,
        pack_ref=pack,
        name=name,
        description=description,
        runner_type="shell",
        enabled=enabled,
    )
    return Action(id=1, pack_id=1, spec=spec, adhoc=False, created=NOW, updated=NOW)


def test_help_groups_by_pack_one_short_line_each() -> None:
    text = actions_section(
        [
            action("ops.restart", "Restart a service.\nSecond line is not shown."),
            action("core.echo", "x" * 200),
            action("core.noop", enabled=False),
        ],
        "/attune run",
    )
    lines = text.splitlines()
    assert lines[0].startswith("*What you may run* (3 actions)")
    assert lines[1:] == [
        "*core*",
        f"• `core.echo` — {clip('x' * 200)}",
        "• `core.noop` (disabled)",
        "*ops*",
        "• `ops.restart` — Restart a service.",
    ]
    assert len(clip("x" * 200)) == 70
    assert "ask an Attune administrator" in actions_section([], "run")


# -- history rendering ----------------------------------------------------------------------------


def execution(
    id_: int,
    status: str = "completed",
    *,
    result: dict[str, Any] | None = None,
    requester: dict[str, Any] | None = None,
    started: timedelta | None = None,
) -> Execution:
    created = NOW - timedelta(minutes=5)
    return Execution(
        id=id_,
        action_ref="core.echo",
        status=status,
        config={"message": "hi there"},
        parent=None,
        enforcement=None,
        result=result,
        created=created,
        updated=created,
        started_at=NOW - started if started else None,
        finished_at=None,
        executor=None,
        requester=requester or {"identity": "U1", "source": "slack", "user_id": "U1"},
    )


def test_history_lines_say_status_duration_who_and_when() -> None:
    records = [
        execution(3, "running", started=timedelta(seconds=4)),
        execution(2, "failed", result={"duration_ms": 1800}),
        execution(1, "requested", requester={"identity": "ana", "source": "chat"}),
    ]
    slack = history_text(History(limit=3), records, 12, NOW, slack=True).splitlines()
    assert slack == [
        "*Recent executions* (3 of 12, newest first):",
        "• #3 `core.echo` running for 4.0 s · <@U1> · 5 min ago",
        "• #2 `core.echo` failed in 1.8 s · <@U1> · 5 min ago",
        "• #1 `core.echo` queued · ana · 5 min ago",
        "`history 50` shows up to 50.",
    ]
    terminal = history_text(History(user="U1"), records[:1], 1, NOW, slack=False)
    assert "by U1" in terminal
    assert "· U1 ·" in terminal  # a name, not a Slack mention, in the terminal
    assert history_text(History(action_ref="a.b"), [], 0, NOW, True) == (
        "No executions of `a.b` that you may view."
    )


def test_durations_and_ages() -> None:
    assert duration(execution(1, result={"duration_ms": 420}), NOW) == "in 420 ms"
    assert duration(execution(1, result={"duration_ms": 185_000}), NOW) == "in 3 min 5 s"
    assert duration(execution(1, "requested"), NOW) == ""
    assert ago(NOW - timedelta(seconds=3), NOW) == "just now"
    assert ago(NOW - timedelta(hours=5), NOW) == "5 h ago"
    assert ago(NOW - timedelta(days=2), NOW) == "2 d ago"


def test_last_shows_the_end_of_the_output() -> None:
    stdout = "".join(f"line {i}\n" for i in range(1000)) + "```the end```\n"
    record = execution(9, "failed", result={"duration_ms": 50, "stdout": stdout, "error": "exit 3"})
    text = last_text(record, NOW, slack=True)
    assert text.startswith("*Your last execution*: #9 `core.echo` failed in 50 ms, asked 5 min")
    assert 'parameters: `message="hi there"`' in text
    assert "line 999" in text
    assert "line 1 \n" not in text
    assert "characters before" in text
    assert "```the end```" not in text  # a fence in the output cannot end the block
    assert text.endswith("error: exit 3")
    assert len(excerpt(stdout)) < 1600


# -- what an event says ---------------------------------------------------------------------------

BODY = {"authorizations": [{"user_id": "UBOT", "is_bot": True}], "team_id": "T1"}


def test_a_mention_is_stripped_and_answered_in_its_thread() -> None:
    event = {
        "type": "app_mention",
        "user": "U1",
        "text": "<@UBOT> run core.http_request url=<https://x.example/a?b=1&amp;c=2|x.example> "
        "who=<@U2>",
        "channel": "C1",
        "ts": "1.1",
    }
    heard = said(event, BODY)
    assert heard is not None
    assert heard.text == "run core.http_request url=https://x.example/a?b=1&c=2 who=<@U2>"
    assert (heard.user_id, heard.channel_id, heard.team_id) == ("U1", "C1", "T1")
    assert heard.answer_thread == "1.1"
    assert not heard.direct
    in_thread = said({**event, "thread_ts": "0.5"}, BODY)
    assert in_thread is not None
    assert in_thread.answer_thread == "0.5"


def test_a_dm_is_answered_in_the_dm() -> None:
    event = {"type": "message", "channel_type": "im", "user": "U1", "text": "last"}
    heard = said({**event, "channel": "D1", "ts": "1.1"}, BODY)
    assert heard is not None
    assert (heard.text, heard.direct, heard.answer_thread) == ("last", True, None)


@pytest.mark.parametrize(
    "change",
    [
        {"bot_id": "B1"},
        {"user": "UBOT"},
        {"subtype": "message_changed"},
        {"subtype": "message_deleted"},
        {"subtype": "bot_message"},
        {"channel_type": "channel"},
        {"user": None},
        {"type": "reaction_added"},
    ],
)
def test_bots_edits_and_others_are_not_heard(change: dict[str, Any]) -> None:
    event = {"type": "message", "channel_type": "im", "user": "U1", "text": "run a.b"}
    assert said({**event, "channel": "D1", **change}, BODY) is None


def test_without_the_bots_id_a_leading_mention_is_dropped() -> None:
    assert command_text("<@UX|attune> help", set()) == "help"
    assert command_text("help <@UX>", set()) == "help <@UX>"
    assert command_text("&lt;b&gt; &amp;", {"UBOT"}) == "<b> &"


def test_the_manifest_asks_for_the_events_and_scopes_the_bot_listens_for() -> None:
    import yaml

    manifest = yaml.safe_load((Path(__file__).parents[2] / "slack-app-manifest.yaml").read_text())
    assert manifest["settings"]["event_subscriptions"]["bot_events"] == [
        "app_mention",
        "message.im",
    ]
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {"app_mentions:read", "im:history", "im:read", "chat:write"} <= scopes
    assert manifest["features"]["app_home"]["messages_tab_enabled"] is True
