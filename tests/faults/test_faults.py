"""Fault injection: real processes, real faults, what an operator would see.

Every test starts real ``attune`` processes (the helpers of :mod:`tests.e2e.conftest`), injects
one fault for real and checks the outcome through the API, the files the actions write and the
process table. The timing knobs are small (heartbeat 0.2 s, heartbeat timeout 1.5 s, sweep
0.2 s, requeue after 0.5 s, database poll 0.2 s, kill grace 0.5 s) so each test takes seconds;
every wait polls against a hard deadline. The PostgreSQL tests each use a fresh database and a
private RabbitMQ exchange, both removed afterwards.

1. **Worker SIGKILLed mid-run** (PostgreSQL + RabbitMQ; ``serve --no-worker`` + one worker).
   An inline shell action records its PID and a ``sleep 300`` child, then sleeps; the worker
   gets SIGKILL and a new worker is started on the same host: the run ends ``abandoned``
   within the heartbeat timeout plus a margin (time printed), ``result.error`` says why, and
   the orphaned script and its child are killed (gone or zombies).
   1b. Same crash, no replacement worker: the run must still end ``abandoned`` within the
   heartbeat timeout plus a margin (``serve --no-worker`` runs the housekeeping too).
2. **All-in-one ``attune serve`` SIGKILLed** (SQLite, in-process broker, one run at a time) and
   started again on the same database and data dir: the run it was executing ends
   ``abandoned`` right after the restart (well before the heartbeat timeout, which is set to
   30 s here), its processes are killed, and the 5 executions it had accepted but not started
   each run exactly once (an append-to-file action: every id once in the file).
3. **RabbitMQ stopped during a burst** (``rabbitmqctl stop_app``; ``serve --no-worker`` + two
   workers; 150 executions of an append-to-file action, each with a ``callback_url`` to a local
   receiver that counts deliveries): every submission is accepted (201) while the broker is
   down; work submitted during the outage runs during the outage (workers claim from the
   database); after ``start_app`` every execution is ``completed``, each id is in the file
   once and each callback arrived once. Prints lost/duplicated counts and the time to drain
   after the broker returned. RabbitMQ is always started again (``finally``).
   3b. Same, but the broker goes while runs it delivered are executing and submissions keep
   coming during ``stop_app``: runs in flight are the worker's own tasks, so they finish and
   nothing is abandoned or lost.
4. **SIGTERM to a worker with a run longer than the grace** (``ATTUNE_SHUTDOWN_GRACE_S=1``):
   the worker exits 0 within grace + margin; the long run ends ``abandoned`` and its process
   group is gone; a short run started before the SIGTERM completes normally.
5. **API process SIGKILLed mid-burst** (``serve --no-worker`` + one worker; 8 submissions in
   flight) and started again: every execution that got a 201 ends ``completed`` (none lost),
   none ran twice, and rows committed without their 201 reaching the client also ran once.
6. **Slack's Web API failing** (500s, then 429s with ``Retry-After``; about 4 s) while 10
   executions started from slash commands (one channel each) run: once Slack recovers, each
   execution's card, its update(s) and its thread reply are delivered exactly once, in order
   (card, updates, "completed" last, then the reply), and every delivery row is ``delivered``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from engine.procs import start_ticks
from tests.conftest import AMQP_URL, IN_CI, require_service
from tests.e2e.conftest import (
    _LISTENING,
    _WORKER_UP,
    START_TIMEOUT_S,
    Proc,
    _fresh_postgres_database,
    _private_exchange,
    client,
    engine_env,
    spawn,
    stop,
    wait_for_line,
)
from tests.scenario.harness import (
    admin_api,
    login,
    new_channel,
    scenario_env,
    settle,
    slash,
    start_server,
    stop_server,
)
from tests.scenario.slack_standin import Call, Canned, SlackStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


HEARTBEAT_INTERVAL_S = 0.2
HEARTBEAT_TIMEOUT_S = 1.5
SWEEP_INTERVAL_S = 0.2
REQUEUE_AFTER_S = 0.5
DB_POLL_INTERVAL_S = 0.2
KILL_GRACE_S = 0.5
SHUTDOWN_GRACE_S = 1.0
#: The knobs every test runs with (small, so faults are detected within seconds).
FAST_KNOBS = {
    "ATTUNE_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
    "ATTUNE_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
    "ATTUNE_SWEEP_INTERVAL_S": str(SWEEP_INTERVAL_S),
    "ATTUNE_REQUEUE_AFTER_S": str(REQUEUE_AFTER_S),
    "ATTUNE_DB_POLL_INTERVAL_S": str(DB_POLL_INTERVAL_S),
    "ATTUNE_KILL_GRACE_S": str(KILL_GRACE_S),
    "ATTUNE_SHUTDOWN_GRACE_S": str(SHUTDOWN_GRACE_S),
}
#: Slack for detection on top of a configured time (process start-up, poll intervals).
MARGIN_S = 2.5
#: Bound on working off a backlog after a fault.
DRAIN_TIMEOUT_S = 30.0
POLL_S = 0.05
TERMINAL = {"completed", "failed", "cancelled", "timeout", "abandoned"}


# -- processes --------------------------------------------------------------------------------


def proc_gone(pid: int) -> bool:
    """The process no longer runs: it does not exist, or it is a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2 :].split()[0] == "Z"


