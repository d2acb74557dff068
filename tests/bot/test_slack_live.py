"""The live message scheduler (:mod:`bot.slack_live`) against the Slack stand-in: posted once
output appears, edited in place, within a rate per channel served in turn, paused by a 429's
Retry-After, stopped (after any edit in flight) when the sink finishes the run, and picked up
again by a restarted process."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_live import LiveUpdater
from engine.chat_messages import ChatMessage
from engine.errors import NotFound
from engine.live_output import OutputHub
from engine.outbox import DeliveryFailed
from engine.output import last_lines
from engine.records import Execution
from tests.scenario.harness import new_channel
from tests.scenario.slack_standin import Call, Canned, SlackStandIn
from tests.waiting import eventually

WHEN = datetime(2026, 11, 29, tzinfo=UTC)
_ids = itertools.count(1000)


class Output:
    """A run's output as the updater reads it, with the real in-process hub."""

    def __init__(self) -> None:
        self.text: dict[tuple[int, str], str] = {}
        self.hub = OutputHub()

    def print(self, execution_id: int, line: str, stream: str = "stdout") -> None:
        key = (execution_id, stream)
        self.text[key] = self.text.get(key, "") + line + "\n"
        self.hub.notify(execution_id)

    async def tail(
        self,
        execution_id: int,
        stream: str = "stdout",
        max_lines: int = 10,
        max_bytes: int = 4096,
        *,
        execution: Execution | None = None,
    ) -> str:
        return last_lines(self.text.get((execution_id, stream), ""), max_lines)

    async def wait(self, execution_id: int, timeout_s: float | None = None) -> bool:
        return await self.hub.wait(execution_id, 0.25 if timeout_s is None else timeout_s)


class Executions:
    def __init__(self) -> None:
        self.status: dict[int, str] = {}

    async def get(self, execution_id: int) -> Execution:
        if execution_id not in self.status:
            raise NotFound(f"execution {execution_id} not found")
        return Execution(
            id=execution_id,
            action_ref="ops.tail",
            status=self.status[execution_id],
            config={},
            parent=None,
            enforcement=None,
            result=None,
            created=WHEN,
            updated=WHEN,
            started_at=WHEN,
            finished_at=None,
            executor=None,
            requester={},
        )


class Messages:
    def __init__(self) -> None:
        self.rows: dict[int, ChatMessage] = {}
        self.statuses: Executions | None = None

    async def get(self, execution_id: int, sink: str) -> ChatMessage | None:
        return self.rows.get(execution_id)

    async def save(self, message: ChatMessage) -> None:
        self.rows[message.execution_id] = message

    async def set_live_message(self, execution_id: int, sink: str, message_id: str) -> None:
        self.rows[execution_id] = replace(self.rows[execution_id], live_message_id=message_id)

    async def of_statuses(
        self, sink: str, statuses: Sequence[str], limit: int
    ) -> list[ChatMessage]:
        assert self.statuses is not None
        return [
            m
            for m in self.rows.values()
            if m.message_id
            and not m.output_posted
            and self.statuses.status.get(m.execution_id) in statuses
        ][:limit]


class World:
    def __init__(self, standin: SlackStandIn) -> None:
        self.standin = standin
        self.output = Output()
        self.executions = Executions()
        self.messages = Messages()
        self.messages.statuses = self.executions
        self.client = AsyncWebClient(token="xoxb-test", base_url=standin.api_url)
        self.updaters: list[LiveUpdater] = []

    def updater(self, **options: float) -> LiveUpdater:
        settings: dict[str, float] = {"interval_s": 0.3, "global_interval_s": 0.0}
        settings.update(first_after_s=0.0, poll_s=0.2)
        settings.update(options)
        live = LiveUpdater(self.client, self.messages, self.output, self.executions, **settings)
        self.updaters.append(live)
        return live

    def run(self, channel: str, live_message_id: str | None = None) -> ChatMessage:
        """A running execution whose card is posted in ``channel``."""
        execution_id = next(_ids)
        self.executions.status[execution_id] = "running"
        message = ChatMessage(
            execution_id=execution_id,
            sink="slack",
            channel=channel,
            message_id=f"1700000000.{execution_id:06d}",
            shows_status="running",
            live_message_id=live_message_id,
        )
        self.messages.rows[execution_id] = message
        return message

    def calls(self, channel: str) -> list[Call]:
        return self.standin.find("chat.*", target=channel)


