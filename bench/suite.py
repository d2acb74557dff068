"""The scenarios of ``python -m bench``. Each has a setup, rounds (one per ``--repeat``; ratios
are computed inside a round) and a teardown; a round returns its metrics (units in the names).
All of them drive external server processes of the code under test; see bench/__main__.py."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aiohttp

from bench import cpu, listing, workflow
from bench.deploy import CLUSTER_WORKERS, Deployment
from bench.harness import (
    LISTENING,
    ROOT,
    SECRET,
    Backend,
    BenchError,
    Proc,
    Receiver,
    WatchedStandIn,
    clean_env,
    free_port,
    median,
    pct,
    spawn_cli,
    wait_until,
)
from bench.live import measure as measure_live
from bench.loadgen import post_load
from bench.slack import ack_latency, bare_bolt, command_to_result

Metrics = dict[str, Any]
#: Submissions in flight at once from this client (e2e, shell).
IN_FLIGHT = 50
#: Bound on executions draining between scenarios.
DRAIN_TIMEOUT_S = 300.0
#: Bound on a spawned server answering /health.
READY_TIMEOUT_S = 60.0
NOOP = {"action_ref": "core.noop", "parameters": {}}
SCRIPT = "#!/bin/sh\nexit 0\n"


@dataclass
class Config:
    code: Path
    quick: bool
    repeat: int
    connections: int
    duration_s: float
    e2e_count: int
    shell_count: int
    slack_count: int
    slack_results: int
    list_rows: int
    list_requests: int
    #: Lines the ``live`` scenario's action prints (one per 200 ms).
    live_lines: int
    #: Execution slots of one worker (the code under test's default ``worker_concurrency``).
    worker_slots: int
    #: Load generator of ``api``: ``auto`` (wrk when installed), ``wrk`` or ``aiohttp``.
    client: str = "auto"
    #: Tasks of each workflow of the ``workflow`` scenario.
    workflow_tasks: int = 100


@dataclass
class Context:
    """One mode's shared state: its deployment (kept across scenarios) and local endpoints."""

    cfg: Config
    mode: str
    backend: Backend | None = None
    dep: Deployment | None = None
    standin: WatchedStandIn = field(default_factory=WatchedStandIn)
    receiver: Receiver = field(default_factory=Receiver)
    http: aiohttp.ClientSession | None = None

    def env(self, backend: Backend) -> dict[str, str]:
        return backend.env(
            ATTUNE_PACKS_PATH=str(self.cfg.code / "packs"),
            ATTUNE_SLACK_BOT_TOKEN="xoxb-bench",
            ATTUNE_SLACK_SIGNING_SECRET=SECRET,
            ATTUNE_SLACK_API_URL=self.standin.api_url,
            ATTUNE_SLACK_DEFAULT_ROLE="operator",  # its users are random: none is listed
        )

    @property
    def main(self) -> Deployment:
        if self.dep is None:
            raise BenchError("the main deployment is not running")
        return self.dep

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.http is not None
        return self.http

    @property
    def slots(self) -> int:
        """Executions the deployment runs at once."""
        return self.cfg.worker_slots * (CLUSTER_WORKERS if self.mode == "cluster" else 1)


class Scenario:
    name: ClassVar[str]
    title: ClassVar[str]
    #: (metric, label) rows of the table; metrics not listed are in the JSON only.
    rows: ClassVar[list[tuple[str, str]]]
    #: Needs the mode's main deployment.
    uses_main: ClassVar[bool] = True

    async def setup(self, ctx: Context) -> Metrics:
        return {}

    async def round(self, ctx: Context) -> Metrics:
        raise NotImplementedError

    async def teardown(self, ctx: Context) -> Metrics:
        """Metrics measured once at the end (not repeated)."""
        return {}


class Referenced(Scenario):
    """A scenario measured beside a reference server of its own, in the same round: started
    in ``setup`` (:meth:`start_reference`), stopped in ``teardown``."""

    def __init__(self) -> None:
        self.reference: Proc | None = None
        self.reference_url = ""

    async def start_reference(self, proc: Proc) -> None:
        self.reference = proc
        self.reference_url = (await proc.wait_line(LISTENING)).group(1).rstrip("/")

    async def teardown(self, ctx: Context) -> Metrics:
        if self.reference is not None:
            await self.reference.stop()
        return {}


# -- api --------------------------------------------------------------------------------------


