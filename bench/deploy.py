"""One running deployment of the code under test: ``attune serve`` (embedded: SQLite and its
in-process worker) or ``attune serve --no-worker`` plus worker processes (cluster: PostgreSQL
and RabbitMQ), logged in as the admin."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench.harness import (
    LISTENING,
    PASSWORD,
    WORKER_READY,
    Backend,
    BenchError,
    Proc,
    spawn_cli,
    wait_until,
)

#: Worker processes beside ``serve --no-worker`` in cluster mode.
CLUSTER_WORKERS = 2
#: How long the server idles before its resident size is read.
IDLE_S = 1.0


@dataclass
class Deployment:
    backend: Backend
    serve: Proc
    workers: list[Proc]
    url: str
    token: str = ""
    #: VmRSS (kB) of each process after ``IDLE_S`` idle once ready.
    idle_rss_kb: dict[str, int] = field(default_factory=dict)

    @classmethod
    async def start(
        cls,
        code: Path,
        backend: Backend,
        env: dict[str, str],
        label: str = "main",
        workers_too: bool = True,
    ) -> Deployment:
        """``serve`` (cluster: ``serve --no-worker`` and, with ``workers_too``, the workers),
        each waited for up to its ready line, then a login."""
        cluster = backend.mode == "cluster"
        log_dir = backend.tmp
        serve = spawn_cli(
            f"{label}-serve", code, ["serve", "--no-worker"] if cluster else ["serve"], env, log_dir
        )
        workers: list[Proc] = []
        try:
            url = (await serve.wait_line(LISTENING)).group(1).rstrip("/")
            if cluster and workers_too:
                workers = [
                    spawn_cli(f"{label}-worker{i}", code, ["worker"], env, log_dir)
                    for i in range(CLUSTER_WORKERS)
                ]
                await asyncio.gather(*(w.wait_line(WORKER_READY) for w in workers))
            dep = cls(backend, serve, workers, url)
            dep.token = await dep.login()
        except BaseException:
            for proc in (serve, *workers):
                await proc.stop()
            raise
        return dep

    @property
    def procs(self) -> list[Proc]:
        return [self.serve, *self.workers]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def login(self) -> str:
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"{self.url}/auth/login", json={"login": "admin", "password": PASSWORD}
            ) as resp,
        ):
            if resp.status != 200:
                raise BenchError(f"login answered {resp.status}: {await resp.text()}")
            return str((await resp.json())["data"]["access_token"])

    async def note_idle_rss(self) -> None:
        await asyncio.sleep(IDLE_S)  # measuring idleness, not waiting for anything
        self.idle_rss_kb = {p.name: p.status_kb("VmRSS") or 0 for p in self.procs}

    def memory_kb(self, key: str) -> dict[str, int]:
        return {p.name: p.status_kb(key) or 0 for p in self.procs}

    def check_alive(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is not None:
                raise BenchError(f"{proc.name} died: {proc.describe()}")

    async def drain(self, timeout_s: float) -> float:
        """Seconds until no execution is requested, scheduled or running and every chat card
        and callback is delivered (bounded)."""
        self.check_alive()

        async def idle() -> bool:
            return (
                await self.backend.live_executions() == 0
                and await self.backend.pending_deliveries() == 0
            )

        return await wait_until(idle, timeout_s, "executions to drain", interval_s=0.2)

    async def create_shell_action(self, http: aiohttp.ClientSession, ref: str, script: str) -> None:
        body: dict[str, Any] = {"ref": ref, "runtime_ref": "core.shell", "entrypoint": script}
        async with http.post(f"{self.url}/api/v1/actions", headers=self.auth, json=body) as resp:
            if resp.status != 201:
                raise BenchError(f"creating {ref} answered {resp.status}: {await resp.text()}")

    async def stop(self) -> dict[str, Any]:
        """Stop every process; what each wrote to stderr (see :meth:`Proc.log_summary`)."""
        await asyncio.gather(*(p.stop() for p in self.procs))
        return {p.name: p.log_summary() for p in self.procs}
