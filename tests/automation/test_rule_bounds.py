"""Issue 12, hole 3: one small payload must not stall the server. Rule templates and conditions
are evaluated off the event loop with a time limit (worker processes, killed past it), and a
rule that fails on an event fails its enforcement once, with the reason: the event is not
looked at again on every sweep.

An in-process runtime (SQLite) so that the event loop's own responsiveness can be measured;
tests/automation/test_rules_e2e.py checks the same over HTTP against `attune serve`."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from config import Settings
from engine.api.automation_views import enforcement_view
from engine.automation import RuleSpec, TriggerSpec
from engine.automation.key_templates import InProcess
from engine.errors import Unavailable
from engine.runtime import Runtime, build_runtime
from engine.template_pool import ORPHAN_GRACE_S

TIMEOUT_S = 1.0
#: 10^10 loop turns: hours, in the worker, unless it is stopped.
ENDLESS = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}x"


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/r.db",
            data_dir=tmp_path,
            packs_path=str(tmp_path),
            admin_password="x" * 12,
            template_timeout_s=TIMEOUT_S,
            template_workers=1,
        )
    )
    yield runtime
    await runtime.close()


async def _rule(rt: Runtime, ref: str, action: str = "core.echo", **spec: Any) -> str:
    trigger = f"{ref}.hook"
    await rt.automation.create_trigger(TriggerSpec(ref=trigger))
    await rt.automation.create_rule(
        RuleSpec(ref=f"{ref}.rule", trigger_ref=trigger, action_ref=action, **spec)
    )
    return trigger


async def _enforcement(rt: Runtime, event_id: int) -> dict[str, Any]:
    rows, total = await rt.automation.list_enforcements(event_id=event_id)
    assert total == 1, rows
    return enforcement_view(rows[0])


class _LoopWatch:
    """The longest time the event loop went without running a 10 ms ticker."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            self.longest = max(self.longest, now - last)
            last = now

    def __enter__(self) -> _LoopWatch:
        self._task = asyncio.get_running_loop().create_task(self._tick())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def test_a_template_that_runs_too_long_is_stopped_and_the_loop_stays_free(
    rt: Runtime,
) -> None:
    slow = await _rule(rt, "slow", action_params={"message": ENDLESS})
    event = await rt.automation.record_event(slow, {}, "api")
    started = time.monotonic()
    with _LoopWatch() as watch:
        done = await asyncio.wait_for(rt.automation.process_event(event.id), 30)
    elapsed = time.monotonic() - started

    assert watch.longest < 0.5, f"the event loop was held for {watch.longest:.2f} s"
    assert TIMEOUT_S <= elapsed < TIMEOUT_S + 5, elapsed
    assert [(d["status"], d["outcome"]) for d in map(enforcement_view, done)] == [
        ("processed", "failed")
    ], done
    enf = await _enforcement(rt, event.id)
    assert enf["execution_id"] is None, enf
    assert f"took longer than {TIMEOUT_S:g} s" in enf["error"], enf
    assert "ATTUNE_TEMPLATE_TIMEOUT_S" in enf["error"], enf
    assert (await rt.automation.get_event(event.id)).processed_at is not None

    # The killed worker is replaced: the next rule's template renders as usual.
    quick = await _rule(rt, "quick", action_params={"message": "n={{ event.payload.n + 1 }}"})
    event = await rt.automation.record_event(quick, {"n": 41}, "api")
    await rt.automation.process_event(event.id)
    enf = await _enforcement(rt, event.id)
    assert (enf["outcome"], enf["error"]) == ("scheduled", None), enf
    execution = await rt.service.get(enf["execution_id"])
    assert execution.config == {"message": "n=42"}, execution


async def test_an_expression_condition_that_runs_too_long_is_stopped(rt: Runtime) -> None:
    condition = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
    trigger = await _rule(rt, "cond", conditions={"expression": condition + "{{ true }}"})
    event = await rt.automation.record_event(trigger, {}, "api")
    with _LoopWatch() as watch:
        await asyncio.wait_for(rt.automation.process_event(event.id), 30)
    assert watch.longest < 0.5, f"the event loop was held for {watch.longest:.2f} s"
    enf = await _enforcement(rt, event.id)
    assert enf["outcome"] == "failed", enf
    assert "took longer than" in enf["error"], enf


async def test_a_template_that_grows_without_bound_fails_in_its_worker(rt: Runtime) -> None:
    """``~`` doubles a text each turn: the worker's memory limit stops it, not this process."""
    grow = (
        "{% set ns = namespace(x='ab') %}{% for i in range(64) %}"
        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}{{ ns.x | length }}"
    )
    trigger = await _rule(rt, "grow", action_params={"message": grow})
    event = await rt.automation.record_event(trigger, {}, "api")
    await asyncio.wait_for(rt.automation.process_event(event.id), 30)
    enf = await _enforcement(rt, event.id)
    assert enf["outcome"] == "failed", enf
    assert "MemoryError" in enf["error"] or "took longer than" in enf["error"], enf
    assert (await rt.automation.get_event(event.id)).processed_at is not None