class Api(Referenced):
    name = "api"
    title = "API submit: POST /api/v1/executions/execute core.noop, closed loop"
    rows: ClassVar[list[tuple[str, str]]] = [
        ("accepted_per_s", "accepted/s"),
        ("p50_ms", "latency p50 ms"),
        ("p99_ms", "latency p99 ms"),
        ("accepted", "accepted"),
        ("non_2xx", "non-2xx answers"),
        ("missing", "accepted but not in the database"),
        ("client", "client"),
        ("floor_per_s", "floor: bare aiohttp + SQLite insert/s, same load"),
        ("floor_p99_ms", "floor: latency p99 ms"),
        ("floor_ratio", "ratio accepted/s attune/floor"),
    ]

    async def setup(self, ctx: Context) -> Metrics:
        """The floor server (``bench/floor.py``) as the reference."""
        assert ctx.backend is not None
        db = ctx.backend.tmp / "floor.db"
        command = [sys.executable, "-m", "bench.floor", str(db)]
        await self.start_reference(Proc("floor", command, clean_env(), ROOT, ctx.backend.tmp))
        return {}

    async def round(self, ctx: Context) -> Metrics:
        dep = ctx.main
        body = json.dumps(NOOP)
        headers = dep.auth | {"Content-Type": "application/json"}
        # The floor first: Attune's accepted executions keep its worker busy afterwards.
        floor = await post_load(
            f"{self.reference_url}/api/v1/executions/execute",
            body,
            headers,
            ctx.cfg.connections,
            ctx.cfg.duration_s,
            ctx.cfg.client,
        )
        url = f"{dep.url}/api/v1/executions/execute"
        load = await post_load(
            url, body, headers, ctx.cfg.connections, ctx.cfg.duration_s, ctx.cfg.client
        )
        accepted = set(load.ids)
        missing = len(accepted - await dep.backend.existing_ids(sorted(accepted)))
        drain_s = await dep.drain(DRAIN_TIMEOUT_S)
        if missing:
            raise BenchError(f"{missing} accepted executions are not in the database")
        if not accepted:
            raise BenchError(f"no execution accepted; answers {load.statuses}")
        if any(s >= 500 for s in load.statuses):
            raise BenchError(f"server errors: {load.statuses}")
        accepted_per_s = len(accepted) / load.duration_s
        floor_per_s = len(floor.ids) / floor.duration_s
        return {
            "client": load.client,
            "connections": ctx.cfg.connections,
            "duration_s": load.duration_s,
            "accepted": len(accepted),
            "accepted_per_s": accepted_per_s,
            "requests_per_s": load.requests_per_s,
            "p50_ms": load.p50_ms,
            "p99_ms": load.p99_ms,
            "non_2xx": load.non_2xx,
            "socket_errors": load.socket_errors,
            "statuses": {str(k): v for k, v in sorted(load.statuses.items())},
            "missing": missing,
            "drain_s": drain_s,
            "floor_per_s": floor_per_s,
            "floor_p99_ms": floor.p99_ms,
            "floor_ratio": accepted_per_s / floor_per_s,
        }


# -- slack ------------------------------------------------------------------------------------


class Slack(Referenced):
    name = "slack"
    title = (
        "Slack slash commands: ack latency (concurrent: --connections in flight) vs a bare "
        "Bolt app; command to result"
    )
    rows: ClassVar[list[tuple[str, str]]] = [
        ("attune_serial_p50_ms", "attune ack one at a time p50 ms"),
        ("attune_serial_p99_ms", "attune ack one at a time p99 ms"),
        ("attune_concurrent_p50_ms", "attune ack concurrent p50 ms"),
        ("attune_concurrent_p99_ms", "attune ack concurrent p99 ms"),
        ("bare_serial_p50_ms", "bare Bolt ack one at a time p50 ms"),
        ("bare_concurrent_p50_ms", "bare Bolt ack concurrent p50 ms"),
        ("bare_concurrent_p99_ms", "bare Bolt ack concurrent p99 ms"),
        ("concurrent_p99_ratio", "concurrent p99 ratio attune/bare (goal <= 1.3)"),
        ("concurrency", "in flight"),
        ("result_p50_ms", "command to result p50 ms"),
        ("result_p90_ms", "command to result p90 ms"),
    ]

    async def setup(self, ctx: Context) -> Metrics:
        assert ctx.backend is not None
        await self.start_reference(bare_bolt(ctx.standin, ctx.backend.tmp))
        for url in (ctx.main.url, self.reference_url):  # warm up (Bolt's first auth.test, pools)
            await ack_latency(ctx.session, url, ctx.standin, 10, ctx.cfg.connections)
        await ctx.main.drain(DRAIN_TIMEOUT_S)
        return {}

    async def round(self, ctx: Context) -> Metrics:
        dep, n, conc = ctx.main, ctx.cfg.slack_count, ctx.cfg.connections
        # The bare app first: Attune's commands leave executions and Slack posts running
        # after their acks, which would load the machine while the bare app is measured.
        bare = await ack_latency(ctx.session, self.reference_url, ctx.standin, n, conc)
        attune = await ack_latency(ctx.session, dep.url, ctx.standin, n, conc)
        await dep.drain(DRAIN_TIMEOUT_S)
        c2r = await command_to_result(ctx.session, dep.url, ctx.standin, ctx.cfg.slack_results)
        await dep.drain(DRAIN_TIMEOUT_S)
        return {
            "count": n,
            "concurrency": conc,
            **{f"attune_{k}": v for k, v in attune.items()},
            **{f"bare_{k}": v for k, v in bare.items()},
            "concurrent_p99_ratio": attune["concurrent_p99_ms"] / bare["concurrent_p99_ms"],
            "result_p50_ms": median(c2r),
            "result_p90_ms": pct(c2r, 0.9),
        }


