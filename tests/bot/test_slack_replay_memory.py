"""The memory of signed Slack requests (issue 12, hole 8): a replay and Slack's retries act
once, a retry of a request that failed on our side may act, and the memory is bounded."""

from __future__ import annotations

import time

import pytest

from bot.slack_app import SIGNATURE_MAX_AGE_S, SeenRequests


def test_a_replay_is_seen_and_a_new_request_is_not() -> None:
    seen = SeenRequests()
    assert seen.first_time("v0=aa", b"body-1", retried=False)
    assert not seen.first_time("v0=aa", b"body-1", retried=False)
    assert seen.first_time("v0=bb", b"body-2", retried=False)


def test_slack_retries_act_once_unless_the_first_failed() -> None:
    seen = SeenRequests()
    assert seen.first_time("v0=aa", b"click", retried=False)
    # Slack may sign its retry at another second: the same body is what tells it.
    assert not seen.first_time("v0=bb", b"click", retried=True)
    assert seen.first_time("v0=cc", b"other", retried=False)
    seen.failed(b"other")
    assert seen.first_time("v0=dd", b"other", retried=True)
    # ... but the failed request itself, sent again unmarked, is still a replay.
    assert not seen.first_time("v0=cc", b"other", retried=False)


def test_the_memory_lasts_as_long_as_a_signature_is_good_and_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = SeenRequests()
    assert seen.first_time("v0=aa", b"body", retried=False)
    later = time.monotonic() + 2 * SIGNATURE_MAX_AGE_S + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert seen.first_time("v0=aa", b"body", retried=False)  # Bolt refuses it as too old anyway

    small = SeenRequests(max_size=4)  # two requests: a signature and a body digest each
    for n in range(3):
        assert small.first_time(f"v0={n}", f"body-{n}".encode(), retried=False)
    assert len(small._seen) <= 4
