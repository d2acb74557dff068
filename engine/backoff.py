"""Exponential back-off: how long to wait before the next try (pure; no I/O).

One function for every retry loop (the outbox's deliveries, the worker's final write, SQLite's
write lock, Slack's Socket Mode connection, the login throttle), so they all grow the same way.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable


def delay_s(
    attempt: int,
    *,
    base_s: float,
    cap_s: float,
    jitter: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """The wait before retry ``attempt`` (0 for the first): ``base_s * 2**attempt``, at most
    ``cap_s``. With ``jitter`` (0 to 1) that fraction of the wait is drawn at random: the
    result lies in ``[(1 - jitter) * wait, wait]``, so clients that failed together do not all
    come back together. ``rand`` returns a float in ``[0, 1)`` (for tests)."""
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, not {attempt}")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be between 0 and 1, not {jitter}")
    if base_s <= 0 or cap_s <= 0:
        return max(0.0, min(base_s, cap_s))
    # Past log2(cap / base) doublings the cap holds; a large attempt never overflows a float.
    doublings = math.log2(cap_s) - math.log2(base_s)
    wait_s = cap_s if attempt >= doublings else min(cap_s, math.ldexp(base_s, attempt))
    return wait_s * (1.0 - jitter * rand()) if jitter else wait_s