# -- live -------------------------------------------------------------------------------------


class Live(Scenario):
    name = "live"
    title = (
        "Live output: a line printed (one per 200 ms) to it visible in Slack (live message) "
        "and in the log stream (SSE)"
    )
    rows: ClassVar[list[tuple[str, str]]] = [
        ("lines", "lines printed"),
        ("slack_p50_ms", "to Slack p50 ms"),
        ("slack_p90_ms", "to Slack p90 ms"),
        ("sse_p50_ms", "to the SSE stream p50 ms"),
        ("sse_p90_ms", "to the SSE stream p90 ms"),
        ("slack_calls", "Slack calls for the run"),
    ]

    async def round(self, ctx: Context) -> Metrics:
        dep = ctx.main
        await dep.drain(DRAIN_TIMEOUT_S)
        metrics = await measure_live(
            ctx.session, dep.url, dep.auth, ctx.standin, ctx.cfg.live_lines
        )
        await dep.drain(DRAIN_TIMEOUT_S)
        return metrics


# -- e2e and shell ----------------------------------------------------------------------------


async def submit_and_wait(
    ctx: Context, body: dict[str, Any], count: int
) -> tuple[float, float, set[int]]:
    """Submit ``count`` executions with a callback URL, ``IN_FLIGHT`` at a time; seconds of the
    submit phase, seconds from the first submit to the last callback, and the ids."""
    dep, receiver = ctx.main, ctx.receiver
    url = f"{dep.url}/api/v1/executions/execute"
    payload = body | {"callback_url": receiver.url}
    ids: set[int] = set()
    refused: list[str] = []
    sem = asyncio.Semaphore(IN_FLIGHT)

    async def one() -> None:
        async with sem, ctx.session.post(url, json=payload, headers=dep.auth) as resp:
            if resp.status != 201:
                refused.append(f"{resp.status} {(await resp.text())[:200]}")
                return
            ids.add(int((await resp.json())["data"]["id"]))

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    submit_s = time.perf_counter() - started
    if refused:
        raise BenchError(f"{len(refused)} of {count} submissions refused, e.g. {refused[0]}")
    await receiver.wait_for(ids, max(60.0, count / 10))
    done_s = time.perf_counter() - started
    await dep.drain(DRAIN_TIMEOUT_S)  # no delivery left that could arrive twice
    twice = sum(1 for i in ids if receiver.counts[i] > 1)
    failed = [i for i in ids if receiver.status.get(i) != "completed"]
    if twice:
        raise BenchError(f"{twice} executions' callbacks delivered more than once")
    if failed:
        raise BenchError(f"{len(failed)} executions did not complete, e.g. #{failed[0]}")
    return submit_s, done_s, ids


