"""Time from a webhook POST to the execution it triggers being ``completed`` (``core.noop``).

    python -m bench.webhook            # 200 events one at a time, embedded default
    python -m bench.webhook --quick    # 20 (smoke test)

Runs the real HTTP app in this process (SQLite, in-process broker, a worker), with a trigger,
its webhook and a rule on ``core.noop``. Each round POSTs ``/api/v1/webhooks/{key}`` and stops
the clock when the ``execution.completed`` message of the execution that the event's
enforcement created arrives. Prints the median and p90 and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from config import Settings
from engine import broker as topics
from engine.api.app import build_app
from engine.automation import RuleSpec, TriggerSpec
from engine.broker import Envelope
from engine.runtime import build_runtime

ROOT = Path(__file__).resolve().parents[1]


async def run(count: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="attune-bench-webhook-"))
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp}/b.db",
        data_dir=tmp,
        packs_path=str(tmp),
        admin_password="bench-password",
        webhook_rate_per_s=100_000,
        log_level="WARNING",
    )
    rt = await build_runtime(settings)
    await rt.start_worker()
    completed: asyncio.Queue[tuple[int, float]] = asyncio.Queue()

    async def on_completed(envelope: Envelope) -> None:
        completed.put_nowait((int(envelope.payload["execution_id"]), time.perf_counter()))

    await rt.broker.consume(None, [topics.COMPLETED], on_completed, prefetch=16)
    await rt.automation.create_trigger(TriggerSpec(ref="bench.hook"))
    key = (await rt.automation.webhook("bench.hook", "enable")).webhook_key
    await rt.automation.create_rule(
        RuleSpec(ref="bench.noop", trigger_ref="bench.hook", action_ref="core.noop")
    )
    runner = web.AppRunner(build_app(rt), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/api/v1/webhooks/{key}"
    times_ms = []
    try:
        async with aiohttp.ClientSession() as http:
            for i in range(count + 10):  # the first 10 warm up
                started = time.perf_counter()
                async with http.post(url, json={"payload": {"n": i}}) as resp:
                    event_id = (await resp.json())["data"]["event_id"]
                while True:
                    execution_id, at = await asyncio.wait_for(completed.get(), 30)
                    record = await rt.service.get(execution_id)
                    if record.requester.get("event") == event_id:
                        break
                if i >= 10:
                    times_ms.append((at - started) * 1000)
    finally:
        await runner.cleanup()
        await rt.close()
    times_ms.sort()
    return {
        "count": count,
        "median_ms": statistics.median(times_ms),
        "p90_ms": times_ms[int(0.9 * (len(times_ms) - 1))],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(run(20 if args.quick else args.count))
    print(
        f"webhook POST -> execution completed (core.noop), {result['count']} events: "
        f"median {result['median_ms']:.2f} ms, p90 {result['p90_ms']:.2f} ms"
    )
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"webhook-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
