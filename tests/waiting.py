"""Waiting in tests: one bounded poll, async and sync.

Prefer waiting on the work itself where something tells when it is done (an event, a task,
:meth:`engine.broker.memory.MemoryBroker.join`); poll with :func:`eventually` only what nothing
announces (another process, a server over HTTP, a row in the database).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar, overload

import pytest

T = TypeVar("T")

#: Default bound on a wait for something that should happen "soon".
TIMEOUT_S = 10.0
#: Default pause between two probes.
INTERVAL_S = 0.01


@overload
async def eventually(
    probe: Callable[[], Awaitable[T]],
    what: str,
    timeout_s: float = TIMEOUT_S,
    *,
    interval_s: float = INTERVAL_S,
    done: Callable[[T], object] = bool,
    explain: Callable[[], str] | None = None,
) -> T: ...


@overload
async def eventually(
    probe: Callable[[], T],
    what: str,
    timeout_s: float = TIMEOUT_S,
    *,
    interval_s: float = INTERVAL_S,
    done: Callable[[T], object] = bool,
    explain: Callable[[], str] | None = None,
) -> T: ...


async def eventually(
    probe: Callable[[], Any],
    what: str,
    timeout_s: float = TIMEOUT_S,
    *,
    interval_s: float = INTERVAL_S,
    done: Callable[[Any], object] = bool,
    explain: Callable[[], str] | None = None,
) -> Any:
    """Call ``probe`` (a plain or an async function) every ``interval_s`` until ``done`` holds
    for what it returns (by default: until it returns something truthy), and return that.
    Fails the test after ``timeout_s``, naming ``what`` it waited for and the last value, then
    what ``explain`` says (a process's output, say)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if inspect.isawaitable(value):
            value = await value
        if done(value):
            return value
        if time.monotonic() > deadline:
            _timed_out(what, timeout_s, value, explain)
        await asyncio.sleep(interval_s)


def eventually_sync(
    probe: Callable[[], T],
    what: str,
    timeout_s: float = TIMEOUT_S,
    *,
    interval_s: float = INTERVAL_S,
    done: Callable[[T], object] = bool,
    explain: Callable[[], str] | None = None,
) -> T:
    """:func:`eventually` for code without an event loop (it sleeps the thread)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            _timed_out(what, timeout_s, value, explain)
        time.sleep(interval_s)


def _timed_out(
    what: str, timeout_s: float, value: object, explain: Callable[[], str] | None
) -> NoReturn:
    message = f"timed out after {timeout_s} s waiting for {what}; last: {value!r}"
    pytest.fail(message + ("\n" + explain() if explain is not None else ""), pytrace=False)