class E2e(Scenario):
    name = "e2e"
    title = "End to end core.noop: submit over the API to the callback received"
    rows: ClassVar[list[tuple[str, str]]] = [
        ("completed_per_s", "completed/s (first submit to last callback)"),
        ("submit_per_s", "submit phase/s (50 in flight)"),
        ("cpu_ms_per_execution", "CPU ms per execution (deployment, all processes)"),
        ("cpu_ms_serve", "  of which attune serve"),
        ("cpu_ms_workers", "  of which attune workers"),
        ("cpu_ms_postgresql", "  of which PostgreSQL"),
        ("cpu_ms_rabbitmq", "  of which RabbitMQ"),
        ("cpu_ms_client", "load generator CPU ms per execution (apart)"),
        ("count", "executions"),
        ("callbacks_missing", "callbacks missing"),
    ]

    async def round(self, ctx: Context) -> Metrics:
        n = ctx.cfg.e2e_count
        dep = ctx.main
        services = ctx.mode == "cluster"
        own = [(dep.serve.pid, "serve"), *((w.pid, "worker") for w in dep.workers)]
        before = cpu.snapshot(own, services=services)
        client_before = time.process_time()
        submit_s, done_s, ids = await submit_and_wait(ctx, NOOP, n)
        client_s = time.process_time() - client_before
        spent = cpu.spent_s(before, services=services)
        per_ms = {part: 1000 * s / n for part, s in spent.items()}
        return {
            "count": n,
            "submit_s": submit_s,
            "done_s": done_s,
            "submit_per_s": n / submit_s,
            "completed_per_s": n / done_s,
            "callbacks_missing": n - len(ids & ctx.receiver.counts.keys()),
            "cpu_ms_per_execution": per_ms["total"],
            "cpu_ms_serve": per_ms.get("serve", 0.0),
            "cpu_ms_workers": per_ms.get("worker", 0.0),
            "cpu_ms_postgresql": per_ms.get("postgresql", 0.0),
            "cpu_ms_rabbitmq": per_ms.get("rabbitmq", 0.0),
            "cpu_ms_client": 1000 * client_s / n,
        }


async def spawn_rate(script: Path, count: int, concurrency: int) -> float:
    """Runs per second of ``script`` as the shell runner starts it (same interpreter, pipes,
    new session), ``concurrency`` at a time."""
    interpreter = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            proc = await asyncio.create_subprocess_exec(
                interpreter,
                str(script),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
            await proc.communicate(b"{}")
            if proc.returncode != 0:
                raise BenchError(f"{script} exited {proc.returncode}")

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(count)))
    return count / (time.perf_counter() - started)


class Shell(Scenario):
    name = "shell"
    title = "End to end trivial shell action vs bare fork/exec of the same script"
    rows: ClassVar[list[tuple[str, str]]] = [
        ("completed_per_s", "shell action completed/s"),
        ("fork_exec_per_s", "bare fork/exec/s (same slots)"),
        ("ratio", "ratio action/bare"),
        ("slots", "concurrency (worker slots)"),
        ("count", "executions"),
    ]

    def __init__(self) -> None:
        self.ref = f"bench_{uuid.uuid4().hex[:6]}.true"
        self.script = Path()

    async def setup(self, ctx: Context) -> Metrics:
        assert ctx.backend is not None
        await ctx.main.create_shell_action(ctx.session, self.ref, SCRIPT)
        self.script = ctx.backend.tmp / "true.sh"
        self.script.write_text(SCRIPT)
        return {}

    async def round(self, ctx: Context) -> Metrics:
        n = ctx.cfg.shell_count
        _, done_s, _ = await submit_and_wait(ctx, {"action_ref": self.ref, "parameters": {}}, n)
        bare = await spawn_rate(self.script, n, ctx.slots)
        return {
            "count": n,
            "slots": ctx.slots,
            "done_s": done_s,
            "completed_per_s": n / done_s,
            "fork_exec_per_s": bare,
            "ratio": n / done_s / bare,
        }


# -- list -------------------------------------------------------------------------------------


class List(Scenario):
    name = "list"
    title = "GET /api/v1/executions pages over a large table (own server)"
    uses_main = False
    rows: ClassVar[list[tuple[str, str]]] = [
        ("rows", "executions in the table"),
        ("fill_s", "fill time s"),
        ("unfiltered_p50_ms", "first page p50 ms"),
        ("unfiltered_p99_ms", "first page p99 ms"),
        ("status_p50_ms", "?status=completed p50 ms"),
        ("status_p99_ms", "?status=completed p99 ms"),
        ("action_p50_ms", "?action_ref=<one of 20> p50 ms"),
        ("action_p99_ms", "?action_ref=<one of 20> p99 ms"),
        ("unfiltered_cold_ms", "first page, first request (cold) ms"),
        ("status_cold_ms", "?status=completed, first request (cold) ms"),
    ]

    def __init__(self) -> None:
        self.backend: Backend | None = None
        self.dep: Deployment | None = None

    async def setup(self, ctx: Context) -> Metrics:
        self.backend = backend = await Backend.create(ctx.mode, "list")
        env = ctx.env(backend)
        await listing.migrate(ctx.cfg.code, backend, env)
        fill_s = await listing.fill(backend, ctx.cfg.list_rows)
        self.dep = await Deployment.start(ctx.cfg.code, backend, env, "list", workers_too=False)
        return {"rows": ctx.cfg.list_rows, "fill_s": fill_s}

    async def round(self, ctx: Context) -> Metrics:
        assert self.dep is not None
        out = await listing.page_latencies(self.dep, ctx.session, ctx.cfg.list_requests)
        return {"requests": ctx.cfg.list_requests, **out}

    async def teardown(self, ctx: Context) -> Metrics:
        out: Metrics = {}
        if self.dep is not None:
            out["server_stderr"] = await self.dep.stop()
        if self.backend is not None:
            await self.backend.destroy()
        return out


