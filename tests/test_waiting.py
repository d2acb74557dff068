"""tests.waiting: the one bounded poll the tests use."""

from __future__ import annotations

import time

import pytest

from tests.waiting import eventually, eventually_sync


async def test_returns_the_first_value_that_is_done() -> None:
    calls: list[int] = []

    def probe() -> int:
        calls.append(len(calls))
        return len(calls)

    assert await eventually(probe, "three calls", done=lambda n: n >= 3, interval_s=0) == 3
    assert len(calls) == 3


async def test_awaits_an_async_probe_and_defaults_to_truthy() -> None:
    answers = iter([None, [], ["found"]])

    async def probe() -> list[str] | None:
        return next(answers)

    assert await eventually(probe, "something", interval_s=0) == ["found"]


async def test_fails_at_the_deadline_naming_what_and_the_last_value() -> None:
    with pytest.raises(pytest.fail.Exception) as failed:
        await eventually(lambda: 0, "a miracle", 0.05, explain=lambda: "the output")
    message = str(failed.value)
    assert "waiting for a miracle; last: 0" in message
    assert message.endswith("the output")


def test_the_sync_twin_sleeps_the_thread() -> None:
    until = time.monotonic() + 0.05
    assert eventually_sync(lambda: time.monotonic() >= until, "50 ms", interval_s=0.01)
    with pytest.raises(pytest.fail.Exception, match="waiting for never"):
        eventually_sync(lambda: False, "never", 0.02)