async def wait_gone(pids: list[int], what: str, timeout_s: float) -> float:
    """Wait until every pid is gone; return how long it took."""
    started = time.monotonic()

    async def probe() -> bool:
        return all(proc_gone(p) for p in pids)

    await eventually(probe, f"{what} (pids {pids}) to be gone", timeout_s, interval_s=POLL_S)
    return time.monotonic() - started


def kill_if_same(pid: int, ticks: int | None) -> None:
    """Last-resort cleanup of a process (and the group it leads) that a test left behind, only
    if it is still the same process (same start time): never a reused pid."""
    if ticks is None or start_ticks(pid) != ticks:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def sigkill(proc: Proc) -> None:
    """SIGKILL one engine process (not its action processes, which are in their own
    sessions) and reap it."""
    proc.popen.send_signal(signal.SIGKILL)
    proc.popen.wait(timeout=10)
    proc.close_files()


@dataclass
class Deployment:
    """Engine processes of one test, sharing one environment; stopped at the end."""

    tmp: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)
    base_url: str = ""
    #: Processes started by actions (pid -> start time), killed at the end whatever happened.
    leftovers: dict[int, int | None] = field(default_factory=dict)
    _names: Counter[str] = field(default_factory=Counter)

    def _name(self, role: str) -> str:
        self._names[role] += 1
        return f"{role}-{self._names[role]}"

    async def serve(self, *args: str) -> Proc:
        proc = spawn(self._name("serve"), ["serve", *args], self.env, self.tmp)
        self.procs.append(proc)
        match = await wait_for_line(proc, _LISTENING, START_TIMEOUT_S)
        self.base_url = match.group(1).rstrip("/")
        return proc

    async def worker(self) -> Proc:
        proc = spawn(self._name("worker"), ["worker"], self.env, self.tmp)
        self.procs.append(proc)
        await wait_for_line(proc, _WORKER_UP, START_TIMEOUT_S)
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} stderr (tail):\n{p.stderr()[-3000:]}" for p in self.procs)

    async def shutdown(self) -> list[str]:
        """SIGTERM whatever still runs (bounded); return the problems (no clean exit 0)."""
        problems = []
        for proc in self.procs:
            if proc.popen.poll() is None:
                problem = await stop(proc)
                if problem:
                    problems.append(problem)
            else:
                proc.close_files()
        for pid, ticks in self.leftovers.items():
            kill_if_same(pid, ticks)
        return problems


@contextlib.asynccontextmanager
async def deployment(tmp: Path, *, cluster: bool, **overrides: str) -> AsyncIterator[Deployment]:
    """An environment for engine processes: SQLite and the in-process broker, or (``cluster``)
    a fresh PostgreSQL database and a private RabbitMQ exchange. Fails the test if a process
    does not stop cleanly at the end."""
    async with contextlib.AsyncExitStack() as stack:
        backend: dict[str, str] = {}
        if cluster:
            backend["ATTUNE_DATABASE_URL"] = await stack.enter_async_context(
                _fresh_postgres_database()
            )
            backend["ATTUNE_AMQP_URL"] = AMQP_URL
            backend["ATTUNE_AMQP_EXCHANGE"] = await stack.enter_async_context(_private_exchange())
        env = engine_env(tmp, **{**FAST_KNOBS, **backend, **overrides})
        dep = Deployment(tmp=tmp, env=env)
        try:
            yield dep
        finally:
            problems = await dep.shutdown()
        if problems:
            pytest.fail("; ".join(problems) + "\n" + dep.logs(), pytrace=False)


# -- the database, read directly ----------------------------------------------------------------


@contextlib.asynccontextmanager
async def peek(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A read-only look at the engine's database, for facts the API does not show (the
    process group recorded on a run)."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        yield engine
    finally:
        await engine.dispose()


