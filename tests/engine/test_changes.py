"""The change feed (engine/changes.py): woken by this process's changes, reading the others'
from the database, late commits not missed, each (execution, updated) sent once, a slow
subscriber dropped with its queue let go, replay from a cursor; and the stream metrics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest

from config import Settings
from engine.changes import (
    ChangeFeed,
    ExecutionChange,
    Subscription,
    cursor_of,
    parse_cursor,
)
from engine.clock import now_utc
from engine.errors import InvalidRequest
from engine.metrics import Metrics
from engine.records import Change, Execution, Executor
from engine.runtime import Runtime, build_runtime

PACKS = str(Path(__file__).resolve().parents[2] / "packs")
#: Bound on every wait here.
WAIT_S = 5.0
WHO = Executor(identity="tester", source="cli")


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    """A runtime without a worker: the test moves the executions itself."""
    settings = Settings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'attune.db'}",
        packs_path=PACKS,
        data_dir=tmp_path,
        admin_password="x" * 12,
    )
    rt = await build_runtime(settings)
    yield rt
    await rt.close()


async def next_of(sub: Subscription) -> ExecutionChange:
    async with asyncio.timeout(WAIT_S):
        change = await sub.next()
    assert change is not None, "the subscription was closed"
    return change


async def touch(rt: Runtime, execution_id: int, status: str, updated: datetime) -> None:
    """Change an execution as another process would (this process's notifier not told)."""
    row = await rt.service.executions.change(
        execution_id,
        Change(status=status, sources=("requested", "running"), values={}, updated=updated),
    )
    assert row is not None


def execution(execution_id: int = 1) -> Execution:
    at = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    return Execution(
        execution_id, "core.echo", "requested", {}, None, None, None, at, at, None, None, None, {}
    )


# -- pure -------------------------------------------------------------------------------------


def test_a_cursor_names_its_time_and_a_bad_one_is_refused() -> None:
    at = datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)
    assert parse_cursor(cursor_of(at, 42)) == at
    bad_ones = ("", "abc", "12", "-3", "1-x", "9" * 30 + "-1", "9" * 18 + "-1", "\u0661-1")
    for bad in bad_ones:
        with pytest.raises(InvalidRequest, match="Last-Event-ID"):
            parse_cursor(bad)


def test_an_event_is_attunes_notification_of_the_execution() -> None:
    record = execution(7)
    note = orjson.loads(ExecutionChange(record, record.updated).data)
    assert note["notification_type"] == "execution_created"
    assert (note["entity_type"], note["entity_id"]) == ("execution", 7)
    assert note["payload"]["status"] == "requested"
    assert note["payload"]["action_ref"] == "core.echo"
    assert note["timestamp"] == record.updated.isoformat()


async def test_a_full_subscription_is_dropped_and_lets_its_queue_go() -> None:
    sub = Subscription(lambda e: True, limit=3)
    for i in range(3):
        assert sub.offer(ExecutionChange(execution(i + 1), now_utc()))
    assert len(sub) == 3
    assert not sub.dropped
    assert not sub.offer(ExecutionChange(execution(9), now_utc()))
    assert sub.dropped
    assert sub.closed
    assert len(sub) == 0  # nothing kept for a reader that is gone
    assert await sub.next() is None
    assert not sub.offer(ExecutionChange(execution(10), now_utc()))
    assert len(sub) == 0


def test_delivery_gauges_count_by_sink_and_fall_to_zero() -> None:
    metrics = Metrics()
    metrics.set_deliveries(
        {
            ("slack", "pending"): 2,
            ("slack", "sending"): 1,
            ("terminal:abc", "pending"): 1,
            ("terminal:def", "pending"): 4,
            ("callback", "failed"): 3,
        }
    )
    text = metrics.render().decode()
    assert 'attune_deliveries{sink="slack",state="pending"} 3.0' in text
    assert 'attune_deliveries{sink="terminal",state="pending"} 5.0' in text
    assert 'attune_deliveries{sink="callback",state="failed"} 3.0' in text
    metrics.set_deliveries({})
    text = metrics.render().decode()
    assert 'attune_deliveries{sink="slack",state="pending"} 0.0' in text
    assert 'attune_deliveries{sink="callback",state="failed"} 0.0' in text


