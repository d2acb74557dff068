"""``python -m bench workflow``: what a workflow costs per task.

Three runs of ``--workflow-tasks`` (100) ``core.noop`` tasks, each timed from its submission
over the API to its callback (the workflow's end):

- ``sequential``: a workflow whose tasks run one after another (``task_i`` -> ``task_i+1``);
- ``with_items``: one task over that many items, ``concurrency: 10``;
- ``client chain`` (the reference): the same no-ops submitted one after another by this
  client, each after the previous one's callback: what a caller pays without a workflow.

Every round checks that each workflow completed with one task run per task (``?parent=``).
The workflows are saved once, in a pack of their own (:meth:`WorkflowBench.save`); the
scenario (``bench/suite.py``) runs :meth:`WorkflowBench.round` once per ``--repeat``.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import aiohttp

from bench.harness import BenchError, Receiver

#: Items run at once by the ``with_items`` workflow.
ITEMS_CONCURRENCY = 10
#: Bound on one workflow run, per task (a hang fails the round, slowness never does).
TASK_BOUND_S = 2.0


def sequential_tasks(count: int) -> list[dict[str, Any]]:
    """``count`` no-op tasks, each leading to the next."""
    tasks: list[dict[str, Any]] = []
    for i in range(count):
        task: dict[str, Any] = {"name": f"t{i:03d}", "action": "core.noop"}
        if i + 1 < count:
            task["on_success"] = f"t{i + 1:03d}"
        tasks.append(task)
    return tasks


def items_tasks(count: int, concurrency: int = ITEMS_CONCURRENCY) -> list[dict[str, Any]]:
    """One no-op task over ``count`` items, ``concurrency`` at a time."""
    return [
        {
            "name": "each",
            "action": "core.noop",
            "with_items": f"{{{{ range({count}) | list }}}}",
            "concurrency": concurrency,
        }
    ]


#: The reference's action.
NOOP = {"action_ref": "core.noop", "parameters": {}}
#: (metric, label) rows of the scenario's table.
ROWS: list[tuple[str, str]] = [
    ("tasks", "tasks per workflow"),
    ("sequential_s", "sequential workflow, s"),
    ("sequential_ms_per_task", "  ms per task"),
    ("items_s", f"with_items (concurrency {ITEMS_CONCURRENCY}), s"),
    ("items_ms_per_task", "  ms per task"),
    ("chain_s", "reference: client submits each no-op after the last ends, s"),
    ("chain_ms_per_task", "  ms per task"),
    ("sequential_vs_chain", "sequential workflow / client chain"),
]


class WorkflowBench:
    """The runs against one server (``url``, ``auth`` headers); callbacks to ``receiver``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        auth: dict[str, str],
        receiver: Receiver,
        tasks: int,
    ) -> None:
        self.session = session
        self.url = url
        self.auth = auth
        self.receiver = receiver
        self.tasks = tasks
        self.refs: dict[str, str] = {}

    async def save(self) -> None:
        """The two workflows, in a new pack."""
        pack = f"benchwf{uuid.uuid4().hex[:6]}"
        await self._post("/api/v1/packs", {"ref": pack, "label": "bench workflows"})
        n = self.tasks
        for kind, tasks in (("sequential", sequential_tasks(n)), ("items", items_tasks(n))):
            ref = f"{pack}.{kind}"
            body = {
                "ref": ref,
                "pack_ref": pack,
                "label": f"bench {kind}",
                "version": "1.0.0",
                "definition": {"tasks": tasks},
            }
            await self._post("/api/v1/workflows", body)
            self.refs[kind] = ref

    async def round(self) -> dict[str, Any]:
        n = self.tasks
        out: dict[str, Any] = {"tasks": n}
        for kind in ("sequential", "items"):
            seconds = await self._run(self.refs[kind])
            out[f"{kind}_s"] = seconds
            out[f"{kind}_ms_per_task"] = 1000 * seconds / n
        chain = await self._chain()
        out["chain_s"] = chain
        out["chain_ms_per_task"] = 1000 * chain / n
        out["sequential_vs_chain"] = out["sequential_s"] / chain if chain else None
        return out

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self.url}{path}", json=body, headers=self.auth) as resp:
            answer = await resp.json(content_type=None)
            if resp.status != 201:
                raise BenchError(f"POST {path}: {resp.status} {str(answer)[:300]}")
        data: dict[str, Any] = answer["data"]
        return data

    async def _submit(self, body: dict[str, Any]) -> int:
        payload = body | {"callback_url": self.receiver.url}
        record = await self._post("/api/v1/executions/execute", payload)
        return int(record["id"])

    async def _run(self, ref: str) -> float:
        """Seconds from submitting the workflow to its callback; checked complete, with one
        task run per task."""
        n = self.tasks
        started = time.perf_counter()
        eid = await self._submit({"action_ref": ref, "parameters": {}})
        await self.receiver.wait_for({eid}, max(60.0, n * TASK_BOUND_S))
        seconds = time.perf_counter() - started
        if self.receiver.status.get(eid) != "completed":
            raise BenchError(f"workflow #{eid} ({ref}) ended {self.receiver.status.get(eid)}")
        url = f"{self.url}/api/v1/executions?parent={eid}&per_page=1"
        async with self.session.get(url, headers=self.auth) as resp:
            total = (await resp.json())["pagination"]["total_items"]
        if total != n:
            raise BenchError(f"workflow #{eid} ({ref}) ran {total} task runs, not {n}")
        return seconds

    async def _chain(self) -> float:
        """Seconds for the no-ops submitted one after another, each after the last's
        callback."""
        started = time.perf_counter()
        for _ in range(self.tasks):
            eid = await self._submit(NOOP)
            await self.receiver.wait_for({eid}, 60.0)
        return time.perf_counter() - started
