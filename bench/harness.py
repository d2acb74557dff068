"""What every benchmark shares: the code under test, processes, databases, brokers, a callback
receiver, a Slack stand-in that signals each call, and bounded waits.

Every server or worker is a subprocess ``python -m bot.cli ...`` run from ``code`` (a checkout:
``cwd`` and ``PYTHONPATH`` point there), so two checkouts are compared honestly in one run.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from aiohttp import web

from tests.scenario.slack_standin import Call, SlackStandIn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PG_ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PASSWORD = "bench-admin-password"
SECRET = "bench-signing-secret"
LISTENING = re.compile(r"listening on (http://\S+)")
WORKER_READY = re.compile(r"Attune worker")
#: Bound on a process printing its ready line.
START_TIMEOUT_S = 60.0
#: Bound on a process exiting after SIGTERM before it is killed.
STOP_TIMEOUT_S = 30.0
#: Statuses of executions that have not ended yet.
LIVE = ("requested", "scheduling", "scheduled", "running", "canceling")
TERMINAL = frozenset({"completed", "failed", "cancelled", "timeout", "abandoned"})


class BenchError(Exception):
    """Something functionally broke (not merely slow): the run exits non-zero."""


# -- numbers ----------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN when there are no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered))))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


async def wait_until(
    check: Callable[[], Awaitable[bool]], timeout_s: float, what: str, interval_s: float = 0.05
) -> float:
    """Poll ``check`` until true; the seconds it took. BenchError after ``timeout_s``."""
    started = time.perf_counter()
    while not await check():
        if time.perf_counter() - started > timeout_s:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval_s)
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the code under test ----------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """This process's environment without settings that could leak into a child."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ATTUNE_", "SLACK_")) and k not in {"PYTHONPATH", "CI"}
    }


def code_env(code: Path, env: dict[str, str]) -> dict[str, str]:
    return {**env, "PYTHONPATH": str(code)}


def probe_code(code: Path) -> dict[str, Any]:
    """Where a child run from ``code`` imports ``engine`` from, its default worker slots, and
    the git revision of ``code``. BenchError when the child would import another copy."""
    probe = (
        "import engine, config; print(engine.__file__); print(config.Settings().worker_concurrency)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env=code_env(code, clean_env()),
        cwd=code,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    engine_file = Path(out[0]).resolve()
    if not engine_file.is_relative_to(code.resolve()):
        raise BenchError(f"a child run from {code} imports engine from {engine_file}")
    return {
        "code": str(code),
        "engine_file": str(engine_file),
        "worker_concurrency": int(out[1]),
        "git_rev": git_rev(code),
    }


def git_rev(path: Path) -> str:
    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30
            )
        except OSError:
            return ""
        return out.stdout.strip()

    rev = git("rev-parse", "--short=12", "HEAD") or "unknown"
    return rev + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")


# -- processes --------------------------------------------------------------------------------


