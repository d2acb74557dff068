"""What chat shows of the retry chain (engine/retries.py): a retry's card and status line name
the chain ("retry 1 of 3 of #12"), an ended run whose retry is pending says so and offers to
call it off, and ``help`` names an action's retries."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

from bot import render
from tests.bot.test_render import record, texts

WHEN = datetime(2026, 11, 27, 3, 4, 5, tzinfo=UTC)


def buttons(blocks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["action_id"], e["text"]["text"])
        for b in blocks
        if b["type"] == "actions"
        for e in b["elements"]
    ]


def retry(status: str = "running", **changes: Any) -> Any:
    base = dataclasses.replace(record(status), result=None)
    requester = {**base.requester, "max_retries": 3}
    return dataclasses.replace(
        base,
        id=14,
        requester=requester,
        original_execution=12,
        retry_count=1,
        retry_reason="timeout",
        **changes,
    )


def test_a_retrys_card_names_its_chain() -> None:
    text, blocks = render.card(retry())
    assert text == "#14 ops.restart: running (retry 1 of 3 of #12)"
    assert ":repeat: retry 1 of 3 of #12 (timeout)" in "\n".join(texts(blocks))


def test_a_retry_whose_limit_is_unknown_still_names_its_chain() -> None:
    plain = dataclasses.replace(retry(), requester={"identity": "ana", "source": "api"})
    assert render.status_line(plain) == "#14 ops.restart: running (retry 1 of #12)"


def test_a_first_run_says_nothing_of_retries() -> None:
    text, blocks = render.card(record("failed", error="boom"))
    assert "retry" not in text
    assert not any("retry" in t for t in texts(blocks))


def test_an_ended_run_with_a_pending_retry_offers_to_call_it_off() -> None:
    ended = dataclasses.replace(record("timeout", error="timed out"), retry_due_at=WHEN)
    text, blocks = render.card(ended)
    assert text.endswith(f"({render.RETRY_PENDING})")
    assert buttons(blocks) == [
        (render.CANCEL_ACTION, "Cancel retry"),
        (render.RERUN_ACTION, "Re-run"),
    ]


def test_help_names_the_retries_of_an_action() -> None:
    action = {"ref": "ops.restart", "description": "Restart", "max_retries": 2}
    assert "Retried up to 2 times when a run is abandoned or times out." in render.action_help(
        action
    )
    assert "Retried" not in render.action_help({**action, "max_retries": 0})
