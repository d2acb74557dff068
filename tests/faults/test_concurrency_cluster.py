"""Concurrency policies held across processes: PostgreSQL + RabbitMQ, ``attune serve
--no-worker`` and TWO ``attune worker`` processes (the deployment of tests/faults/test_faults.py,
its fast timing knobs included: the oldest waiting run of each group is rung again every 0.5 s,
so it is offered to the workers over and over while the group is full).

An inline shell action writes ``start <id> <time>`` and ``end <id> <time>`` around a sleep
into one file both workers share; from those stamps:

1. ``enqueue``, limit 1 then 2: every run completes; never more than the limit overlap (and
   the limit is reached); with limit 1 the runs start in the order they were submitted.
2. ``cancel``, limit 1: while one run runs, the runs submitted after it end ``cancelled`` with
   Attune's result naming the limit, and never start.
3. ``cancel``, limit 2, six runs submitted at once: exactly two run, four are refused.
4. grouped by the ``host`` parameter, limit 1: runs on two hosts overlap, a second run on the
   same host waits for the first.
5. the worker running the group's only slot is SIGKILLed: its run ends ``abandoned`` (the
   sweep of dead workers), and the run waiting behind it then runs on the other worker: the group
   is not blocked.

The deployment is shared by the module; the kill is last.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import text

from engine.procs import start_ticks
from tests.faults.test_faults import (
    HEARTBEAT_TIMEOUT_S,
    MARGIN_S,
    TERMINAL,
    Deployment,
    deployment,
    get_execution,
    peek,
    sigkill,
    wait_pid_recorded,
    wait_status,
)
from tests.scenario.harness import admin_api
from tests.waiting import eventually

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]

STAMP_SCRIPT = """\
. "$ATTUNE_PARAMETERS_FILE"
printf 'start %s %s\\n' "$ATTUNE_EXECUTION_ID" "$(date +%s.%N)" >> "$path"
sleep "$delay"
printf 'end %s %s\\n' "$ATTUNE_EXECUTION_ID" "$(date +%s.%N)" >> "$path"
"""
RUN_TIMEOUT_S = 30.0


class Cluster:
    def __init__(self, dep: Deployment, api: aiohttp.ClientSession) -> None:
        self.dep = dep
        self.api = api

    async def action(self, policy: dict[str, Any]) -> str:
        ref = f"cc_{uuid.uuid4().hex[:8]}.stamp"
        body = {
            "ref": ref,
            "entrypoint": STAMP_SCRIPT,
            "runtime_ref": "core.shell",
            "parameter_delivery": "file",
            "parameter_format": "dotenv",
            "param_schema": {
                "path": {"type": "string", "required": True},
                "delay": {"type": "number", "default": 0},
                "host": {"type": "string", "default": "a"},
            },
            "timeout_seconds": 120,
            "concurrency": policy,
        }
        async with self.api.post("/api/v1/actions", json=body) as resp:
            assert resp.status == 201, await resp.text()
        return ref

    async def submit(self, ref: str, out: Path, delay: float, host: str = "a") -> int:
        body = {"action_ref": ref, "parameters": {"path": str(out), "delay": delay, "host": host}}
        async with self.api.post("/api/v1/executions/execute", json=body) as resp:
            payload = await resp.json()
            assert resp.status == 201, payload
            return int(payload["data"]["id"])

    async def ended(self, execution_id: int, wanted: str) -> dict[str, Any]:
        return await wait_status(self.api, execution_id, wanted, RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    tmp = tmp_path_factory.mktemp("concurrency-cluster")
    async with deployment(tmp, cluster=True) as dep:
        await dep.serve("--no-worker")
        await dep.worker()
        await dep.worker()
        async with admin_api(dep.base_url) as api:
            yield Cluster(dep, api)


def intervals(path: Path) -> dict[int, tuple[float, float]]:
    starts: dict[int, float] = {}
    ends: dict[int, float] = {}
    for line in path.read_text().splitlines():
        what, execution_id, at = line.split()
        (starts if what == "start" else ends)[int(execution_id)] = float(at)
    return {i: (starts[i], ends.get(i, float("inf"))) for i in starts}


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


@pytest.mark.parametrize("limit", [1, 2])
async def test_enqueue_holds_the_limit_across_two_workers_first_come_first_served(
    cluster: Cluster, tmp_path: Path, limit: int
) -> None:
    ref = await cluster.action({"limit": limit, "method": "enqueue"})
    out = tmp_path / "stamps.txt"
    ids = [await cluster.submit(ref, out, 0.4) for _ in range(6)]
    for execution_id in ids:
        await cluster.ended(execution_id, "completed")
    spans = intervals(out)
    assert sorted(spans) == ids, "each run ran once"
    peak = most_at_once(list(spans.values()))
    async with peek(cluster.dep.env["ATTUNE_DATABASE_URL"]) as db, db.connect() as conn:
        workers = (
            await conn.execute(
                text("SELECT count(DISTINCT worker) FROM executions WHERE id = ANY(:ids)"),
                {"ids": ids},
            )
        ).scalar()
    print(f"\n[concurrency] limit {limit}: at most {peak} of 6 runs at once, on {workers} workers")
    assert peak == limit
    if limit == 1:
        assert sorted(spans, key=lambda i: spans[i][0]) == ids, "first come, first served"


async def test_cancel_refuses_the_runs_over_the_limit(cluster: Cluster, tmp_path: Path) -> None:
    ref = await cluster.action({"limit": 1, "method": "cancel"})
    out = tmp_path / "stamps.txt"
    first = await cluster.submit(ref, out, 2.0)
    await wait_status(cluster.api, first, "running", RUN_TIMEOUT_S)
    refused = [await cluster.submit(ref, out, 0) for _ in range(3)]
    for execution_id in refused:
        record = await cluster.ended(execution_id, "cancelled")
        assert record["result"]["message"] == (
            "Policy violation: Concurrency limit exceeded: 1 running executions (limit: 1)"
        )
        assert record["result"]["error"].startswith("Execution cancelled by policy")
    await cluster.ended(first, "completed")
    assert sorted(intervals(out)) == [first], "the refused runs never started"


async def test_cancel_holds_the_limit_under_a_burst(cluster: Cluster, tmp_path: Path) -> None:
    """Six runs submitted at once, limit 2, two workers claiming: exactly two run."""
    ref = await cluster.action({"limit": 2, "method": "cancel"})
    out = tmp_path / "stamps.txt"
    ids = await asyncio.gather(*(cluster.submit(ref, out, 3.0) for _ in range(6)))
    ends = []
    for execution_id in ids:
        record = await eventually(
            lambda i=execution_id: get_execution(cluster.api, i),
            f"#{execution_id} to end",
            RUN_TIMEOUT_S,
            done=lambda r: r["status"] in TERMINAL,
        )
        ends.append(record["status"])
    assert sorted(ends) == ["cancelled"] * 4 + ["completed"] * 2
    assert most_at_once(list(intervals(out).values())) == 2


async def test_each_host_has_its_own_limit(cluster: Cluster, tmp_path: Path) -> None:
    ref = await cluster.action({"limit": 1, "parameters": ["host"]})
    out = tmp_path / "stamps.txt"
    a1 = await cluster.submit(ref, out, 1.5, host="a")
    b1 = await cluster.submit(ref, out, 1.5, host="b")
    a2 = await cluster.submit(ref, out, 0.1, host="a")
    for execution_id in (a1, b1, a2):
        await cluster.ended(execution_id, "completed")
    spans = intervals(out)
    assert most_at_once([spans[a1], spans[b1]]) == 2, "hosts a and b ran at the same time"
    assert spans[a2][0] >= spans[a1][1], "the second run on host a waited for the first"


async def test_a_worker_killed_mid_run_does_not_block_its_group(
    cluster: Cluster, tmp_path: Path
) -> None:
    dep = cluster.dep
    ref = await cluster.action({"limit": 1})
    out = tmp_path / "stamps.txt"
    stuck = await cluster.submit(ref, out, 60)
    await wait_status(cluster.api, stuck, "running", RUN_TIMEOUT_S)
    waiting = await cluster.submit(ref, out, 0)
    async with peek(dep.env["ATTUNE_DATABASE_URL"]) as db:
        pid = await wait_pid_recorded(db, stuck)
        dep.leftovers[pid] = start_ticks(pid)  # the orphaned sleep: killed at the end
        async with db.connect() as conn:
            worker_id = (
                await conn.execute(
                    text("SELECT worker FROM executions WHERE id = :id"), {"id": stuck}
                )
            ).scalar()
    assert (await get_execution(cluster.api, waiting))["status"] == "requested"
    victim = next(p for p in dep.procs if worker_id.endswith(f":{p.popen.pid}"))
    sigkill(victim)
    killed_at = time.monotonic()
    record = await wait_status(cluster.api, stuck, "abandoned", HEARTBEAT_TIMEOUT_S + MARGIN_S)
    assert "abandoned" in record["result"]["error"]
    await cluster.ended(waiting, "completed")
    print(
        f"\n[concurrency] worker killed: the waiting run completed "
        f"{time.monotonic() - killed_at:.2f} s later"
    )
    assert sorted(intervals(out)) == [stuck, waiting]
