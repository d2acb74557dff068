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
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    LISTENING,
    PASSWORD,
    RESULTS,
    ROOT,
    SECRET,
    BenchError,
    Proc,
    WatchedStandIn,
    clean_env,
    pct,
    spawn_cli,
)
from tests.scenario.slack_signing import signed_request, slash_fields

#: Bound on one command's result reaching the stand-in.
RESULT_TIMEOUT_S = 30.0


def bare_bolt(standin: WatchedStandIn, log_dir: Path) -> Proc:
    """The baseline: ``bench/bare_bolt.py`` (this checkout), a Bolt app that only acks."""
    env = clean_env() | {"BENCH_SLACK_API_URL": standin.api_url, "BENCH_SIGNING_SECRET": SECRET}
    return Proc("bare-bolt", [sys.executable, "-m", "bench.bare_bolt"], env, ROOT, log_dir)


async def _ack(
    session: aiohttp.ClientSession, url: str, standin: WatchedStandIn, text: str, channel: str
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
        if resp.status != 200:
            raise BenchError(f"slash command answered {resp.status}")
    return (time.perf_counter() - started) * 1000


async def ack_latency(
    session: aiohttp.ClientSession, url: str, standin: WatchedStandIn, count: int, concurrency: int
) -> dict[str, float]:
    """``count`` commands one at a time, then ``2 * count`` with ``concurrency`` in flight."""
    serial = [await _ack(session, url, standin, "run core.noop", "CSERIAL") for _ in range(count)]
    sem = asyncio.Semaphore(concurrency)

    async def one() -> float:
        async with sem:
            return await _ack(session, url, standin, "run core.noop", "CCONC")

    concurrent = await asyncio.gather(*(one() for _ in range(count * 2)))
    return {
        "serial_p50_ms": statistics.median(serial),
        "serial_p99_ms": pct(serial, 0.99),
        "concurrent_p50_ms": statistics.median(concurrent),
        "concurrent_p99_ms": pct(concurrent, 0.99),
    }


async def command_to_result(
    session: aiohttp.ClientSession, url: str, standin: WatchedStandIn, count: int
) -> list[float]:
    """One command at a time on an idle server: from sending to the thread reply with the
    output arriving at the stand-in (ms)."""
    await standin.settled()
    times = []
    for i in range(count):
        channel = f"CRESULT{i}"
        marker = f"result-{i}-{time.monotonic_ns()}"

        def is_reply(c: Any, channel: str = channel, marker: str = marker) -> bool:
            return bool(
                c.method == "chat.postMessage"
                and c.target == channel
                and c.params.get("thread_ts")
                and marker in c.all_text()
            )

        started = time.perf_counter()
        arrival = asyncio.ensure_future(standin.wait_for(is_reply, RESULT_TIMEOUT_S))
        await _ack(session, url, standin, f"run core.echo message={marker}", channel)
        times.append((await arrival - started) * 1000)
    return times


async def run(count: int, concurrency: int, results: int) -> dict[str, Any]:
    standin = WatchedStandIn()
    await standin.start()
    tmp = Path(tempfile.mkdtemp(prefix="attune-bench-slack-"))
    env = clean_env() | {
        "ATTUNE_HTTP_PORT": "0",
        "ATTUNE_DATA_DIR": str(tmp),
        "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/bench.db",
        "ATTUNE_PACKS_PATH": str(ROOT / "packs"),
        "ATTUNE_ADMIN_PASSWORD": PASSWORD,
        "ATTUNE_SLACK_BOT_TOKEN": "xoxb-bench",
        "ATTUNE_SLACK_SIGNING_SECRET": SECRET,
        "ATTUNE_SLACK_API_URL": standin.api_url,
        "ATTUNE_SLACK_DEFAULT_ROLE": "operator",  # its users are random: none is listed
        "ATTUNE_LOG_LEVEL": "WARNING",
    }
    serve = spawn_cli("serve", ROOT, ["serve"], env, tmp)
    bare = bare_bolt(standin, tmp)
    try:
        serve_url = (await serve.wait_line(LISTENING)).group(1).rstrip("/")
        bare_url = (await bare.wait_line(LISTENING)).group(1).rstrip("/")
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            for url in (serve_url, bare_url):  # warm up both (Bolt's first auth.test, pools)
                await ack_latency(session, url, standin, 10, concurrency)
            await standin.settled()
            attune = await ack_latency(session, serve_url, standin, count, concurrency)
            baseline = await ack_latency(session, bare_url, standin, count, concurrency)
            c2r = await command_to_result(session, serve_url, standin, results)
    finally:
        await asyncio.gather(serve.stop(), bare.stop())
        await standin.close()
    return {
        "count": count,
        "concurrency": concurrency,
        "attune": attune,
        "bare_bolt": baseline,
        "concurrent_p99_ratio": attune["concurrent_p99_ms"] / baseline["concurrent_p99_ms"],
        "command_to_result_p50_ms": statistics.median(c2r),
        "command_to_result_p90_ms": pct(c2r, 0.9),
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
    out = RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"slack-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(r, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
