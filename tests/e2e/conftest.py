"""End-to-end fixtures: one real ``attune serve`` subprocess per backend per test session.

The ``server`` fixture is parametrized over two backends:

``sqlite``
    the embedded default: a SQLite file and the in-process broker, all in one process.
``postgres``
    the cluster shape: a fresh PostgreSQL database and a private RabbitMQ exchange, with one
    ``attune serve`` and one separate ``attune worker`` sharing them.

The server is started with ``ATTUNE_HTTP_PORT=0`` and its real URL is read from the
"listening on" line it prints. Every process's stdout and stderr go to files in the session's
temporary folder, so tests can inspect the logs (e.g. that a secret never reached them) and a
failing start-up is reported with what the server said. At the end each process gets SIGTERM and
must exit 0 within a bounded time: a clean shutdown is part of the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import aiohttp
import pytest
from sqlalchemy.engine import make_url

from tests.conftest import AMQP_URL, POSTGRES_URL, require_service
from tests.waiting import eventually

REPO = Path(__file__).resolve().parents[2]
PACKS_PATH = REPO / "packs"
TEST_PACK = REPO / "tests" / "fixtures" / "packs" / "test_pack"
ADMIN_LOGIN = "admin"
ADMIN_PASSWORD = "e2e-admin-password-5f3a"
#: Body size limit the server runs with (``ATTUNE_MAX_BODY_BYTES``).
MAX_BODY_BYTES = 65536
#: Pack archive size limit the server runs with (``ATTUNE_PACK_UPLOAD_MAX_BYTES``).
MAX_UPLOAD_BYTES = 262144
#: Bound on start-up: the "listening on" line must appear within this time.
START_TIMEOUT_S = 20.0
#: Bound on shutdown after SIGTERM before the process is killed (and the test fails).
STOP_TIMEOUT_S = 15.0
#: Poll interval of every wait in this package.
POLL_S = 0.05
#: Bound on a CLI subprocess (``attune token create``, ``attune run``).
CLI_TIMEOUT_S = 30.0

_LISTENING = re.compile(r"listening on (http://\S+)")
_WORKER_UP = re.compile(r"Attune worker (\S+) running")


@dataclass
class Proc:
    """A started engine process whose output goes to two files."""

    name: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    _files: list[TextIO] = field(default_factory=list)

    def stdout(self) -> str:
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def close_files(self) -> None:
        for fh in self._files:
            fh.close()


@dataclass
class Server:
    """What tests know about the running service."""

    backend: str
    base_url: str
    env: dict[str, str]
    tmp: Path
    serve: Proc
    worker: Proc | None = None

    @property
    def procs(self) -> list[Proc]:
        return [p for p in (self.serve, self.worker) if p is not None]

    def logs(self) -> str:
        """Everything every engine process has written so far (stdout and stderr)."""
        return "\n".join(p.stdout() + "\n" + p.stderr() for p in self.procs)


#: ``ATTUNE_OUTBOUND_ALLOW`` of the test servers: loopback, where the tests' receivers listen.
LOOPBACK_ALLOW = '["127.0.0.0/8", "::1/128"]'


def _clean_env() -> dict[str, str]:
    """The test process's environment without settings that could leak into the server."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ATTUNE_", "SLACK_")) and k not in {"CI"}
    }


def engine_env(tmp: Path, **overrides: str) -> dict[str, str]:
    env = _clean_env()
    env.update(
        {
            "ATTUNE_HTTP_HOST": "127.0.0.1",
            "ATTUNE_HTTP_PORT": "0",
            "ATTUNE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'attune.db'}",
            "ATTUNE_PACKS_PATH": str(PACKS_PATH),
            "ATTUNE_ADMIN_LOGIN": ADMIN_LOGIN,
            "ATTUNE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "ATTUNE_DATA_DIR": str(tmp / "data"),
            "ATTUNE_KILL_GRACE_S": "1",
            "ATTUNE_LOG_FORMAT": "json",
            "ATTUNE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
            "ATTUNE_PACK_UPLOAD_MAX_BYTES": str(MAX_UPLOAD_BYTES),
            # Callbacks and core.http_request reach the test's own servers on loopback.
            "ATTUNE_OUTBOUND_ALLOW": LOOPBACK_ALLOW,
        }
    )
    env.update(overrides)
    return env