@pytest.fixture
async def world(standin: SlackStandIn) -> AsyncIterator[World]:
    w = World(standin)
    try:
        yield w
    finally:
        for live in w.updaters:
            await live.stop()
        if w.client.session is not None:
            await w.client.session.close()


def shows(call: Call, text: str) -> bool:
    return text in call.all_text()


async def test_the_live_message_is_posted_in_the_thread_then_edited_in_place(
    world: World,
) -> None:
    live = world.updater()
    live.start()
    channel = new_channel()
    message = world.run(channel)
    live.watch(message)
    world.output.print(message.execution_id, "step 1 of 3")

    first = await eventually(lambda: world.calls(channel), "the live message", 5, interval_s=0.02)
    assert first[0].method == "chat.postMessage"
    assert first[0].params["thread_ts"] == message.message_id
    assert shows(first[0], "step 1 of 3")
    live_ts = first[0].response["ts"]  # type: ignore[index]
    await eventually(
        lambda: world.messages.rows[message.execution_id].live_message_id,
        "the live message's ts saved",
        5,
        interval_s=0.02,
    )
    assert world.messages.rows[message.execution_id].live_message_id == live_ts

    world.output.print(message.execution_id, "step 2 of 3")
    world.output.print(message.execution_id, "oops", stream="stderr")
    edited = await eventually(
        lambda: [c for c in world.calls(channel) if c.method == "chat.update"],
        "the live message edited",
        5,
        interval_s=0.02,
    )
    assert edited[0].params["ts"] == live_ts
    assert shows(edited[0], "step 1 of 3")
    assert shows(edited[0], "step 2 of 3")
    assert shows(edited[0], "oops")
    # One live message only.
    assert len([c for c in world.calls(channel) if c.method == "chat.postMessage"]) == 1


async def test_one_channel_is_served_in_turn_within_its_rate(world: World) -> None:
    interval_s = 0.3
    live = world.updater(interval_s=interval_s)
    live.start()
    busy, quiet = new_channel(), new_channel()
    runs = [world.run(busy) for _ in range(3)]
    other = world.run(quiet)
    for message in [*runs, other]:
        live.watch(message)

    for i in range(40):  # every run prints every 50 ms for 2 s
        for message in [*runs, other]:
            world.output.print(message.execution_id, f"line {i}")
        await asyncio.sleep(0.05)

    calls = world.calls(busy)
    assert len(calls) >= 4, calls
    gaps = [b.at - a.at for a, b in itertools.pairwise(calls)]
    # Never faster than the channel's rate (the stand-in stamps a call when it arrives).
    assert min(gaps) >= interval_s * 0.9, gaps
    # Round robin: every run of the busy channel had its turn, none twice before the others.
    served = [c.params.get("thread_ts") or _thread_of(world, c) for c in calls]
    assert {m.message_id for m in runs} <= set(served), served
    for window in (served[i : i + 3] for i in range(0, len(served) - 2, 3)):
        assert len(set(window)) == 3, served
    # The other channel has its own rate: a busy neighbour does not starve it.
    assert len(world.calls(quiet)) >= 3


def _thread_of(world: World, call: Call) -> str:
    """The card (thread) of a ``chat.update`` of a live message."""
    for row in world.messages.rows.values():
        if row.live_message_id == call.params.get("ts"):
            return str(row.message_id)
    raise AssertionError(f"no run has live message {call.params.get('ts')}")


async def test_a_429_pauses_the_channel_for_retry_after(world: World) -> None:
    live = world.updater(interval_s=0.1)
    live.start()
    channel = new_channel()
    message = world.run(channel)
    live.watch(message)
    world.output.print(message.execution_id, "first")
    await eventually(lambda: world.calls(channel), "the live message", 5, interval_s=0.02)

    world.standin.queue("chat.update", Canned.rate_limited(1), target=channel)
    for i in range(30):
        world.output.print(message.execution_id, f"more {i}")
        await asyncio.sleep(0.05)
    limited = [c for c in world.calls(channel) if c.status == 429]
    assert len(limited) == 1
    after = [c for c in world.calls(channel) if c.at > limited[0].at]
    assert after, "no edit after the pause"
    assert after[0].at - limited[0].at >= 0.95, "Retry-After not honoured"
    await eventually(
        lambda: shows(world.calls(channel)[-1], "more 29"), "the last line", 5, interval_s=0.02
    )