async def wait_pid_recorded(db: AsyncEngine, execution_id: int, timeout_s: float = 5.0) -> int:
    """Wait until the worker has stored the run's process group on the row (what a successor
    needs to kill it): only then is a crash of the worker a fair test of the cleanup."""

    async def probe() -> int | None:
        async with db.connect() as conn:
            return (
                await conn.execute(
                    text("SELECT pid FROM executions WHERE id = :id"), {"id": execution_id}
                )
            ).scalar()

    return await eventually(
        probe, f"the process group of #{execution_id} to be recorded", timeout_s, interval_s=POLL_S
    )


# -- actions and the API ------------------------------------------------------------------------


def long_script(folder: Path) -> str:
    """Records ``<script pid> <child pid>`` in ``folder/procs-<id>`` (atomically), then
    sleeps with a ``sleep 300`` child in the background."""
    return (
        f'd="{folder}"\n'
        "sleep 300 &\n"
        "child=$!\n"
        'f="$d/procs-$ATTUNE_EXECUTION_ID"\n'
        'printf "%s %s\\n" "$$" "$child" > "$f.tmp"\n'
        'mv "$f.tmp" "$f"\n'
        "sleep 300\n"
    )


def append_script(path: Path, delay_s: float = 0.0) -> str:
    """Appends the execution id to ``path`` (one short O_APPEND write: atomic)."""
    pause = f"sleep {delay_s}\n" if delay_s else ""
    return f'{pause}echo "$ATTUNE_EXECUTION_ID" >> "{path}"\necho appended\n'


async def create_action(api: aiohttp.ClientSession, name: str, script: str) -> str:
    ref = f"faults_{uuid.uuid4().hex[:8]}.{name}"
    body = {"ref": ref, "entrypoint": script, "runtime_ref": "core.shell", "timeout_seconds": 120}
    async with api.post("/api/v1/actions", json=body) as resp:
        assert resp.status == 201, await resp.text()
    return ref


async def submit(
    api: aiohttp.ClientSession, ref: str, callback_url: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"action_ref": ref}
    if callback_url:
        body["callback_url"] = callback_url
    async with api.post("/api/v1/executions/execute", json=body) as resp:
        payload = await resp.json()
        assert resp.status == 201, payload
        return dict(payload["data"])


async def get_execution(api: aiohttp.ClientSession, execution_id: int) -> dict[str, Any]:
    async with api.get(f"/api/v1/executions/{execution_id}") as resp:
        payload = await resp.json()
        assert resp.status == 200, payload
        return dict(payload["data"])


async def wait_status(
    api: aiohttp.ClientSession, execution_id: int, wanted: str, timeout_s: float
) -> dict[str, Any]:
    """Poll until the execution is ``wanted``; fail early on another terminal status."""

    async def probe() -> dict[str, Any]:
        record = await get_execution(api, execution_id)
        if record["status"] != wanted and record["status"] in TERMINAL:
            pytest.fail(f"#{execution_id} ended {record['status']}, not {wanted}: {record}")
        return record

    return await eventually(
        probe,
        f"#{execution_id} to be {wanted}",
        timeout_s,
        interval_s=POLL_S,
        done=lambda r: r["status"] == wanted,
    )


async def all_executions(api: aiohttp.ClientSession) -> dict[int, dict[str, Any]]:
    """Every execution on the server, by id."""
    found: dict[int, dict[str, Any]] = {}
    page = 1
    while True:
        async with api.get(f"/api/v1/executions?per_page=100&page={page}") as resp:
            payload = await resp.json()
            assert resp.status == 200, payload
        for record in payload["items"]:
            found[record["id"]] = record
        if page >= payload["pagination"]["total_pages"]:
            return found
        page += 1


async def running_procs(
    dep: Deployment, folder: Path, execution_id: int, timeout_s: float = 10.0
) -> list[int]:
    """The (script, child) pids the long action recorded; remembered for the cleanup."""
    path = folder / f"procs-{execution_id}"

    async def probe() -> bool:
        return path.exists()

    await eventually(probe, f"#{execution_id} to record its pids", timeout_s, interval_s=POLL_S)
    pids = [int(x) for x in path.read_text().split()]
    for pid in pids:
        dep.leftovers[pid] = start_ticks(pid)
    return pids


def appended(path: Path) -> Counter[int]:
    """How many times each execution id was appended to ``path``."""
    if not path.exists():
        return Counter()
    return Counter(int(line) for line in path.read_text().split())


def dupes(counts: Counter[int]) -> dict[int, int]:
    return {k: n for k, n in counts.items() if n > 1}


# -- 1. a worker SIGKILLed mid-run --------------------------------------------------------------


@dataclass
class KilledRun:
    execution_id: int
    pids: list[int]
    killed_at: float