def spawn(name: str, args: list[str], env: dict[str, str], tmp: Path) -> Proc:
    out_path, err_path = tmp / f"{name}.stdout", tmp / f"{name}.stderr"
    out = out_path.open("w", encoding="utf-8")
    err = err_path.open("w", encoding="utf-8")
    popen = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        start_new_session=True,  # a Ctrl-C in pytest must not signal it behind our back
    )
    return Proc(name, popen, out_path, err_path, [out, err])


async def wait_for_line(proc: Proc, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
    """Poll the process's stdout for ``pattern``; fail with its stderr if it does not come."""

    def output() -> str:
        return f"stdout:\n{proc.stdout()}\nstderr:\n{proc.stderr()}"

    def probe() -> re.Match[str] | None:
        match = pattern.search(proc.stdout())
        if match is None and proc.popen.poll() is not None:
            pytest.fail(
                f"{proc.name} exited with {proc.popen.returncode} before it was up\n{output()}",
                pytrace=False,
            )
        return match

    return await eventually(
        probe, f"{proc.name} to come up", timeout_s, interval_s=POLL_S, explain=output
    )


async def stop(proc: Proc, *, signalled: bool = False) -> str | None:
    """SIGTERM (unless ``signalled`` already), wait (bounded), kill if needed.

    Returns a problem description (no clean exit 0 in time), or None.
    """
    problem = None
    try:
        if proc.popen.poll() is not None and not signalled:
            return f"{proc.name} had already exited with {proc.popen.returncode}"
        if not signalled:
            proc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while proc.popen.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(POLL_S)
        if proc.popen.poll() is None:
            proc.popen.kill()
            proc.popen.wait(timeout=5)
            return f"{proc.name} did not stop within {STOP_TIMEOUT_S} s of SIGTERM; killed"
        if proc.popen.returncode != 0:
            problem = f"{proc.name} exited with {proc.popen.returncode} after SIGTERM"
    finally:
        proc.close_files()
    return problem


# -- backends ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _fresh_postgres_database() -> AsyncIterator[str]:
    """Create ``attune_e2e_<random>`` for this session and drop it afterwards."""
    import asyncpg

    url = make_url(POSTGRES_URL)
    require_service("PostgreSQL", url.host or "127.0.0.1", url.port or 5432)
    name = f"attune_e2e_{uuid.uuid4().hex[:12]}"
    admin_dsn = url.set(drivername="postgresql", database="postgres").render_as_string(
        hide_password=False
    )
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        conn = await asyncpg.connect(admin_dsn, timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@contextlib.asynccontextmanager
async def _private_exchange() -> AsyncIterator[str]:
    """A unique exchange name; its shared queue and the exchange are deleted afterwards."""
    import aio_pika

    from engine.broker import REQUESTED_QUEUE
    from engine.broker.amqp import AmqpBroker
    from engine.workflows.advancer import TASK_ENDED_QUEUE

    amqp = urlsplit(AMQP_URL)
    require_service("RabbitMQ", amqp.hostname or "127.0.0.1", amqp.port or 5672)
    exchange = f"attune.test.{uuid.uuid4().hex[:10]}"
    try:
        yield exchange
    finally:
        # AmqpBroker.delete_topology() deletes only the queues *that instance* declared, so the
        # engine processes' shared queues (workers', workflow advancers') are deleted by name.
        connection = await aio_pika.connect(AMQP_URL, timeout=10)
        try:
            async with connection.channel() as channel:
                for queue in (REQUESTED_QUEUE, TASK_ENDED_QUEUE):
                    await channel.queue_delete(f"{exchange}.{queue}")
        finally:
            await connection.close()
        broker = AmqpBroker(AMQP_URL, exchange)
        await broker.start()
        try:
            await broker.delete_topology()
        finally:
            await broker.close()


BACKENDS = [
    "sqlite",
    pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.rabbitmq]),
]