# -- resources --------------------------------------------------------------------------------


class Resources(Scenario):
    name = "resources"
    title = "Start-up time and memory (peak: at the end of the other scenarios)"
    rows: ClassVar[list[tuple[str, str]]] = [
        ("ready_cold_s", "spawn to /health 200 s, fresh database"),
        ("ready_s", "spawn to /health 200 s, migrated database"),
        ("serve_idle_rss_mb", "serve RSS idle after ready MB"),
        ("serve_peak_rss_mb", "serve peak RSS (VmHWM) MB"),
        ("workers_idle_rss_mb", "each worker RSS idle MB (max)"),
        ("workers_peak_rss_mb", "each worker peak RSS MB (max)"),
    ]

    def __init__(self) -> None:
        self.backend: Backend | None = None

    async def _ready_s(self, ctx: Context) -> float:
        assert self.backend is not None
        port = free_port()
        env = ctx.env(self.backend) | {"ATTUNE_HTTP_PORT": str(port)}
        args = ["serve", "--no-worker"] if ctx.mode == "cluster" else ["serve"]
        proc = spawn_cli("ready-serve", ctx.cfg.code, args, env, self.backend.tmp)
        url = f"http://127.0.0.1:{port}/health"

        async def healthy() -> bool:
            if proc.popen.poll() is not None:
                raise BenchError(f"serve exited during start-up: {proc.describe()}")
            try:
                async with ctx.session.get(url) as resp:
                    return resp.status == 200
            except aiohttp.ClientConnectionError:
                return False

        try:
            await wait_until(healthy, READY_TIMEOUT_S, "/health", interval_s=0.005)
            return time.perf_counter() - proc.started_at
        finally:
            await proc.stop()

    async def setup(self, ctx: Context) -> Metrics:
        self.backend = await Backend.create(ctx.mode, "ready")
        return {"ready_cold_s": await self._ready_s(ctx)}

    async def round(self, ctx: Context) -> Metrics:
        return {"ready_s": await self._ready_s(ctx)}

    async def teardown(self, ctx: Context) -> Metrics:
        if self.backend is not None:
            await self.backend.destroy()
        dep = ctx.main
        dep.check_alive()
        peak = dep.memory_kb("VmHWM")
        idle = dep.idle_rss_kb
        workers = [w.name for w in dep.workers]
        out: Metrics = {
            "idle_rss_kb": idle,
            "peak_rss_kb": peak,
            "serve_idle_rss_mb": idle.get(dep.serve.name, 0) / 1024,
            "serve_peak_rss_mb": peak.get(dep.serve.name, 0) / 1024,
        }
        if workers:
            out["workers_idle_rss_mb"] = max(idle.get(w, 0) for w in workers) / 1024
            out["workers_peak_rss_mb"] = max(peak.get(w, 0) for w in workers) / 1024
        return out


class Workflow(Scenario):
    name = "workflow"
    title = "Workflows of N core.noop tasks: submit to the workflow's callback (bench/workflow.py)"
    rows: ClassVar[list[tuple[str, str]]] = workflow.ROWS

    def __init__(self) -> None:
        self.bench: workflow.WorkflowBench | None = None

    async def setup(self, ctx: Context) -> Metrics:
        dep = ctx.main
        self.bench = workflow.WorkflowBench(
            ctx.session, dep.url, dep.auth, ctx.receiver, ctx.cfg.workflow_tasks
        )
        await self.bench.save()
        return {}

    async def round(self, ctx: Context) -> Metrics:
        assert self.bench is not None
        await ctx.main.drain(DRAIN_TIMEOUT_S)
        metrics = await self.bench.round()
        await ctx.main.drain(DRAIN_TIMEOUT_S)
        return metrics


SCENARIOS: dict[str, type[Scenario]] = {
    s.name: s for s in (Api, Slack, Live, E2e, Shell, Workflow, List, Resources)
}
#: The order they run in: resources last, so peak memory covers the others.
ORDER = ["api", "slack", "live", "e2e", "shell", "workflow", "list", "resources"]

__all__ = ["ORDER", "ROOT", "SCENARIOS", "Config", "Context", "Scenario"]
