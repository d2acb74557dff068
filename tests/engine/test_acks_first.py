"""Acks first: background steps wait while a request is in flight, never longer than the bound."""

from __future__ import annotations

import asyncio
import time

from engine.acks_first import AcksFirst


async def test_nothing_in_flight_means_no_wait() -> None:
    fg = AcksFirst(max_wait_s=5)
    started = time.monotonic()
    await asyncio.wait_for(fg.step_aside(), 1)
    assert time.monotonic() - started < 0.5


async def test_a_step_waits_for_the_requests_in_flight() -> None:
    fg = AcksFirst(max_wait_s=30)
    order: list[str] = []

    async def background() -> None:
        await fg.step_aside()
        order.append("background")

    with fg.request():
        with fg.request():
            task = asyncio.create_task(background())
            await asyncio.sleep(0.01)  # the task reaches its step_aside
        await asyncio.sleep(0.01)
        assert not task.done()  # one request is still in flight
        order.append("request answered")
    await asyncio.wait_for(task, 5)
    assert order == ["request answered", "background"]
    assert fg.in_flight == 0


async def test_a_step_waits_no_longer_than_the_bound() -> None:
    fg = AcksFirst(max_wait_s=0.05)
    with fg.request():
        started = time.monotonic()
        await asyncio.wait_for(fg.step_aside(), 5)
        waited = time.monotonic() - started
    assert 0.04 <= waited < 2


async def test_an_error_in_the_request_still_ends_it() -> None:
    fg = AcksFirst(max_wait_s=30)
    try:
        with fg.request():
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert fg.in_flight == 0
    await asyncio.wait_for(fg.step_aside(), 1)