def test_open_streams_are_counted_by_kind() -> None:
    metrics = Metrics()
    with metrics.stream_open("logs"), metrics.stream_open("logs"):
        assert 'attune_streams_open{kind="logs"} 2.0' in metrics.render().decode()
    assert 'attune_streams_open{kind="logs"} 0.0' in metrics.render().decode()


# -- with a database ----------------------------------------------------------------------------


async def test_this_process_wakes_the_feed_at_once(runtime: Runtime) -> None:
    feed = ChangeFeed(runtime.store, runtime.service.notifier, poll_s=60)  # no timed reads
    try:
        sub = feed.subscribe(lambda e: True)
        await asyncio.sleep(0)  # the feed's first read (nothing yet)
        record = await runtime.service.submit("core.echo", {"message": "hi"}, WHO)
        change = await next_of(sub)
        assert (change.execution.id, change.execution.status) == (record.id, "requested")
    finally:
        await feed.close()


async def test_another_process_changes_are_read_and_each_sent_once(runtime: Runtime) -> None:
    feed = ChangeFeed(runtime.store, None, poll_s=0.02)  # hears nothing in-process
    try:
        record = await runtime.service.submit("core.echo", {"message": "hi"}, WHO)
        sub = feed.subscribe(lambda e: e.id == record.id)
        first = await next_of(sub)  # within the lag window: sent
        assert first.execution.status == "requested"
        await touch(runtime, record.id, "running", now_utc())
        assert (await next_of(sub)).execution.status == "running"
        # Several reads later, nothing is sent again.
        await asyncio.sleep(0.2)
        assert len(sub) == 0
    finally:
        await feed.close()


async def test_a_change_committed_late_is_not_missed(runtime: Runtime) -> None:
    feed = ChangeFeed(runtime.store, None, poll_s=0.02, lag_s=2.0)
    try:
        a = await runtime.service.submit("core.echo", {"message": "a"}, WHO)
        b = await runtime.service.submit("core.echo", {"message": "b"}, WHO)
        sub = feed.subscribe(lambda e: e.id in (a.id, b.id))
        assert {(await next_of(sub)).execution.id for _ in range(2)} == {a.id, b.id}
        newer = now_utc()
        await touch(runtime, a.id, "running", newer)
        assert (await next_of(sub)).execution.status == "running"
        # b's change was stamped before a's but commits after a's was read.
        await touch(runtime, b.id, "running", newer - timedelta(seconds=0.5))
        late = await next_of(sub)
        assert (late.execution.id, late.execution.status) == (b.id, "running")
        # Its cursor does not go back: a reconnect from it still replays the lag window.
        assert parse_cursor(late.cursor) >= newer
    finally:
        await feed.close()


async def test_a_slow_subscriber_is_dropped_and_the_others_go_on(runtime: Runtime) -> None:
    feed = ChangeFeed(runtime.store, runtime.service.notifier, poll_s=60)
    try:
        slow = feed.subscribe(lambda e: True, queue_size=2)
        quick = feed.subscribe(lambda e: True)
        ids = []
        for n in range(4):
            ids.append((await runtime.service.submit("core.echo", {"message": str(n)}, WHO)).id)
            assert (await next_of(quick)).execution.id == ids[-1]
        assert slow.dropped
        assert slow.closed
        assert len(slow) == 0
        assert feed.subscribers == 1
        feed.unsubscribe(quick)
        async with asyncio.timeout(WAIT_S):  # the feed stops reading with nobody listening
            while runtime.service.notifier is not None and runtime.service.notifier.listening:
                await asyncio.sleep(0.01)
    finally:
        await feed.close()


async def test_replay_sends_what_changed_since_a_cursor(runtime: Runtime) -> None:
    feed = ChangeFeed(runtime.store, None, lag_s=0.0)
    old = await runtime.service.submit("core.echo", {"message": "old"}, WHO)
    since = now_utc() + timedelta(seconds=0.001)
    await asyncio.sleep(0.01)
    new = await runtime.service.submit("core.echo", {"message": "new"}, WHO)
    await touch(runtime, new.id, "running", now_utc())
    replayed = [c async for page in feed.replay(since) for c in page]
    assert [(c.execution.id, c.execution.status) for c in replayed] == [(new.id, "running")]
    only_old = [c async for page in feed.replay(since - timedelta(1), only=old.id) for c in page]
    assert [c.execution.id for c in only_old] == [old.id]
