"""The live bench's pure pieces: lines are timed once, from what each reader saw first."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.live import Seen, ticking_script


def test_each_line_counts_once_from_its_first_sighting() -> None:
    seen = Seen()
    seen.note("tick 0 at 100.000000\ntick 1 at 100.200000", at=100.5)
    seen.note("tick 1 at 100.200000\ntick 2 at 100.400000", at=101.0)  # line 1 again: ignored
    assert seen.latencies_ms() == [
        pytest.approx(500.0),
        pytest.approx(300.0),
        pytest.approx(600.0),
    ]
    # Lines printed before a reader was there are left out for it.
    assert seen.latencies_ms(since=100.1) == [pytest.approx(300.0), pytest.approx(600.0)]


def test_the_action_prints_the_lines_it_is_timed_by() -> None:
    script = ticking_script(3, every_s=0.0)
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    seen = Seen()
    seen.note(out, at=0.0)
    assert sorted(seen.printed) == [0, 1, 2]