@pytest.fixture(scope="session", params=BACKENDS)
async def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    backend: str = request.param
    tmp = tmp_path_factory.mktemp(f"e2e-{backend}")
    async with contextlib.AsyncExitStack() as stack:
        overrides: dict[str, str] = {}
        if backend == "postgres":
            overrides["ATTUNE_DATABASE_URL"] = await stack.enter_async_context(
                _fresh_postgres_database()
            )
            overrides["ATTUNE_AMQP_URL"] = AMQP_URL
            overrides["ATTUNE_AMQP_EXCHANGE"] = await stack.enter_async_context(_private_exchange())
        env = engine_env(tmp, **overrides)
        serve = spawn("serve", ["serve"], env, tmp)
        srv = Server(backend=backend, base_url="", env=env, tmp=tmp, serve=serve)
        try:
            match = await wait_for_line(serve, _LISTENING, START_TIMEOUT_S)
            srv.base_url = match.group(1).rstrip("/")
            if backend == "postgres":
                # Started after serve is up: serve has migrated the database and written the
                # secret key into the shared data folder, which the worker then reads.
                srv.worker = spawn("worker", ["worker"], env, tmp)
                await wait_for_line(srv.worker, _WORKER_UP, START_TIMEOUT_S)
            yield srv
        finally:
            problems = [p for p in [await stop(proc) for proc in srv.procs] if p]
        if problems:
            details = "\n".join(
                f"--- {p.name} stderr (tail):\n{p.stderr()[-4000:]}" for p in srv.procs
            )
            pytest.fail("; ".join(problems) + "\n" + details, pytrace=False)


# -- clients ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_url(server: Server) -> str:
    return server.base_url


@pytest.fixture(scope="session")
async def admin_token(server: Server) -> str:
    async with (
        aiohttp.ClientSession(base_url=server.base_url) as session,
        session.post(
            "/auth/login", json={"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD}
        ) as resp,
    ):
        body = await resp.json()
        assert resp.status == 200, body
        return str(body["data"]["access_token"])


async def run_cli(
    args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = CLI_TIMEOUT_S
) -> tuple[int, str, str]:
    """Run ``python -m bot.cli ARGS``; return (exit code, stdout, stderr). Bounded."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        *args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail(f"attune {' '.join(args)} did not finish within {timeout_s} s")
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.fixture(scope="session")
async def viewer_token(server: Server) -> str:
    """A viewer-role token made with ``attune token create`` against the same database."""
    code, out, err = await run_cli(
        ["token", "create", "--name", "e2e-viewer", "--role", "viewer"], server.env, server.tmp
    )
    assert code == 0, err
    token = out.strip().splitlines()[-1]
    assert token, out
    return token


def client(base: str, token: str | None = None) -> aiohttp.ClientSession:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return aiohttp.ClientSession(
        base_url=base, headers=headers, timeout=aiohttp.ClientTimeout(total=30)
    )


@pytest.fixture
async def api(base_url: str, admin_token: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session on the server, authenticated as the admin."""
    async with client(base_url, admin_token) as session:
        yield session


@pytest.fixture
async def anon(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session on the server without a token."""
    async with client(base_url) as session:
        yield session


# -- waiting ----------------------------------------------------------------------------------


async def wait_for_status(
    session: aiohttp.ClientSession,
    execution_id: int,
    statuses: Iterable[str] | str,
    timeout_s: float = 10.0,
) -> dict[str, Any]:
    """Poll GET /api/v1/executions/{id} every 50 ms until its status is one of ``statuses``.

    Fails the test at the deadline (showing the last record), or early when the execution
    reached a terminal status that is not wanted.
    """
    wanted = {statuses} if isinstance(statuses, str) else set(statuses)
    terminal = {"completed", "failed", "cancelled", "timeout", "abandoned"}

    async def probe() -> dict[str, Any]:
        async with session.get(f"/api/v1/executions/{execution_id}") as resp:
            body = await resp.json()
            assert resp.status == 200, body
        record: dict[str, Any] = body["data"]
        if record["status"] not in wanted and record["status"] in terminal:
            pytest.fail(
                f"execution {execution_id} ended {record['status']}, expected one of "
                f"{sorted(wanted)}: {record}"
            )
        return record

    return await eventually(
        probe,
        f"execution {execution_id} to be {sorted(wanted)}",
        timeout_s,
        interval_s=POLL_S,
        done=lambda r: r["status"] in wanted,
    )


WaitForStatus = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture(name="wait_for_status")
def wait_for_status_fixture() -> WaitForStatus:
    return wait_for_status


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cluster_only`` (separate worker processes) do not exist on SQLite."""
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        embedded = callspec is not None and callspec.params.get("server") == "sqlite"
        (dropped if embedded and item.get_closest_marker("cluster_only") else keep).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
