"""Submit-to-completed latency and burst throughput of ``core.noop``.

    python -m bench.latency                      # embedded default: SQLite + in-process broker
    python -m bench.latency --mode cluster       # PostgreSQL + RabbitMQ, 2 worker processes
    python -m bench.latency --quick              # small counts (CI smoke test; no assertions)

Latency: one execution at a time, from the call to ``ExecutionService.submit`` to the
``execution.completed`` message reaching this process. Burst: ``--burst`` executions submitted
concurrently, time until the last one is completed. Medians over ``--repeat`` rounds. Prints a
table and writes JSON to ``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.harness import AMQP_URL, RESULTS, pg_admin
from config import Settings
from engine import broker as topics
from engine.broker import Envelope
from engine.records import Executor
from engine.runtime import Runtime, build_runtime

#: Bound on every wait for a completion.
WAIT_S = 60.0


class Completions:
    """Futures resolved by ``execution.completed`` messages."""

    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.early: dict[int, float] = {}

    async def on_message(self, envelope: Envelope) -> None:
        now = time.perf_counter()
        eid = envelope.payload.get("execution_id")
        if not isinstance(eid, int):
            return
        fut = self.waiting.pop(eid, None)
        if fut is not None and not fut.done():
            fut.set_result(now)
        else:
            self.early[eid] = now

    def wait(self, eid: int) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if eid in self.early:
            fut.set_result(self.early.pop(eid))
        else:
            self.waiting[eid] = fut
        return fut


async def _submit(rt: Runtime) -> int:
    record = await rt.service.submit("core.noop", {}, Executor(identity="bench", source="cli"))
    return record.id


async def measure(rt: Runtime, done: Completions, count: int, burst: int) -> dict[str, Any]:
    latencies_ms = []
    for _ in range(count):
        started = time.perf_counter()
        eid = await _submit(rt)
        finished = await asyncio.wait_for(done.wait(eid), WAIT_S)
        latencies_ms.append((finished - started) * 1000)
    started = time.perf_counter()
    ids = await asyncio.gather(*(_submit(rt) for _ in range(burst)))
    await asyncio.wait_for(asyncio.gather(*(done.wait(i) for i in ids)), WAIT_S)
    burst_s = time.perf_counter() - started
    latencies_ms.sort()
    return {
        "latency_median_ms": statistics.median(latencies_ms),
        "latency_p90_ms": latencies_ms[int(0.9 * (len(latencies_ms) - 1))],
        "burst": burst,
        "burst_per_s": burst / burst_s,
    }


async def _create_pg_db() -> str:
    name = f"attune_bench_{uuid.uuid4().hex[:8]}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    return name


async def run(mode: str, count: int, burst: int, repeat: int, workers: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="attune-bench-"))
    env_extra: dict[str, str] = {"ATTUNE_DATA_DIR": str(tmp), "ATTUNE_PACKS_PATH": str(tmp)}
    db_name = None
    if mode == "embedded":
        settings = Settings(
            database_url=f"sqlite+aiosqlite:///{tmp}/bench.db",
            data_dir=tmp,
            packs_path=str(tmp),
            admin_password="bench-password",
        )
    else:
        db_name = await _create_pg_db()
        exchange = f"attune.bench.{uuid.uuid4().hex[:8]}"
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{db_name}"
        settings = Settings(
            database_url=url,
            amqp_url=AMQP_URL,
            amqp_exchange=exchange,
            data_dir=tmp,
            packs_path=str(tmp),
            admin_password="bench-password",
        )
        env_extra |= {
            "ATTUNE_DATABASE_URL": url,
            "ATTUNE_AMQP_URL": AMQP_URL,
            "ATTUNE_AMQP_EXCHANGE": exchange,
        }
    rt = await build_runtime(settings)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        done = Completions()
        await rt.broker.consume(None, [topics.COMPLETED], done.on_message, prefetch=64)
        if mode == "embedded":
            await rt.start_worker()
        else:
            env = os.environ | env_extra
            for _ in range(workers):
                procs.append(
                    subprocess.Popen(  # noqa: ASYNC220 (start-up only)
                        [sys.executable, "-m", "bot.cli", "worker"],
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                    )
                )
            for p in procs:  # each prints one line once it consumes
                assert p.stdout is not None
                await asyncio.wait_for(asyncio.to_thread(p.stdout.readline), 30)
        await measure(rt, done, min(count, 20), min(burst, 50))  # warm-up
        rounds = [await measure(rt, done, count, burst) for _ in range(repeat)]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=20)
        if mode == "cluster":
            from engine.broker.amqp import AmqpBroker

            assert isinstance(rt.broker, AmqpBroker)
            await rt.broker.delete_topology()
        await rt.close()
        if db_name:
            await pg_admin(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    keys = ("latency_median_ms", "latency_p90_ms", "burst_per_s")
    summary = {k: statistics.median(r[k] for r in rounds) for k in keys}
    return {
        "mode": mode,
        "count": count,
        "burst": burst,
        "repeat": repeat,
        "workers": workers if mode == "cluster" else 1,
        "rounds": rounds,
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=["embedded", "cluster", "both"], default="embedded")
    parser.add_argument("--count", type=int, default=300, help="sequential executions per round")
    parser.add_argument("--burst", type=int, default=1000, help="concurrent executions per round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="worker processes (cluster)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.count, args.burst, args.repeat = 20, 50, 1
    modes = ["embedded", "cluster"] if args.mode == "both" else [args.mode]
    results = [
        asyncio.run(run(m, args.count, args.burst, args.repeat, args.workers)) for m in modes
    ]
    print(f"{'mode':<10} {'latency p50 ms':>15} {'latency p90 ms':>15} {'burst/s':>10}")
    for r in results:
        print(
            f"{r['mode']:<10} {r['latency_median_ms']:>15.2f} {r['latency_p90_ms']:>15.2f} "
            f"{r['burst_per_s']:>10.0f}"
        )
    out = RESULTS
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"latency-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
