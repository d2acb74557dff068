"""``attune health``: the container health check (issue 12, "Failing to start or stop").

``attune worker`` serves no HTTP, so the image's HTTP health check marked every worker
unhealthy. A real ``attune worker`` is started here and ``attune health --worker`` is run the
way Docker runs it (a separate process, same environment): it passes while the worker lives,
fails once the worker is frozen (SIGSTOP: its loop no longer runs) for longer than the bound,
passes again when it resumes, fails at once when the worker is killed, and fails after a clean
stop. Without ``--worker`` the check asks the API over HTTP, and falls back to the worker check
when nothing listens on the port (a worker's container).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest import AMQP_URL
from tests.e2e.conftest import (
    _WORKER_UP,
    START_TIMEOUT_S,
    Proc,
    Server,
    _fresh_postgres_database,
    _private_exchange,
    engine_env,
    run_cli,
    spawn,
    stop,
    wait_for_line,
)
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

HEARTBEAT_INTERVAL_S = 0.2
#: ``--max-age`` of the checks below: a frozen worker fails the check after this long.
MAX_AGE_S = 1.0
#: Bound on the check changing its answer: the age bound, plus process start-ups on 2 cores.
SETTLE_S = MAX_AGE_S + 10.0
POLL_S = 0.1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _health(env: dict[str, str], tmp: Path, *args: str) -> tuple[int, str]:
    code, out, err = await run_cli(["health", *args], env, tmp)
    assert "Traceback" not in err
    return code, (out + err).strip()


async def _until(env: dict[str, str], tmp: Path, want: int, *args: str) -> tuple[str, float]:
    """Run the check until it exits ``want`` (bounded); return its last line and the time."""
    started = time.monotonic()
    _, said = await eventually(
        lambda: _health(env, tmp, *args),
        f"attune health {' '.join(args)} to exit {want}",
        SETTLE_S,
        interval_s=POLL_S,
        done=lambda answer: answer[0] == want,
    )
    return said, time.monotonic() - started


@contextlib.asynccontextmanager
async def _worker(env: dict[str, str], tmp: Path) -> AsyncIterator[Proc]:
    worker = spawn("worker", ["worker"], env, tmp)
    try:
        await wait_for_line(worker, _WORKER_UP, START_TIMEOUT_S)
        yield worker
    finally:
        if worker.popen.poll() is None:
            os.kill(worker.popen.pid, signal.SIGCONT)
            worker.popen.kill()
            worker.popen.wait(timeout=10)
        worker.close_files()


def _env(tmp: Path, **overrides: str) -> dict[str, str]:
    return engine_env(
        tmp,
        ATTUNE_HEARTBEAT_INTERVAL_S=str(HEARTBEAT_INTERVAL_S),
        ATTUNE_SHUTDOWN_GRACE_S="1",
        # Nothing listens there: the bare `attune health` is a worker container's check.
        ATTUNE_HTTP_PORT=str(_free_port()),
        **overrides,
    )


async def _check_worker_lifecycle(env: dict[str, str], tmp: Path, *, short: bool = False) -> None:
    async with _worker(env, tmp) as worker:
        code, said = await _health(env, tmp, "--worker", "--max-age", str(MAX_AGE_S))
        assert code == 0, said
        assert "alive" in said
        code, said = await _health(env, tmp)  # the image's check: no API here, so the worker
        assert code == 0, said
        if short:
            return

        # Frozen: its loop does not run, so it beats no more and the check fails.
        os.kill(worker.popen.pid, signal.SIGSTOP)
        said, _ = await _until(env, tmp, 1, "--worker", "--max-age", str(MAX_AGE_S))
        assert "stuck" in said
        os.kill(worker.popen.pid, signal.SIGCONT)
        await _until(env, tmp, 0, "--worker", "--max-age", str(MAX_AGE_S))

        # A clean stop: the worker exits 0 and the check fails.
        assert await stop(worker) is None
        code, said = await _health(env, tmp, "--worker")
        assert code == 1, said
        assert "no worker is running" in said

    # Killed: the check fails at once, not only once the bound has passed.
    async with _worker(env, tmp) as worker:
        assert (await _health(env, tmp, "--worker"))[0] == 0
        worker.popen.kill()
        worker.popen.wait(timeout=10)
        code, said = await _health(env, tmp, "--worker")  # default bound: 30 s, not passed
        assert code == 1, said
        assert "is gone" in said
        code, said = await _health(env, tmp)
        assert code == 1, said
        assert "nothing listens on" in said


async def test_worker_health_check_sqlite(tmp_path: Path) -> None:
    env = _env(tmp_path)
    await _check_worker_lifecycle(env, tmp_path)


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_worker_health_check_postgres_rabbitmq(tmp_path: Path) -> None:
    """The compose shape: a worker on PostgreSQL and RabbitMQ passes the check (the faults
    are those of the SQLite test: the check reads only the worker's file)."""
    async with _fresh_postgres_database() as url, _private_exchange() as exchange:
        env = _env(
            tmp_path,
            ATTUNE_DATABASE_URL=url,
            ATTUNE_AMQP_URL=AMQP_URL,
            ATTUNE_AMQP_EXCHANGE=exchange,
            ATTUNE_SECRET_KEY="health-check-test-key-" + "x" * 32,
        )
        await _check_worker_lifecycle(env, tmp_path, short=True)


async def test_health_asks_the_api_over_http(server: Server) -> None:
    port = server.base_url.rsplit(":", 1)[1]
    env = {**server.env, "ATTUNE_HTTP_PORT": port}
    code, said = await _health(env, server.tmp)
    assert code == 0, said
    assert "/health/live answered 200" in said
    code, said = await _health(env, server.tmp, "--http")
    assert code == 0, said

    # --http on a port where nothing listens fails, and does not fall back to a worker.
    code, said = await _health({**env, "ATTUNE_HTTP_PORT": str(_free_port())}, server.tmp, "--http")
    assert code == 1, said
    assert "nothing listens on" in said
