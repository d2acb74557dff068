"""engine.backoff: one exponential back-off for every retry loop."""

from __future__ import annotations

import pytest

from engine import backoff
from engine.auth import LOGIN_BACKOFF_BASE_S
from engine.outbox import BACKOFF_BASE_S, BACKOFF_MAX_S, backoff_s


def test_doubles_from_the_base_up_to_the_cap() -> None:
    waits = [backoff.delay_s(n, base_s=0.1, cap_s=5.0) for n in range(9)]
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0, 5.0])


def test_a_huge_attempt_is_the_cap_not_an_overflow() -> None:
    assert backoff.delay_s(10_000, base_s=15.0, cap_s=3600.0) == 3600.0
    assert backoff.delay_s(10_000, base_s=1e-300, cap_s=1e300) == 1e300


def test_a_cap_below_the_base_is_the_cap() -> None:
    assert backoff.delay_s(0, base_s=10.0, cap_s=2.0) == 2.0


def test_jitter_draws_within_the_fraction_below_the_wait() -> None:
    assert backoff.delay_s(3, base_s=1.0, cap_s=60.0, jitter=0.5, rand=lambda: 0.0) == 8.0
    assert backoff.delay_s(3, base_s=1.0, cap_s=60.0, jitter=0.5, rand=lambda: 0.999) == (
        pytest.approx(4.004)
    )
    for _ in range(100):
        assert 4.0 < backoff.delay_s(3, base_s=1.0, cap_s=60.0, jitter=0.5) <= 8.0


@pytest.mark.parametrize(("attempt", "jitter"), [(-1, 0.0), (0, -0.1), (0, 1.5)])
def test_nonsense_is_refused(attempt: int, jitter: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        backoff.delay_s(attempt, base_s=1.0, cap_s=2.0, jitter=jitter)


def test_the_outbox_waits_the_base_after_its_first_failure() -> None:
    assert backoff_s(1) == BACKOFF_BASE_S
    assert backoff_s(2) == 2 * BACKOFF_BASE_S
    assert backoff_s(100) == BACKOFF_MAX_S


def test_the_login_throttle_grows_the_same_way() -> None:
    base = LOGIN_BACKOFF_BASE_S
    assert [backoff.delay_s(n, base_s=base, cap_s=300.0) for n in range(6)] == [
        base,
        2 * base,
        4 * base,
        8 * base,
        16 * base,
        300.0,
    ]
