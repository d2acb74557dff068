"""Housekeeping that keeps the engine's promises when processes or messages are lost.

Every ``sweep_interval_s``: publish again the ``requested`` executions whose message was lost
(while the broker answers), end ``abandoned`` the runs whose worker has been silent for
``heartbeat_timeout_s``, and abandon at once the runs of dead workers on this host, killing the
process groups they left behind. Workers run it, and so does ``attune serve --no-worker``, so a
cluster whose last worker died still ends that worker's runs.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from engine import procs
from engine.background import cancel_and_wait
from engine.broker import REQUESTED_QUEUE, Broker
from engine.service import ExecutionService

log = logging.getLogger(f"attune.{__name__}")


#: While messages wait in the requested queue, only rows untouched this long are rung again.
QUEUED_CAP_S = 60.0


class Housekeeper:
    def __init__(
        self,
        service: ExecutionService,
        broker: Broker,
        *,
        own_worker_id: str | None,
        sweep_interval_s: float,
        requeue_after_s: float,
        heartbeat_timeout_s: float,
    ) -> None:
        self.service = service
        self.broker = broker
        #: The worker of this process (never judged dead by it), if any.
        self.own_worker_id = own_worker_id
        self.sweep_interval_s = sweep_interval_s
        self.requeue_after_s = requeue_after_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="attune-sweep")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def sweep(self) -> None:
        if await self.broker.ping():
            # While messages still wait in the queue, stale rows are most likely among them
            # (a burst the workers have not caught up with): ringing them all again would
            # only add duplicates (profiled: 500 per sweep per process under an API burst).
            # Then only rows older than QUEUED_CAP_S are rung again, so a lost message waits
            # a minute at most under sustained load.
            older_than_s = self.requeue_after_s
            if await self.broker.backlog(REQUESTED_QUEUE):
                older_than_s = max(older_than_s, QUEUED_CAP_S)
            ids = await self.service.requeue_stale(older_than_s)
            if ids:
                log.info("sweep: published %d stale requested executions again", len(ids))
        rows = await self.service.abandon(stale_for_s=self.heartbeat_timeout_s)
        kill_leftovers(rows)
        await self.recover_local()

    async def recover_local(self) -> list[int]:
        """Abandon the runs of dead workers on this host and kill the processes they left."""
        host = procs.this_host()
        dead = []
        for worker in await self.service.workers_with_runs():
            host_pid = procs.worker_host_pid(worker)
            if (
                host_pid
                and host_pid[0] == host
                and worker != self.own_worker_id
                and not procs.is_alive(host_pid[1])
            ):
                dead.append(worker)
        if not dead:
            return []
        rows = await self.service.abandon(workers=dead)
        kill_leftovers(rows)
        if rows:
            log.warning("abandoned %d runs of dead workers %s", len(rows), ", ".join(dead))
        return [r.id for r in rows]

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep()
            except Exception as exc:
                log.warning("sweep failed: %s", exc)


def kill_leftovers(rows: list[Any]) -> None:
    """Kill the process groups that abandoned runs on this host left behind."""
    host = procs.this_host()
    for row in rows:
        host_pid = procs.worker_host_pid(row.worker or "")
        if (
            row.pid
            and host_pid
            and host_pid[0] == host
            and procs.kill_group_if_same(row.pid, row.pid_start)
        ):
            log.warning("killed process group %s left by execution %s", row.pid, row.id)