async def test_finish_waits_for_an_edit_in_flight_and_nothing_follows(world: World) -> None:
    live = world.updater(interval_s=0.05)
    live.start()
    channel = new_channel()
    message = world.run(channel)
    live.watch(message)
    world.output.print(message.execution_id, "first")
    await eventually(lambda: world.calls(channel), "the live message", 5, interval_s=0.02)
    live_ts = world.calls(channel)[0].response["ts"]  # type: ignore[index]

    world.standin.queue("chat.update", Canned.held(0.6), target=channel)
    world.output.print(message.execution_id, "second")
    await eventually(
        lambda: [c for c in world.calls(channel) if c.method == "chat.update"],
        "an edit in flight",
        5,
        interval_s=0.01,
    )
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await live.finish(message.execution_id) == live_ts
    assert loop.time() - began >= 0.4, "finish did not wait for the edit in flight"
    count = len(world.calls(channel))
    world.output.print(message.execution_id, "after the end")
    await asyncio.sleep(0.4)  # a quiet spell: nothing may come (there is nothing to wait for)
    assert len(world.calls(channel)) == count
    assert live.watching == 0


async def test_a_quick_run_gets_no_live_message(world: World) -> None:
    live = world.updater(first_after_s=0.5)
    live.start()
    channel = new_channel()
    message = world.run(channel)
    live.watch(message)
    world.output.print(message.execution_id, "done already")
    world.executions.status[message.execution_id] = "completed"
    await asyncio.sleep(0.8)  # past first_after_s: the run had ended, so nothing is posted
    assert world.calls(channel) == []
    assert live.watching == 0


async def test_a_restarted_process_edits_the_live_message_it_finds(world: World) -> None:
    channel = new_channel()
    message = world.run(channel, live_message_id="1700000000.777700")
    world.output.print(message.execution_id, "printed before the restart")
    live = world.updater()
    live.start()  # resumes the running executions with a card
    edited = await eventually(
        lambda: world.calls(channel), "the live message edited again", 5, interval_s=0.02
    )
    assert edited[0].method == "chat.update"
    assert edited[0].params["ts"] == "1700000000.777700"
    assert shows(edited[0], "printed before the restart")


async def test_a_deleted_live_message_is_posted_again(world: World) -> None:
    live = world.updater(interval_s=0.1)
    live.start()
    channel = new_channel()
    message = world.run(channel, live_message_id="1700000000.555500")
    world.standin.queue("chat.update", Canned.error("message_not_found"), target=channel)
    live.watch(message, resumed=True)
    world.output.print(message.execution_id, "still going")
    posted = await eventually(
        lambda: [c for c in world.calls(channel) if c.method == "chat.postMessage"],
        "a new live message",
        5,
        interval_s=0.02,
    )
    assert posted[0].params["thread_ts"] == message.message_id
    new_ts = posted[0].response["ts"]  # type: ignore[index]
    await eventually(
        lambda: world.messages.rows[message.execution_id].live_message_id == new_ts,
        "the new live message saved",
        5,
        interval_s=0.02,
    )


async def test_the_end_of_a_run_is_put_off_while_a_slow_edit_is_in_flight(world: World) -> None:
    """The outbox drainer is not held up: the end is tried again later, and then goes."""
    live = world.updater(interval_s=0.05)
    live.start()
    channel = new_channel()
    message = world.run(channel)
    live.watch(message)
    world.output.print(message.execution_id, "first")
    await eventually(lambda: world.calls(channel), "the live message", 5, interval_s=0.02)
    live_ts = world.calls(channel)[0].response["ts"]  # type: ignore[index]

    world.standin.queue("chat.update", Canned.held(30), target=channel)
    world.output.print(message.execution_id, "second")
    await eventually(
        lambda: [c for c in world.calls(channel) if c.method == "chat.update"],
        "an edit in flight",
        5,
        interval_s=0.01,
    )
    with pytest.raises(DeliveryFailed) as raised:
        await live.finish(message.execution_id, wait_s=0.2)
    assert raised.value.retry_after_s is not None
    assert not raised.value.permanent
    world.output.print(message.execution_id, "third")
    world.standin.release_held()
    assert await live.finish(message.execution_id, wait_s=5) == live_ts
    await asyncio.sleep(0.3)  # a quiet spell: no edit may follow the end
    assert not [c for c in world.calls(channel) if "third" in c.all_text()]
