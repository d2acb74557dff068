"""The benchmark entry point: its pure pieces, and ``python -m bench --quick`` as the CI smoke
test (both modes; it fails only when something functionally broke, never for being slow)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.harness import BenchError, pct
from bench.listing import _check_columns
from bench.loadgen import parse_wrk
from bench.report import summarize, tables
from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[1]
#: The smoke test's bound: both modes take under a minute on a quiet machine; the bound leaves
#: room for a busy one (it catches a hang, never slowness).
QUICK_LIMIT_S = 240

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:40000/api/v1/executions/execute
  2 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    80.12ms   20.00ms   1.20s    70.00%
    Req/Sec   300.00     50.00   400.00     70.00%
  Latency Distribution
     50%   77.39ms
     75%   90.00ms
     90%  110.00ms
     99%    1.20s
  1209 requests in 2.00s, 1.00MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
Requests/sec:    603.50
Transfer/sec:    500.00KB
"""


def test_wrk_output_is_read_with_units() -> None:
    found = parse_wrk(WRK_OUTPUT)
    assert found == {
        "requests_per_s": 603.5,
        "requests": 1209,
        "p50_ms": pytest.approx(77.39),
        "p99_ms": pytest.approx(1200.0),
        "socket_errors": 3,
    }


def test_medians_over_rounds_keep_once_measured_metrics() -> None:
    rounds: list[dict[str, Any]] = [{"rate": 1.0, "client": "wrk"}, {"rate": 5.0}, {"rate": 3.0}]
    assert summarize({"fill_s": 2.0}, rounds) == {"rate": 3.0, "client": "wrk", "fill_s": 2.0}
    assert pct([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0


def test_tables_show_each_mode_and_failures() -> None:
    results: dict[str, dict[str, Any]] = {
        "embedded": {"e2e": {"summary": {"completed_per_s": 123.4, "count": 100}}},
        "cluster": {"e2e": {"error": "BenchError: 3 of 100 callbacks missing"}},
    }
    text = tables(results, repeat=1)
    assert "completed/s" in text
    assert "123" in text
    assert "cluster: FAILED: BenchError: 3 of 100 callbacks missing" in text


def test_fill_refuses_a_table_with_required_columns_it_does_not_know() -> None:
    _check_columns([("id", True, False), ("status", True, False), ("note", False, False)])
    with pytest.raises(BenchError, match="tenant"):
        _check_columns([("status", True, False), ("tenant", True, False)])


@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.rabbitmq
@pytest.mark.timeout(QUICK_LIMIT_S + 30)
def test_quick_run_of_both_modes_passes(tmp_path: Path) -> None:
    require_service("PostgreSQL", "127.0.0.1", 5432)
    require_service("RabbitMQ", "127.0.0.1", 5672)
    out = tmp_path / "run.json"
    # Its own process group: at the bound the bench goes with every server it started
    # (killing only the bench left them running, holding PostgreSQL connections).
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--mode", "both", "--out", str(out)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=QUICK_LIMIT_S)
    except subprocess.TimeoutExpired:
        _end_group(proc)
        pytest.fail(f"python -m bench --quick took more than {QUICK_LIMIT_S} s")
    finally:
        _end_group(proc)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    document = json.loads(out.read_text())
    assert document["problems"] == []
    assert document["meta"]["quick"] is True
    for mode in ("embedded", "cluster"):
        api = document["results"][mode]["api"]["summary"]
        assert api["accepted"] > 0
        assert api["missing"] == 0
        assert document["results"][mode]["e2e"]["summary"]["callbacks_missing"] == 0


def _end_group(proc: subprocess.Popen[str]) -> None:
    """SIGTERM what is left of the bench's process group, SIGKILL after 10 s."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return  # the group is gone
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            proc.poll()  # reap the leader so the group can empty
            time.sleep(0.05)
