"""Built-in ``core`` actions, run inside the worker without a process (about 1 ms saved each)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from engine.runners import RunRequest, RunResult

#: Largest HTTP response body kept by ``core.http_request``.
HTTP_BODY_CAP_BYTES = 1024 * 1024

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


async def _http_request(request: RunRequest) -> RunResult:
    p = request.parameters
    url = str(p["url"])
    if not url.startswith(("http://", "https://")):
        return RunResult(outcome="failed", error=f"url must be http or https, got '{url}'")
    kwargs: dict[str, Any] = {
        "headers": p.get("headers") or {},
        "ssl": bool(p.get("verify_tls", True)),
    }
    if "json" in p:
        kwargs["json"] = p["json"]
    elif "body" in p:
        kwargs["data"] = str(p["body"]).encode()
    expected = p.get("expected_status")
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.request(str(p.get("method", "GET")), url, **kwargs) as resp,
        ):
            raw = await resp.content.read(HTTP_BODY_CAP_BYTES + 1)
            body = raw[:HTTP_BODY_CAP_BYTES].decode("utf-8", errors="replace")
            data: dict[str, Any] = {
                "status_code": resp.status,
                "headers": dict(resp.headers),
                "body": body,
            }
            if resp.content_type == "application/json":
                try:
                    data["json"] = (
                        await resp.json(content_type=None)
                        if len(raw) <= HTTP_BODY_CAP_BYTES
                        else None
                    )
                except ValueError:
                    data["json"] = None
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return RunResult(outcome="failed", error=f"request failed: {type(exc).__name__}: {exc}")
    ok = resp.status in expected if expected else 200 <= resp.status < 300
    return RunResult(
        outcome="completed" if ok else "failed",
        exit_code=0 if ok else 1,
        stdout=body,
        stdout_truncated=len(raw) > HTTP_BODY_CAP_BYTES,
        data=data,
        error=None if ok else f"HTTP {resp.status}",
    )


BUILTINS: dict[str, Builtin] = {
    "echo": _echo,
    "noop": _noop,
    "sleep": _sleep,
    "http_request": _http_request,
}


class BuiltinRunner:
    """Runs ``runner_type: builtin`` actions; honours the time limit and cancel."""

    async def run(self, request: RunRequest) -> RunResult:
        started = time.monotonic()
        func = BUILTINS.get(request.action.entry_point or "")
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
