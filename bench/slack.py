"""Slack ack latency and command-to-result time, against a local stand-in of Slack's Web API.

    python -m bench.slack            # full run
    python -m bench.slack --quick    # small counts (smoke test; no assertions)

Starts ``attune serve`` (embedded default) and a bare Bolt app that only acks, both as
subprocesses, and in the same run measures, with signed slash commands:

- ack latency one command at a time (``run core.noop``), median and p99;
- ack latency at ``--concurrency`` commands in flight, p50 and p99, and the ratio to the bare app;
- command to result: from sending ``run core.echo`` to the stand-in receiving the thread reply
  with the output, median and p90.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.scenario.slack_signing import signed_request, slash_fields
from tests.scenario.slack_standin import SlackStandIn

SECRET = "bench-signing-secret"
ROOT = Path(__file__).resolve().parents[1]
_URL = re.compile(r"listening on (http://\S+)")


def _start(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if match := _URL.search(line):
            return proc, match.group(1).rstrip("/")
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{cmd} did not start")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _ack(
    session: aiohttp.ClientSession, url: str, standin: SlackStandIn, text: str, channel: str
) -> float:
    body, headers = signed_request(
        SECRET,
        slash_fields(
            text, channel_id=channel, user_id="UBENCH", response_url=standin.response_url("b")
        ),
    )
    started = time.perf_counter()
    async with session.post(f"{url}/slack/events", data=body, headers=headers) as resp:
        await resp.read()
        assert resp.status == 200, resp.status
    return (time.perf_counter() - started) * 1000


async def ack_latency(
    session: aiohttp.ClientSession, url: str, standin: SlackStandIn, count: int, concurrency: int
) -> dict[str, float]:
    serial = [await _ack(session, url, standin, "run core.noop", "CSERIAL") for _ in range(count)]
    sem = asyncio.Semaphore(concurrency)

    async def one() -> float:
        async with sem:
            return await _ack(session, url, standin, "run core.noop", "CCONC")

    concurrent = await asyncio.gather(*(one() for _ in range(count * 2)))
    return {
        "serial_p50_ms": statistics.median(serial),
        "serial_p99_ms": _pct(serial, 0.99),
        "concurrent_p50_ms": statistics.median(concurrent),
        "concurrent_p99_ms": _pct(list(concurrent), 0.99),
    }


async def settled(standin: SlackStandIn, quiet_s: float = 0.5, limit_s: float = 120) -> None:
    """Wait until the stand-in has had no call for ``quiet_s`` (earlier work delivered)."""
    async with asyncio.timeout(limit_s):
        while True:
            seen = len(standin.calls)
            await asyncio.sleep(quiet_s)
            if len(standin.calls) == seen:
                return


async def command_to_result(
    session: aiohttp.ClientSession, url: str, standin: SlackStandIn, count: int
) -> list[float]:
    """One command at a time on an idle server: send, then poll for the thread reply."""
    await settled(standin)
    times = []
    for i in range(count):
        channel = f"CRESULT{i}"
        marker = f"result-{i}-{time.monotonic_ns()}"
        started = time.perf_counter()
        await _ack(session, url, standin, f"run core.echo message={marker}", channel)
        async with asyncio.timeout(30):
            while not any(  # noqa: ASYNC110 (polls the stand-in's record)
                marker in c.all_text() and c.params.get("thread_ts")
                for c in standin.find("chat.postMessage", target=channel)
            ):
                await asyncio.sleep(0.001)
        times.append((time.perf_counter() - started) * 1000)
    return times


async def run(count: int, concurrency: int, results: int) -> dict[str, Any]:
    standin = await SlackStandIn().start()
    tmp = Path(tempfile.mkdtemp(prefix="attune-bench-slack-"))
    env = {
        **os.environ,
        "ATTUNE_HTTP_PORT": "0",
        "ATTUNE_DATA_DIR": str(tmp),
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
        "ATTUNE_PACKS_PATH": str(ROOT / "packs"),
        "ATTUNE_ADMIN_PASSWORD": "bench-password",
        "ATTUNE_SLACK_BOT_TOKEN": "xoxb-bench",
        "ATTUNE_SLACK_SIGNING_SECRET": SECRET,
        "ATTUNE_SLACK_API_URL": standin.api_url,
        "ATTUNE_LOG_LEVEL": "WARNING",
        "BENCH_SLACK_API_URL": standin.api_url,
        "BENCH_SIGNING_SECRET": SECRET,
    }
    env.pop("ATTUNE_AMQP_URL", None)
    serve, serve_url = _start([sys.executable, "-m", "bot.cli", "serve"], env, tmp)
    bare, bare_url = _start([sys.executable, "-m", "bench.bare_bolt"], env, ROOT)
    try:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            for url in (serve_url, bare_url):  # warm up both (Bolt's first auth.test, pools)
                await ack_latency(session, url, standin, 10, concurrency)
            await settled(standin)
            attune = await ack_latency(session, serve_url, standin, count, concurrency)
            baseline = await ack_latency(session, bare_url, standin, count, concurrency)
            c2r = await command_to_result(session, serve_url, standin, results)
    finally:
        for proc in (serve, bare):
            proc.terminate()
            proc.wait(timeout=30)
        await standin.close()
    return {
        "count": count,
        "concurrency": concurrency,
        "attune": attune,
        "bare_bolt": baseline,
        "concurrent_p99_ratio": attune["concurrent_p99_ms"] / baseline["concurrent_p99_ms"],
        "command_to_result_p50_ms": statistics.median(c2r),
        "command_to_result_p90_ms": _pct(c2r, 0.9),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200, help="commands one at a time")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--results", type=int, default=50, help="command-to-result samples")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.count, args.results = 20, 5
    r = asyncio.run(run(args.count, args.concurrency, args.results))
    a, b = r["attune"], r["bare_bolt"]
    print(f"{'ack latency (ms)':<34} {'attune':>9} {'bare Bolt':>10}")
    for key, label in (
        ("serial_p50_ms", "one at a time, p50"),
        ("serial_p99_ms", "one at a time, p99"),
        ("concurrent_p50_ms", f"{r['concurrency']} concurrent, p50"),
        ("concurrent_p99_ms", f"{r['concurrency']} concurrent, p99"),
    ):
        print(f"{label:<34} {a[key]:>9.2f} {b[key]:>10.2f}")
    print(f"{'p99 ratio at concurrency':<34} {r['concurrent_p99_ratio']:>9.2f}")
    print(
        f"{'command to result p50 / p90 (ms)':<34} {r['command_to_result_p50_ms']:>9.1f} "
        f"{r['command_to_result_p90_ms']:>10.1f}"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"slack-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(r, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
