"""Rendering stays inside Slack's limits and shows what an operator needs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from bot import render
from bot.terminal import plain
from engine.records import Execution
from engine.status import PENDING, TERMINAL, ExecutionStatus

WHEN = datetime(2026, 11, 27, 3, 4, 5, tzinfo=UTC)


def record(status: str = "completed", **result: Any) -> Execution:
    return Execution(
        id=12,
        action_ref="ops.restart",
        status=status,
        config={"host": "web1", "token": "********", "note": "two words"},
        requester={"identity": "ana", "source": "slack", "user_id": "U1"},
        result={"duration_ms": 1800, "stdout": "", "stderr": "", **result}
        if result or status != "requested"
        else None,
        parent=None,
        enforcement=None,
        created=WHEN,
        updated=WHEN,
        started_at=None,
        finished_at=None,
        executor=None,
    )


def texts(blocks: list[dict[str, Any]]) -> list[str]:
    out = []
    for b in blocks:
        if "text" in b:
            out.append(b["text"]["text"])
        for e in b.get("elements", []):
            out.append(e["text"]["text"] if isinstance(e["text"], dict) else e["text"])
    return out


def test_card_shows_id_action_status_duration_and_requester() -> None:
    text, blocks = render.card(record())
    joined = "\n".join(texts(blocks))
    assert text == "#12 ops.restart: completed in 1.8 s"
    assert "*#12*" in joined
    assert "`ops.restart`" in joined
    assert "<@U1>" in joined
    assert "host=web1" in joined
    assert 'note="two words"' in joined
    assert "token=********" in joined


def test_queued_card_says_queued() -> None:
    text, _ = render.card(record("requested"))
    assert text == "#12 ops.restart: queued"


def test_failed_card_shows_the_error() -> None:
    _, blocks = render.card(record("failed", error="exit code 3: disk full"))
    assert any("exit code 3: disk full" in t for t in texts(blocks))


def test_output_is_escaped_and_fenced() -> None:
    reply = render.output(record(stdout="<b>&``` done"))
    assert reply is not None
    body = texts(reply[1])[0]
    assert "&lt;b&gt;&amp;" in body
    assert body.count("```") == 2  # the fence inside the output cannot close the block


def test_no_output_no_reply() -> None:
    assert render.output(record(stdout="  \n")) is None


def test_long_output_fits_slack_limits_and_asks_for_upload() -> None:
    big = "&" * 20_000  # escaping makes it five times longer
    rec = record(stdout=big, stderr="x" * 10_000)
    reply = render.output(rec)
    assert reply is not None
    _, blocks = reply
    assert len(blocks) <= render.MAX_BLOCKS
    assert all(len(t) <= render.SECTION_TEXT_LIMIT for t in texts(blocks))
    assert render.needs_upload(rec)
    assert any("attached as a file" in t for t in texts(blocks))
    assert texts(blocks)[0].endswith("```")
    assert "&am```" not in texts(blocks)[0]


def test_action_help_lists_parameters() -> None:
    action = {
        "ref": "ops.restart",
        "description": "Restart a service",
        "param_json_schema": {
            "properties": {
                "host": {"type": "string", "description": "Which host"},
                "force": {"type": "boolean", "default": False},
                "mode": {"type": "string", "enum": ["soft", "hard"]},
                "token": {"type": "string", "secret": True},
            },
            "required": ["host"],
        },
    }
    text = render.action_help(action)
    assert "`host` (string, required)" in text
    assert "default false" in text
    assert 'one of "soft", "hard"' in text
    assert "secret" in text
    assert "`/attune run ops.restart host=…`" in text


def test_plain_strips_mrkdwn() -> None:
    assert plain("*Actions* in `core`: *bold*") == "Actions in core: bold"
    assert plain("2*3*4") == "2*3*4"


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e["value"])
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def test_card_offers_cancel_while_running_and_rerun_after() -> None:
    assert buttons(render.card(record("running"))[1]) == [(render.CANCEL_ACTION, "12")]
    assert buttons(render.card(record("requested"))[1]) == [(render.CANCEL_ACTION, "12")]
    assert buttons(render.card(record("failed", error="x"))[1]) == [(render.RERUN_ACTION, "12")]
    assert buttons(render.card(record("canceling"))[1]) == []


def test_confirmation_has_confirm_and_abort_buttons_in_slack_only() -> None:
    text, blocks = render.confirmation(
        "1a2b3c4d", "ops.restart", {"host": "web1"}, 300, buttons=True
    )
    assert "confirm 1a2b3c4d" in text
    assert blocks is not None
    assert buttons(blocks) == [
        (render.CONFIRM_ACTION, "1a2b3c4d"),
        (render.ABORT_ACTION, "1a2b3c4d"),
    ]
    assert "host=web1" in blocks[0]["text"]["text"]
    assert render.confirmation("1a2b3c4d", "ops.restart", {}, 300, buttons=False)[1] is None


def test_every_status_has_an_emoji_and_ends_or_may_be_cancelled_per_engine_status() -> None:
    assert set(render.EMOJI) == set(ExecutionStatus)
    assert {s.value for s in TERMINAL} == render.TERMINAL_WORDS
    assert {s.value for s in PENDING} | {"running"} == render.CANCELLABLE_WORDS