class Proc:
    """A child process; stdout is read line by line (last lines kept), stderr goes to a file."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_dir: Path
    ) -> None:
        self.name = name
        self.log = log_dir / f"{name}.stderr"
        self.tail: collections.deque[str] = collections.deque(maxlen=50)
        self.started_at = time.perf_counter()
        with self.log.open("wb") as err:
            self.popen = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        self._lines: collections.deque[str] = collections.deque()
        self._new = threading.Condition()
        self._eof = False
        threading.Thread(target=self._pump, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _pump(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.tail.append(line)
            with self._new:
                self._lines.append(line)
                self._new.notify_all()
        with self._new:
            self._eof = True
            self._new.notify_all()

    def _wait_line(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        with self._new:
            while True:
                while self._lines:
                    if match := pattern.search(self._lines.popleft()):
                        return match
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._new.wait(left)
        raise BenchError(f"{self.name} did not print /{pattern.pattern}/: {self.describe()}")

    async def wait_line(
        self, pattern: re.Pattern[str], timeout_s: float = START_TIMEOUT_S
    ) -> re.Match[str]:
        return await asyncio.to_thread(self._wait_line, pattern, timeout_s)

    def describe(self) -> str:
        err = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        return (
            f"exit {self.popen.poll()}; stdout tail: {''.join(self.tail)[-1000:]!r}; "
            f"stderr tail ({self.log}): {err!r}"
        )

    def log_summary(self, keep: int = 40) -> dict[str, Any]:
        """What the process wrote to stderr (servers log WARNING and up in the benchmarks):
        line counts, records by level, and the first ``keep`` lines."""
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        levels = collections.Counter(
            m.group(1) for line in lines if (m := re.search(r"\b(WARNING|ERROR|CRITICAL)\b", line))
        )
        return {
            "lines": len(lines),
            "levels": dict(levels),
            "head": [x[:300] for x in lines[:keep]],
        }

    def status_kb(self, key: str) -> int | None:
        """``VmRSS``, ``VmHWM``, ... of the process from /proc, in kB (None once it ended)."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
        return int(match.group(1)) if match else None

    async def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                await asyncio.to_thread(self.popen.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                await asyncio.to_thread(self.popen.wait, STOP_TIMEOUT_S)


def spawn_cli(name: str, code: Path, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    """``python -m bot.cli <args>`` run from the checkout ``code``."""
    return Proc(name, [sys.executable, "-m", "bot.cli", *args], code_env(code, env), code, log_dir)


# -- databases and brokers --------------------------------------------------------------------


async def pg_admin(sql: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def delete_exchange(exchange: str, queues: Sequence[str] = ("requested",)) -> None:
    """Delete a run's shared queues (``<exchange>.<name>``) and its exchange."""
    import aio_pika

    conn = await aio_pika.connect(AMQP_URL)
    try:
        for name in queues:
            async with conn.channel() as channel:
                await channel.queue_delete(f"{exchange}.{name}")
        async with conn.channel() as channel:
            await channel.exchange_delete(exchange)
    finally:
        await conn.close()


@dataclass
class Backend:
    """A throwaway database (and, in cluster mode, exchange) with its own data dir."""

    mode: str
    tmp: Path
    db_name: str | None = None
    exchange: str | None = None
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(48))

    @classmethod
    async def create(cls, mode: str, label: str) -> Backend:
        tmp = Path(tempfile.mkdtemp(prefix=f"attune-bench-{label}-"))
        if mode == "embedded":
            return cls(mode, tmp)
        tag = uuid.uuid4().hex[:8]
        backend = cls(mode, tmp, f"attune_bench_{tag}", f"attune.bench.{tag}")
        await pg_admin(f'CREATE DATABASE "{backend.db_name}"')
        return backend

    @property
    def sqlite_path(self) -> Path:
        return self.tmp / "attune.db"

    @property
    def pg_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:5432/{self.db_name}"

    def env(self, **extra: str) -> dict[str, str]:
        env = clean_env() | {
            "ATTUNE_HTTP_HOST": "127.0.0.1",
            "ATTUNE_HTTP_PORT": "0",
            "ATTUNE_DATA_DIR": str(self.tmp / "data"),
            "ATTUNE_ADMIN_PASSWORD": PASSWORD,
            "ATTUNE_SECRET_KEY": self.secret_key,
            "ATTUNE_LOG_LEVEL": "WARNING",
            # Callbacks go to the bench's receiver on loopback.
            "ATTUNE_OUTBOUND_ALLOW": '["127.0.0.0/8", "::1/128"]',
        }
        if self.mode == "embedded":
            env["ATTUNE_DATABASE_URL"] = f"sqlite+aiosqlite:///{self.sqlite_path}"
        else:
            assert self.db_name is not None
            assert self.exchange is not None
            env |= {
                "ATTUNE_DATABASE_URL": PG_URL.format(name=self.db_name),
                "ATTUNE_AMQP_URL": AMQP_URL,
                "ATTUNE_AMQP_EXCHANGE": self.exchange,
            }
        return env | extra

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (no parameters; the same SQL on both databases)."""
        if self.mode == "embedded":

            def read() -> list[tuple[Any, ...]]:
                uri = f"file:{self.sqlite_path}?mode=ro"
                with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=30)) as db:
                    return list(db.execute(sql).fetchall())

            return await asyncio.to_thread(read)
        conn = await asyncpg.connect(self.pg_dsn)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def live_executions(self) -> int:
        statuses = ", ".join(f"'{s}'" for s in LIVE)
        sql = f"SELECT count(*) FROM executions WHERE status IN ({statuses})"  # noqa: S608
        rows = await self.fetch(sql)
        return int(rows[0][0])

    async def pending_deliveries(self) -> int:
        """Chat cards and callbacks not yet delivered (or given up)."""
        rows = await self.fetch(
            "SELECT count(*) FROM deliveries WHERE state IN ('pending', 'sending')"
        )
        return int(rows[0][0])

    async def existing_ids(self, ids: Sequence[int]) -> set[int]:
        if not ids:
            return set()
        first = int(min(ids))
        rows = await self.fetch(f"SELECT id FROM executions WHERE id >= {first}")  # noqa: S608
        return {int(r[0]) for r in rows}

    async def destroy(self) -> None:
        if self.db_name:
            await pg_admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if self.exchange:
            await delete_exchange(self.exchange)
        await asyncio.to_thread(shutil.rmtree, self.tmp, ignore_errors=True)


# -- local receivers --------------------------------------------------------------------------


class Receiver:
    """Counts callback deliveries per execution id (and remembers each one's status)."""

    def __init__(self) -> None:
        self.counts: collections.Counter[int] = collections.Counter()
        self.status: dict[int, str] = {}
        self.last_at = 0.0
        self.runner: web.AppRunner | None = None
        self.url = ""
        self._arrived = asyncio.Event()

    async def start(self) -> Receiver:
        async def hook(request: web.Request) -> web.Response:
            body = await request.json()
            eid = int(body["id"])
            self.counts[eid] += 1
            self.status[eid] = str(body.get("status"))
            self.last_at = time.perf_counter()
            self._arrived.set()
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", hook)
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def wait_for(self, ids: set[int], timeout_s: float) -> None:
        """Until every id in ``ids`` has had a delivery. BenchError after ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                while not ids <= self.counts.keys():
                    self._arrived.clear()
                    await self._arrived.wait()
        except TimeoutError:
            missing = len(ids - self.counts.keys())
            raise BenchError(
                f"{missing} of {len(ids)} callbacks missing after {timeout_s:.0f} s"
            ) from None

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


class WatchedStandIn(SlackStandIn):
    """The Slack stand-in, plus a wait for a call matching a predicate (no polling)."""

    def __init__(self) -> None:
        super().__init__()
        self._waiters: list[tuple[Callable[[Call], bool], asyncio.Future[float]]] = []

    async def _record(self, request: web.Request, method: str) -> Call:
        call = await super()._record(request, method)
        now = time.perf_counter()
        for waiter in list(self._waiters):
            predicate, fut = waiter
            if not fut.done() and predicate(call):
                fut.set_result(now)
                self._waiters.remove(waiter)
        return call

    async def wait_for(self, predicate: Callable[[Call], bool], timeout_s: float) -> float:
        """``perf_counter()`` when a matching call arrived (at once if one already has)."""
        if any(predicate(c) for c in self.calls):
            return time.perf_counter()
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, fut))
        try:
            return await asyncio.wait_for(fut, timeout_s)
        except TimeoutError:
            raise BenchError(f"no matching Slack call within {timeout_s:.0f} s") from None
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove((predicate, fut))

    async def settled(self, quiet_s: float = 0.5, limit_s: float = 120.0) -> None:
        """Until no call has arrived for ``quiet_s`` (earlier work delivered)."""
        async with asyncio.timeout(limit_s):
            while True:
                seen = len(self.calls)
                await asyncio.sleep(quiet_s)
                if len(self.calls) == seen:
                    return