async def test_a_template_error_fails_the_enforcement_once_and_the_sweep_leaves_it(
    rt: Runtime,
) -> None:
    """A template whose value JSON cannot hold used to raise when the execution was stored: the
    event stayed unprocessed, and every sweep (and restart) took it up again and failed again."""
    # core.noop declares no parameters, so nothing checks the value before it is stored.
    trigger = await _rule(rt, "odd", "core.noop", action_params={"message": "{{ range(3) }}"})
    event = await rt.automation.record_event(trigger, {}, "api")
    await rt.automation.process_event(event.id)
    enf = await _enforcement(rt, event.id)
    assert (enf["status"], enf["outcome"], enf["execution_id"]) == ("processed", "failed", None)
    assert "{{ range(3) }}" in enf["error"], enf
    assert "not a JSON value" in enf["error"], enf
    seen = await rt.automation.get_event(event.id)
    assert seen.processed_at is not None, seen

    # The sweep (as after a restart) finds nothing left to do for it.
    assert await rt.automation.finish_unprocessed(0) == 0
    assert await _enforcement(rt, event.id) == enf
    assert (await rt.automation.get_event(event.id)).processed_at == seen.processed_at
    _, executions = await rt.service.list(action_ref="core.noop")
    assert executions == 0


class _Faulty:
    """An evaluator that fails for one rule (as a broken worker or a bug would) and evaluates
    the others in process."""

    def __init__(self, rule_ref: str, error: Exception) -> None:
        self.rule_ref = rule_ref
        self.error = error

    async def evaluate(
        self, conditions: Any, action_params: Any, context: Any, loaded: Any
    ) -> dict[str, Any]:
        if context["rule"]["ref"] == self.rule_ref:
            raise self.error
        return await InProcess().evaluate(conditions, action_params, context, loaded)


async def test_an_unexpected_error_evaluating_a_rule_fails_it_once(rt: Runtime) -> None:
    trigger = await _rule(rt, "bug", action_params={"message": "hi"})
    rt.automation.enforcer.evaluator = _Faulty("bug.rule", RuntimeError("a bug"))
    event = await rt.automation.record_event(trigger, {}, "api")
    await rt.automation.process_event(event.id)
    enf = await _enforcement(rt, event.id)
    assert enf["outcome"] == "failed", enf
    assert "internal error (RuntimeError)" in enf["error"], enf
    assert await rt.automation.finish_unprocessed(0) == 0


async def test_the_sweep_goes_past_an_event_it_cannot_finish_yet(rt: Runtime) -> None:
    """A worker or database outage while one event is processed is retried later, and does not
    stop the sweep from finishing the events after it."""
    stuck = await _rule(rt, "stuck", action_params={"message": "hi"})
    fine = await _rule(rt, "fine", action_params={"message": "hi"})
    rt.automation.enforcer.evaluator = _Faulty("stuck.rule", Unavailable("workers down"))
    first = await rt.automation.record_event(stuck, {}, "api")
    second = await rt.automation.record_event(fine, {}, "api")

    assert await rt.automation.finish_unprocessed(0) == 2
    assert (await rt.automation.get_event(first.id)).processed_at is None
    assert (await rt.automation.get_event(second.id)).processed_at is not None
    assert (await _enforcement(rt, second.id))["outcome"] == "scheduled"

    rt.automation.enforcer.evaluator = InProcess()  # the outage is over: the next sweep
    assert await rt.automation.finish_unprocessed(0) == 1
    assert (await _enforcement(rt, first.id))["outcome"] == "scheduled"


_ORPHAN_SCRIPT = """
import asyncio, sys
from engine.template_pool import TemplatePool

async def main():
    pool = TemplatePool(1, 1.0)
    task = asyncio.create_task(pool.evaluate(None, {"m": sys.argv[1]}, {}, None))
    while not pool._workers or pool._workers[0]._proc is None:
        await asyncio.sleep(0.01)
    print(pool._workers[0]._proc.pid, flush=True)
    await task

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


async def test_a_worker_whose_server_died_ends_itself() -> None:
    """A server killed (SIGKILL) while its worker runs an endless template leaves no worker
    spinning: the worker's own alarm ends it shortly after the time limit."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _ORPHAN_SCRIPT, ENDLESS, stdout=asyncio.subprocess.PIPE
    )
    assert server.stdout is not None
    worker_pid = int(await asyncio.wait_for(server.stdout.readline(), 30))
    server.kill()
    await server.wait()
    assert _alive(worker_pid)
    deadline = time.monotonic() + 1.0 + ORPHAN_GRACE_S + 5
    while _alive(worker_pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not _alive(worker_pid), "the orphaned template worker is still running"