async def _start_long_run_and_kill_worker(
    dep: Deployment, api: aiohttp.ClientSession, worker: Proc
) -> KilledRun:
    folder = dep.tmp / "pids"
    folder.mkdir()
    ref = await create_action(api, "long", long_script(folder))
    execution_id = (await submit(api, ref))["id"]
    await wait_status(api, execution_id, "running", 10)
    pids = await running_procs(dep, folder, execution_id)
    async with peek(dep.env["ATTUNE_DATABASE_URL"]) as db:
        assert await wait_pid_recorded(db, execution_id) == pids[0]
    sigkill(worker)
    killed_at = time.monotonic()
    assert not any(proc_gone(p) for p in pids), "the action should outlive its worker"
    return KilledRun(execution_id, pids, killed_at)


async def _wait_abandoned(
    api: aiohttp.ClientSession, run: KilledRun, timeout_s: float
) -> tuple[dict[str, Any], float]:
    record = await wait_status(api, run.execution_id, "abandoned", timeout_s)
    return record, time.monotonic() - run.killed_at


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_worker_sigkilled_mid_run_is_abandoned_and_its_processes_are_killed(
    tmp_path: Path,
) -> None:
    async with deployment(tmp_path, cluster=True) as dep:
        await dep.serve("--no-worker")
        first = await dep.worker()
        async with admin_api(dep.base_url) as api:
            run = await _start_long_run_and_kill_worker(dep, api, first)
            # The dead worker's host restarts it (systemd would): the new worker finds the dead
            # predecessor's run, ends it and kills what it left.
            await dep.worker()
            record, took = await _wait_abandoned(api, run, HEARTBEAT_TIMEOUT_S + MARGIN_S)
            print(f"\n[fault 1] worker SIGKILL -> #{run.execution_id} abandoned in {took:.2f} s")
            error = record["result"]["error"]
            assert re.search(r"abandon|heartbeat", error), error
            assert record["finished_at"] is not None
            gone_in = await wait_gone(run.pids, "the orphaned script and its child", 5)
            print(f"[fault 1] orphaned processes gone {gone_in:.2f} s after the abandonment")
            # Nothing else happened to the row afterwards.
            assert (await get_execution(api, run.execution_id))["status"] == "abandoned"


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_run_of_the_last_worker_is_abandoned_after_the_heartbeat_timeout(
    tmp_path: Path,
) -> None:
    async with deployment(tmp_path, cluster=True) as dep:
        await dep.serve("--no-worker")
        only = await dep.worker()
        async with admin_api(dep.base_url) as api:
            run = await _start_long_run_and_kill_worker(dep, api, only)
            _record, took = await _wait_abandoned(api, run, HEARTBEAT_TIMEOUT_S + MARGIN_S)
            print(f"\n[fault 1b] no worker left: #{run.execution_id} abandoned in {took:.2f} s")


# -- 2. all-in-one serve SIGKILLed and restarted ------------------------------------------------


async def test_all_in_one_serve_sigkilled_and_restarted(tmp_path: Path) -> None:
    # A long heartbeat timeout: a prompt abandonment can only come from crash recovery.
    hb_timeout_s = 30.0
    async with deployment(
        tmp_path,
        cluster=False,
        ATTUNE_WORKER_CONCURRENCY="1",
        ATTUNE_HEARTBEAT_TIMEOUT_S=str(hb_timeout_s),
    ) as dep:
        serve = await dep.serve()
        folder = tmp_path / "pids"
        folder.mkdir()
        out = tmp_path / "appended.txt"
        async with admin_api(dep.base_url) as api:
            long_ref = await create_action(api, "long", long_script(folder))
            append_ref = await create_action(api, "append", append_script(out))
            long_id = (await submit(api, long_ref))["id"]
            await wait_status(api, long_id, "running", 10)
            pids = await running_procs(dep, folder, long_id)
            waiting = [(await submit(api, append_ref))["id"] for _ in range(5)]
            for execution_id in waiting:
                assert (await get_execution(api, execution_id))["status"] == "requested"
        async with peek(dep.env["ATTUNE_DATABASE_URL"]) as db:
            assert await wait_pid_recorded(db, long_id) == pids[0]

        sigkill(serve)
        assert not appended(out), "nothing waiting may have run before the crash"
        assert not any(proc_gone(p) for p in pids)

        restarted_at = time.monotonic()
        await dep.serve()
        async with admin_api(dep.base_url) as api:
            record = await wait_status(api, long_id, "abandoned", 5)
            took = time.monotonic() - restarted_at
            print(f"\n[fault 2] #{long_id} abandoned {took:.2f} s after the restart began")
            assert took < hb_timeout_s / 3, "abandoned by the heartbeat reaper, not recovery"
            assert re.search(r"abandon|heartbeat", record["result"]["error"]), record
            await wait_gone(pids, "the killed run's script and child", 5)

            async def all_ran() -> bool:
                return set(appended(out)) >= set(waiting)

            await eventually(
                all_ran, "the waiting executions to run after the restart", 10, interval_s=POLL_S
            )
            for execution_id in waiting:
                await wait_status(api, execution_id, "completed", 5)
            counts = appended(out)
            print(f"[fault 2] waiting executions run counts: {dict(counts)}")
            assert set(counts) == set(waiting), counts
            assert not dupes(counts), f"ran more than once: {dupes(counts)}"


