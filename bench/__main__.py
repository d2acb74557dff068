"""Benchmarks of Attune chat-ops, one entry point.

    python -m bench                                  # every scenario, both modes
    python -m bench api e2e --mode embedded          # some scenarios, one mode
    python -m bench --quick                          # small counts: CI smoke test, no timing checks
    python -m bench --repeat 3                       # medians over 3 rounds of each scenario
    python -m bench --code /work/before              # the servers run another checkout's code

Scenarios (default: all; they run in this order):

    api        POST /api/v1/executions/execute core.noop with --connections (50) in flight for
               --duration s (wrk + Lua; aiohttp if wrk is absent): accepted/s, p50, p99,
               non-2xx, and every accepted id checked in the database
    slack      signed slash commands: ack latency one at a time and 50 in flight, beside a bare
               Bolt app that only acks (bench/bare_bolt.py) in the same round (p99 ratio);
               command to result (`run core.echo`) until the thread reply reaches a local
               stand-in of Slack's Web API
    live       an action printing a timestamped line every 200 ms (--live-lines, 50): time from
               a line printed to it visible in the stand-in (the card's live message, or the
               final output) and in GET /api/v1/executions/{id}/logs/stdout/stream, p50 and p90
    e2e        --e2e-count core.noop executions with a callback_url: first submit to last
               callback (completed/s), submit phase rate; none missing, none delivered twice;
               CPU ms per execution of the deployment's processes (and, in cluster mode,
               PostgreSQL's and RabbitMQ's), the load generator's apart (bench/cpu.py)
    shell      --shell-count runs of an inline `#!/bin/sh exit 0` action vs the same script
               forked directly at the deployment's worker slots: completed/s, fork/exec/s, ratio
    workflow   a workflow of --workflow-tasks (100) sequential core.noop tasks, and one task
               over that many items at concurrency 10 (bench/workflow.py): seconds from submit
               to the workflow's callback, and per task; beside the same no-ops submitted one
               after another by the client (each after the last's callback)
    list       its own server over --list-rows executions filled directly in the database:
               first page, ?status=completed, ?action_ref=... p50/p99 (sequential requests,
               after one cold request of each, whose time is reported apart)
    resources  spawn to first 200 from /health (fresh and migrated database); RSS of serve
               (and workers) idle after start-up and peak (VmHWM) after the other scenarios

Modes: ``embedded`` is ``attune serve`` (SQLite, in-process queue and worker); ``cluster`` is
``attune serve --no-worker`` plus 2 ``attune worker`` processes on PostgreSQL 127.0.0.1:5432
(a throwaway database per run, dropped after) and RabbitMQ 127.0.0.1:5672 (its own exchange per
run, deleted after). One server per mode serves every scenario but ``list``, and executions
drain between scenarios.

Every server and worker is a subprocess ``python -m bot.cli`` run with cwd and PYTHONPATH set to
``--code`` (default: this checkout), checked to import ``engine`` from there, so a ``git
worktree`` of another commit is compared in the same way. Prints a table per scenario (median
over ``--repeat`` rounds; ratios are computed inside a round) and writes every metric and
round, with the git revision of ``--code``, to bench/results/run-<timestamp>.json (or --out).
Exits 1 if something functionally broke (an accepted execution missing, a callback missing or
doubled, a server error, a server that died); never for being slow.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.deploy import Deployment
from bench.harness import RESULTS, ROOT, Backend, BenchError, probe_code
from bench.report import summarize, tables, write_json
from bench.suite import DRAIN_TIMEOUT_S, ORDER, SCENARIOS, Config, Context

#: Counts of a full run: about 5 minutes per round of both modes on 2 CPUs.
FULL = {"duration": 10.0, "e2e": 3000, "shell": 500, "slack": 200, "results": 50}
FULL |= {"rows": 1_000_000, "requests": 100, "live": 50, "workflow": 100}
QUICK = {"duration": 2.0, "e2e": 100, "shell": 50, "slack": 20, "results": 5}
QUICK |= {"rows": 20_000, "requests": 20, "live": 10, "workflow": 10}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run_scenario(ctx: Context, name: str) -> dict[str, Any]:
    scenario = SCENARIOS[name]()
    once: dict[str, Any] = {}
    rounds: list[dict[str, Any]] = []
    error: str | None = None
    try:
        once = await scenario.setup(ctx)
        for i in range(ctx.cfg.repeat):
            started = time.perf_counter()
            rounds.append(await scenario.round(ctx))
            log(f"[{ctx.mode}] {name} round {i + 1}/{ctx.cfg.repeat}: "
                f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    try:
        once |= await scenario.teardown(ctx)
    except Exception as exc:
        error = error or f"{type(exc).__name__} at the end: {exc}"
    if error is not None:
        log(f"[{ctx.mode}] {name} FAILED: {error}")
        if ctx.dep is not None and scenario.uses_main:
            try:  # leave the next scenario a quiet server
                await ctx.dep.drain(DRAIN_TIMEOUT_S)
            except Exception as exc:
                log(f"[{ctx.mode}] not drained: {exc}")
        return {"error": error, "rounds": rounds, "once": once}
    return {"summary": summarize(once, rounds), "rounds": rounds, "once": once}


async def run_mode(cfg: Config, mode: str, names: list[str]) -> dict[str, Any]:
    ctx = Context(cfg, mode)
    await ctx.standin.start()
    await ctx.receiver.start()
    results: dict[str, Any] = {}
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100)) as http:
            ctx.http = http
            if any(SCENARIOS[n].uses_main for n in names):
                ctx.backend = await Backend.create(mode, "main")
                started = time.perf_counter()
                try:
                    ctx.dep = await Deployment.start(cfg.code, ctx.backend, ctx.env(ctx.backend))
                    await ctx.dep.note_idle_rss()
                    log(f"[{mode}] up in {time.perf_counter() - started:.1f} s at {ctx.dep.url}")
                except BenchError as exc:
                    log(f"[{mode}] the server did not start: {exc}")
            for name in names:
                if SCENARIOS[name].uses_main and ctx.dep is None:
                    results[name] = {"error": "the main deployment did not start"}
                    continue
                results[name] = await run_scenario(ctx, name)
    finally:
        if ctx.dep is not None:
            results["server_stderr"] = await ctx.dep.stop()
        if ctx.backend is not None:
            await ctx.backend.destroy()
        await ctx.standin.close()
        await ctx.receiver.close()
    return results


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("scenarios", nargs="*", metavar="scenario", help=" ".join(ORDER))
    parser.add_argument("--mode", choices=["embedded", "cluster", "both"], default="both")
    parser.add_argument("--repeat", type=int, default=1, help="rounds per scenario (medians)")
    parser.add_argument("--quick", action="store_true", help="small counts (CI smoke test)")
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout the servers run")
    parser.add_argument("--connections", type=int, default=50, help="in flight (api, slack)")
    parser.add_argument("--duration", type=float, help="api seconds (10; quick 2)")
    parser.add_argument("--e2e-count", type=int, help="e2e executions (3000; quick 100)")
    parser.add_argument("--shell-count", type=int, help="shell executions (500; quick 50)")
    parser.add_argument("--slack-count", type=int, help="commands one at a time (200; quick 20)")
    parser.add_argument("--slack-results", type=int, help="command-to-result samples (50; 5)")
    parser.add_argument("--list-rows", type=int, help="executions in the table (1e6; 20000)")
    parser.add_argument("--list-requests", type=int, help="requests per page kind (100; 20)")
    parser.add_argument("--live-lines", type=int, help="lines the live action prints (50; 10)")
    parser.add_argument("--workflow-tasks", type=int, help="tasks per workflow (100; quick 10)")
    parser.add_argument(
        "--client", choices=["auto", "wrk", "aiohttp"], default="auto", help="api load generator"
    )
    parser.add_argument("--out", type=Path, help="the JSON file (default bench/results/run-*)")
    args = parser.parse_args(argv)
    unknown = [s for s in args.scenarios if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r} (choose from {', '.join(ORDER)})")
    if args.repeat < 1 or args.connections < 1:
        parser.error("--repeat and --connections must be at least 1")
    return args


def build_config(args: argparse.Namespace, worker_slots: int) -> Config:
    d = QUICK if args.quick else FULL

    def pick(value: Any, key: str) -> Any:
        return d[key] if value is None else value

    return Config(
        code=args.code.resolve(),
        quick=args.quick,
        repeat=args.repeat,
        connections=args.connections,
        duration_s=pick(args.duration, "duration"),
        e2e_count=pick(args.e2e_count, "e2e"),
        shell_count=pick(args.shell_count, "shell"),
        slack_count=pick(args.slack_count, "slack"),
        slack_results=pick(args.slack_results, "results"),
        list_rows=pick(args.list_rows, "rows"),
        list_requests=pick(args.list_requests, "requests"),
        live_lines=pick(args.live_lines, "live"),
        worker_slots=worker_slots,
        client=args.client,
        workflow_tasks=pick(args.workflow_tasks, "workflow"),
    )


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "absent"
    return (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else ""


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n for n in ORDER if n in (args.scenarios or ORDER)]
    modes = ["embedded", "cluster"] if args.mode == "both" else [args.mode]
    code = probe_code(args.code.resolve())
    log(f"code under test: {code['code']} at {code['git_rev']}; "
        f"children import engine from {code['engine_file']}")  # fmt: skip
    cfg = build_config(args, code["worker_concurrency"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **code,
        "bench_rev": code["git_rev"] if cfg.code == ROOT else probe_code(ROOT)["git_rev"],
        "modes": modes,
        "scenarios": names,
        "quick": cfg.quick,
        "repeat": cfg.repeat,
        "nproc": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "wrk": tool_version(["wrk", "-v"]),
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
    }
    results: dict[str, Any] = {}
    for mode in modes:
        results[mode] = asyncio.run(run_mode(cfg, mode, names))
    meta["elapsed_s"] = round(time.perf_counter() - started, 1)
    meta["loadavg_at_end"] = os.getloadavg()
    problems = [
        f"{mode}/{name}: {entry['error']}"
        for mode, per in results.items()
        for name, entry in per.items()
        if "error" in entry
    ]
    logged = {
        f"{mode}/{proc}": summary
        for mode, per in results.items()
        for proc, summary in per.get("server_stderr", {}).items()
        if summary["lines"]
    }
    kind = "quick" if cfg.quick else "full"
    print(
        f"Attune bench: code {code['git_rev']} ({cfg.code}), {os.cpu_count()} CPUs, {kind}, "
        f"repeat {cfg.repeat}, {meta['elapsed_s']} s"
    )
    print(tables(results, cfg.repeat))
    path = args.out or RESULTS / f"run-{stamp}.json"
    write_json(path, {"meta": meta, "results": results, "problems": problems})
    print(f"\nwritten {path}")
    for proc, summary in logged.items():
        print(f"note: {proc} wrote {summary['lines']} lines to stderr {summary['levels']}")
    for problem in problems:
        print(f"PROBLEM {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
