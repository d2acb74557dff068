"""Built-in ``core`` actions, run inside the worker without a process (about 1 ms saved each)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from functools import partial

from engine.outbound import OutboundPolicy
from engine.runners import RunRequest, RunResult
from engine.runners.http_request import http_request

Builtin = Callable[[RunRequest], Awaitable[RunResult]]


async def _echo(request: RunRequest) -> RunResult:
    message = str(request.parameters.get("message", ""))
    return RunResult(outcome="completed", exit_code=0, stdout=message + "\n")


async def _noop(request: RunRequest) -> RunResult:
    return RunResult(outcome="completed", exit_code=0)


async def _sleep(request: RunRequest) -> RunResult:
    seconds = float(request.parameters.get("seconds", 1))
    try:
        await asyncio.wait_for(request.cancel.wait(), timeout=seconds)
    except TimeoutError:
        return RunResult(outcome="completed", exit_code=0, data={"slept_s": seconds})
    return RunResult(outcome="cancelled", error="cancelled")


#: core.ask's answer when it names no schema: a yes or no.
APPROVAL_SCHEMA = {
    "type": "object",
    "properties": {"approved": {"type": "boolean", "description": "Approve?"}},
    "required": ["approved"],
}


async def _ask(request: RunRequest) -> RunResult:
    """Ends at once with an ``__inquiry`` request: the worker parks the execution until the
    answer comes (engine/inquiries.py)."""
    p = request.parameters
    asked: dict[str, object] = {
        "prompt": p.get("prompt", ""),
        "response_schema": p.get("response_schema") or APPROVAL_SCHEMA,
    }
    for name in ("assigned_to", "assignees", "timeout_seconds"):
        if p.get(name) is not None:
            asked[name] = p[name]
    return RunResult(outcome="completed", exit_code=0, data={"__inquiry": asked})


BUILTINS: dict[str, Builtin] = {
    "ask": _ask,
    "echo": _echo,
    "noop": _noop,
    "sleep": _sleep,
    "http_request": http_request,
}


class BuiltinRunner:
    """Runs ``runner_type: builtin`` actions; honours the time limit and cancel.
    ``core.http_request`` reaches only what ``outbound`` allows (by default: no loopback,
    link-local, private, multicast or reserved address)."""

    def __init__(self, outbound: OutboundPolicy | None = None) -> None:
        self._builtins: dict[str, Builtin] = BUILTINS | {
            "http_request": partial(http_request, policy=outbound or OutboundPolicy())
        }

    async def run(self, request: RunRequest) -> RunResult:
        started = time.monotonic()
        func = self._builtins.get(request.action.entry_point or "")
        if func is None:
            return RunResult(
                outcome="failed", error=f"unknown built-in '{request.action.entry_point}'"
            )
        task = asyncio.ensure_future(func(request))
        cancel_wait = asyncio.ensure_future(request.cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {task, cancel_wait}, timeout=request.timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancel_wait.cancel()
        if task in done:
            result = task.result()
        else:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            if request.cancel.is_set():
                result = RunResult(outcome="cancelled", error="cancelled")
            else:
                result = RunResult(
                    outcome="timeout", error=f"timed out after {request.timeout_s:g} s"
                )
        result.duration_ms = int((time.monotonic() - started) * 1000)
        return result