# -- 3. RabbitMQ stopped during a burst ---------------------------------------------------------


async def rabbitmqctl(*args: str, timeout_s: float = 60.0) -> None:
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"rabbitmqctl {' '.join(args)} did not finish within {timeout_s} s")
    assert proc.returncode == 0, f"rabbitmqctl {' '.join(args)}: {out.decode(errors='replace')}"


async def rabbit_answers() -> bool:
    import aio_pika

    try:
        connection = await aio_pika.connect(AMQP_URL, timeout=2)
    except Exception:
        return False
    await connection.close()
    return True


async def wait_rabbit_answers(timeout_s: float = 60.0) -> None:
    await eventually(rabbit_answers, "RabbitMQ to answer again", timeout_s, interval_s=0.2)


@contextlib.asynccontextmanager
async def rabbit_restored() -> AsyncIterator[None]:
    """Whatever happens inside, RabbitMQ is running (and answering) afterwards."""
    try:
        yield
    finally:
        if not await rabbit_answers():
            await rabbitmqctl("start_app")
            await wait_rabbit_answers()


@dataclass
class Receiver:
    """A callback_url receiver: counts deliveries per execution id (de-duplicates nothing)."""

    counts: Counter[int] = field(default_factory=Counter)
    delivery_ids: Counter[str] = field(default_factory=Counter)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.counts[int(body["id"])] += 1
        self.delivery_ids[request.headers.get("X-Attune-Delivery", "")] += 1
        return web.Response(text="ok")

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/callback", self._hook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/callback"
        return self

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = await Receiver().start()
    try:
        yield rec
    finally:
        await rec.close()


async def submit_batches(
    api: aiohttp.ClientSession, ref: str, total: int, callback_url: str, batch: int = 5
) -> list[int]:
    """Submit ``total`` executions, ``batch`` at a time concurrently; every one must get 201."""
    ids: list[int] = []
    for start in range(0, total, batch):
        n = min(batch, total - start)
        records = await asyncio.gather(*(submit(api, ref, callback_url) for _ in range(n)))
        ids.extend(r["id"] for r in records)
    return ids


async def _broker_outage_burst(tmp_path: Path, *, label: str, in_flight: bool) -> None:
    """150 executions with callbacks around a RabbitMQ outage (see the module docstring).

    ``in_flight``: the broker stops while runs it delivered are executing (5 slow ones are
    running for sure) and submissions keep coming during ``stop_app``; otherwise the first
    phase is worked off before the stop, so only runs taken from the database are in flight.
    """
    require_service("RabbitMQ", "127.0.0.1", 5672)
    if shutil.which("rabbitmqctl") is None:
        message = "rabbitmqctl is needed to stop and start RabbitMQ"
        if IN_CI:
            pytest.fail(f"{message}; CI requires it", pytrace=False)
        pytest.skip(message)
    per_phase = 50
    out = tmp_path / "appended.txt"
    async with (
        rabbit_restored(),
        deployment(tmp_path, cluster=True) as dep,
        receiver() as rec,
    ):
        await dep.serve("--no-worker")
        await dep.worker()
        await dep.worker()
        async with admin_api(dep.base_url) as api:
            ref = await create_action(api, "append", append_script(out, delay_s=0.3))
            # Slow enough to be still running when `stop_app` has closed the connections.
            slow_ref = await create_action(api, "slow_append", append_script(out, delay_s=6))
            async with rabbit_restored():
                before = await submit_batches(api, ref, per_phase, rec.url)
                while_stopping: list[int] = []
                if in_flight:
                    slow = await submit_batches(api, slow_ref, 5, rec.url)
                    for execution_id in slow:
                        await wait_status(api, execution_id, "running", 10)
                    before += slow
                else:

                    async def first_phase_done() -> bool:
                        records = await all_executions(api)
                        return all(records[i]["status"] in TERMINAL for i in before)

                    # Recorded, not just run: no run the broker delivered is in flight.
                    await eventually(first_phase_done, "the first phase to end", 10, interval_s=0.1)

                stop_began = time.monotonic()
                stop_app = asyncio.create_task(rabbitmqctl("stop_app"))
                try:
                    if in_flight:  # submissions keep coming while RabbitMQ goes away
                        while_stopping = await submit_batches(api, ref, per_phase // 2, rec.url)
                finally:
                    await stop_app
                assert not await rabbit_answers(), "RabbitMQ still answers after stop_app"
                down_at = time.monotonic()
                ran_before_down = set(appended(out))
                print(f"\n[{label}] rabbitmqctl stop_app took {down_at - stop_began:.2f} s")

                while_down = await submit_batches(
                    api, ref, per_phase - len(while_stopping), rec.url
                )
                accepted_down_s = time.monotonic() - down_at

                async def ran_while_down() -> int:
                    return len(set(appended(out)) & set(while_down))

                # Workers take work straight from the database while the broker is away: these
                # rows were written after it went, so no message announced them.
                await eventually(
                    ran_while_down, "work submitted during the outage to run", 10, interval_s=POLL_S
                )
                first_ran_s = time.monotonic() - down_at
                ran_down = set(appended(out)) - ran_before_down
                print(
                    f"[{label}] {len(while_down)} accepted (201) with the broker down in "
                    f"{accepted_down_s:.2f} s; the first of them ran {first_ran_s:.2f} s into "
                    f"the outage; {len(ran_down)} executions completed during the outage"
                )

                start_began = time.monotonic()
                start_app = asyncio.create_task(rabbitmqctl("start_app"))
                try:
                    # Continuous: keep submitting while RabbitMQ comes back.
                    after = await submit_batches(api, ref, per_phase, rec.url)
                finally:
                    await start_app
                await wait_rabbit_answers()
                back_at = time.monotonic()

            ids = before + while_stopping + while_down + after
            assert len(set(ids)) == len(ids) >= 3 * per_phase

            def drained() -> bool:
                # A callback is posted once an execution has ended (after its append, if any).
                return set(rec.counts) >= set(ids)

            # Wait (bounded) for the backlog; what is missing at the deadline is shown below.
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while not drained() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            drain_s = time.monotonic() - back_at
            since_start_s = time.monotonic() - start_began
            records = await all_executions(api)
            counts = appended(out)
            lost = [i for i in ids if counts[i] == 0]
            ran_twice = dupes(counts)
            cb_lost = [i for i in ids if rec.counts[i] == 0]
            cb_twice = dupes(rec.counts)
            statuses = Counter(records[i]["status"] for i in ids)
            print(
                f"[{label}] {len(ids)} executions ({dict(statuses)}): lost {len(lost)}, ran "
                f"twice {len(ran_twice)}; callbacks lost {len(cb_lost)}, delivered twice "
                f"{len(cb_twice)}; "
                + (
                    f"drained {drain_s:.2f} s after RabbitMQ answered again "
                    f"({since_start_s:.2f} s after `start_app` was issued, "
                    f"{back_at - start_began:.2f} s of which until it answered)"
                    if drained()
                    else f"NOT drained {drain_s:.1f} s after RabbitMQ answered again"
                )
            )
            stuck = {i: (records[i]["status"], records[i]["result"]) for i in lost + cb_lost}
            assert not lost, f"never ran: {lost}: {stuck}"
            assert statuses == {"completed": len(ids)}, statuses
            assert not ran_twice, f"ran more than once: {ran_twice}"
            assert not cb_lost, f"no callback: {cb_lost}: {stuck}"
            assert not cb_twice, f"callback delivered more than once: {cb_twice}"
            assert set(counts) == set(ids), set(counts) - set(ids)
            assert set(rec.counts) == set(ids)
            assert not dupes(rec.delivery_ids)


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_rabbitmq_stopped_during_a_burst(tmp_path: Path) -> None:
    """The outage hits between runs: accepted while down, run from the database, once each."""
    await _broker_outage_burst(tmp_path, label="fault 3", in_flight=False)


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_rabbitmq_stopped_while_runs_are_in_flight(tmp_path: Path) -> None:
    """The outage hits runs in progress and submissions keep coming during ``stop_app``."""
    await _broker_outage_burst(tmp_path, label="fault 3b", in_flight=True)


# -- 4. SIGTERM to a worker with a run longer than the grace -------------------------------------


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_sigterm_worker_with_a_run_longer_than_the_grace(tmp_path: Path) -> None:
    async with deployment(tmp_path, cluster=True) as dep:
        await dep.serve("--no-worker")
        worker = await dep.worker()
        folder = tmp_path / "pids"
        folder.mkdir()
        async with admin_api(dep.base_url) as api:
            long_ref = await create_action(api, "long", long_script(folder))
            short_ref = await create_action(api, "short", "sleep 0.5\necho short-done\n")
            long_id = (await submit(api, long_ref))["id"]
            await wait_status(api, long_id, "running", 10)
            pids = await running_procs(dep, folder, long_id)
            short_id = (await submit(api, short_ref))["id"]
            await wait_status(api, short_id, "running", 5)

            worker.popen.send_signal(signal.SIGTERM)
            termed_at = time.monotonic()
            bound_s = SHUTDOWN_GRACE_S + MARGIN_S
            while worker.popen.poll() is None and time.monotonic() - termed_at < 15:
                await asyncio.sleep(POLL_S)
            exit_s = time.monotonic() - termed_at
            code = worker.popen.poll()
            print(f"\n[fault 4] worker exited {code} {exit_s:.2f} s after SIGTERM")
            assert code == 0, f"worker exit code {code}\n{worker.stderr()[-3000:]}"
            assert exit_s <= bound_s, f"worker took {exit_s:.2f} s (> {bound_s} s) to exit"

            short = await get_execution(api, short_id)
            assert short["status"] == "completed", short
            assert "short-done" in short["result"]["stdout"]
            long = await get_execution(api, long_id)
            assert long["status"] == "abandoned", long
            assert long["result"]["error"], long
            await wait_gone(pids, "the long run's process group", 2)


# -- 5. the API process SIGKILLed mid-burst ------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_api_process_sigkilled_mid_burst(tmp_path: Path) -> None:
    out = tmp_path / "appended.txt"
    async with deployment(tmp_path, cluster=True) as dep:
        serve = await dep.serve("--no-worker")
        await dep.worker()
        accepted: list[int] = []
        failed = 0
        async with admin_api(dep.base_url) as api:
            ref = await create_action(api, "append", append_script(out))
            token = await login(dep.base_url)

            async def one(session: aiohttp.ClientSession) -> None:
                nonlocal failed
                try:
                    async with session.post(
                        "/api/v1/executions/execute", json={"action_ref": ref}
                    ) as resp:
                        if resp.status == 201:
                            accepted.append((await resp.json())["data"]["id"])
                        else:
                            failed += 1
                except (aiohttp.ClientError, TimeoutError):
                    failed += 1

            async def burst(
                session: aiohttp.ClientSession, count: int, halt: asyncio.Event | None = None
            ) -> None:
                """Up to ``count`` submissions, 8 in flight at a time; stop once ``halt``."""
                tasks: set[asyncio.Task[None]] = set()
                for _ in range(count):
                    if halt is not None and halt.is_set():
                        break
                    if len(tasks) >= 8:
                        _done, tasks = await asyncio.wait(
                            tasks, return_when=asyncio.FIRST_COMPLETED
                        )
                    tasks.add(asyncio.create_task(one(session)))
                await asyncio.gather(*tasks)

            killed = asyncio.Event()

            async def killer() -> None:
                async def enough() -> bool:
                    return len(accepted) >= 30

                await eventually(enough, "30 accepted submissions", 20, interval_s=0.005)
                sigkill(serve)
                killed.set()

            async with client(dep.base_url, token) as session:
                kill_task = asyncio.create_task(killer())
                await burst(session, 1000, killed)
                await kill_task
        first_accepted = len(accepted)
        print(
            f"\n[fault 5] API SIGKILLed: {first_accepted} submissions got 201 before, "
            f"{failed} failed (connection lost)"
        )
        await dep.serve("--no-worker")
        async with admin_api(dep.base_url) as api:
            async with client(dep.base_url, await login(dep.base_url)) as session:
                await burst(session, 20)
            assert len(accepted) > first_accepted, "submissions after the restart failed"

            async def all_done() -> bool:
                records = await all_executions(api)
                return all(records.get(i, {}).get("status") in TERMINAL for i in accepted) and all(
                    r["status"] in TERMINAL for r in records.values()
                )

            await eventually(all_done, "every execution to end", 20, interval_s=0.2)
            records = await all_executions(api)
            counts = appended(out)
            lost = [i for i in accepted if records[i]["status"] != "completed" or not counts[i]]
            extra = [i for i in records if i not in accepted]
            print(
                f"[fault 5] {len(accepted)} accepted in total: lost {len(lost)}, ran twice "
                f"{len(dupes(counts))}; {len(extra)} more rows committed without a 201 "
                f"({Counter(records[i]['status'] for i in extra)})"
            )
            assert not lost, [records[i] for i in lost]
            assert not dupes(counts), dupes(counts)
            # Rows committed whose 201 never arrived also ran, once.
            assert set(counts) == set(records), set(records) ^ set(counts)
            assert all(r["status"] == "completed" for r in records.values())


# -- 6. Slack's API failing, then recovering -----------------------------------------------------


def _mentions(call: Call, execution_id: int) -> bool:
    return re.search(rf"#{execution_id}\b", call.all_text()) is not None


def _check_card_flow(standin: SlackStandIn, channel: str, execution_id: int) -> tuple[int, int]:
    """One card, its updates, one thread reply, in that order. Returns (updates, failed
    calls)."""
    posts = standin.find("chat.postMessage", target=channel, ok=True)
    cards = [c for c in posts if not c.params.get("thread_ts")]
    assert len(cards) == 1, f"#{execution_id}: {len(cards)} cards: {[c.params for c in cards]}"
    card = cards[0]
    assert _mentions(card, execution_id), card.all_text()
    ts = card.response["ts"]  # type: ignore[index]
    ups = standin.find("chat.update", target=channel, ok=True)
    assert all(u.params["ts"] == ts and u.at > card.at for u in ups)
    versions = [card, *ups]  # a card posted in its final state is not edited
    assert "completed" in versions[-1].all_text(), versions[-1].all_text()
    finished = [i for i, u in enumerate(versions) if "completed" in u.all_text()]
    later_running = [u for u in versions[finished[0] :] if "running" in u.all_text()]
    assert not later_running, f"#{execution_id}: the card went back to running"
    replies = [c for c in posts if c.params.get("thread_ts")]
    assert len(replies) == 1, f"#{execution_id}: {len(replies)} thread replies"
    assert replies[0].params["thread_ts"] == ts
    assert replies[0].at > versions[-1].at, "the output came before the card said it finished"
    assert f"output of {execution_id}" in replies[0].all_text(), replies[0].all_text()
    failed = standin.find("chat.*", target=channel, ok=False)
    return len(ups), len(failed)


@contextlib.contextmanager
def scripted(standin: SlackStandIn, method: str, canned: Canned) -> Iterator[None]:
    fault = standin.always(method, canned)
    try:
        yield
    finally:
        standin.remove(fault)


async def test_slack_api_outage_while_executions_run(tmp_path: Path) -> None:
    standin = await SlackStandIn().start()
    try:
        env = scenario_env(tmp_path, standin, **FAST_KNOBS)
        srv = await start_server("serve", env, tmp_path)
        try:
            async with admin_api(srv.base_url) as api:
                ref = await create_action(
                    api, "slow", 'sleep 1\necho "output of $ATTUNE_EXECUTION_ID"\n'
                )
                channels = [new_channel() for _ in range(10)]
                outage_began = time.monotonic()
                with scripted(standin, "chat.*", Canned.server_error()):
                    results = await asyncio.gather(
                        *(slash(srv.base_url, standin, f"run {ref}", channel=c) for c in channels)
                    )
                    assert all(r.status == 200 for r in results), [r.body for r in results]
                    ids = [r.execution_id for r in results]

                    async def some_failed() -> bool:
                        return bool(standin.find("chat.*", ok=False))

                    await eventually(some_failed, "Slack calls to fail", 5, interval_s=POLL_S)
                    await asyncio.sleep(2.0)  # the outage itself: 500s for a while
                with scripted(standin, "chat.*", Canned.rate_limited(1)):
                    await asyncio.sleep(2.0)  # then 429s with Retry-After
                outage_s = time.monotonic() - outage_began
                assert not standin.find("chat.*", ok=True), "Slack was down the whole time"

                async def finished() -> bool:
                    records = [await get_execution(api, i) for i in ids]
                    return all(r["status"] == "completed" for r in records)

                await eventually(finished, "the 10 executions to complete", 10, interval_s=POLL_S)
                recovered_at = time.monotonic()
                for execution_id in ids:
                    _record, rows = await settle(api, execution_id, timeout_s=30)
                    assert all(r["state"] == "delivered" for r in rows), rows
                settle_s = time.monotonic() - recovered_at
                failures = Counter(c.status for c in standin.find("chat.*", ok=False))
                assert failures[500], f"no 500 was served: {failures}"
                assert failures[429], f"no 429 was served: {failures}"
                n_updates = []
                for channel, execution_id in zip(channels, ids, strict=True):
                    ups, _failed = _check_card_flow(standin, channel, execution_id)
                    n_updates.append(ups)
                print(
                    f"\n[fault 6] Slack down {outage_s:.1f} s ({dict(failures)} failed calls); "
                    f"all cards, updates ({sum(n_updates)}) and replies delivered once "
                    f"{settle_s:.1f} s after the runs ended"
                )
        finally:
            await stop_server(srv)
    finally:
        await standin.close()
