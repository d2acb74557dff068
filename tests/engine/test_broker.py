"""The broker seam, run against both implementations: the in-process one and RabbitMQ.

The memory broker is process-wide, so its "connections" are all the same instance; for RabbitMQ
each ``connect()`` is a separate connection, as separate engine processes would have.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import aio_pika
import pytest

from engine.broker import CANCEL, COMPLETED, REQUESTED, Broker, Envelope, amqp
from engine.broker.amqp import AmqpBroker
from engine.broker.memory import MemoryBroker
from engine.errors import Unavailable
from tests.waiting import eventually

Connect = Callable[[], Awaitable[Broker]]
WAIT = 10.0  # upper bound for anything that should happen "soon"


async def delivered(broker: Broker, holds: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait until the published messages have been handled and ``holds`` says so: on the
    memory broker by waiting for its work (``join``), on RabbitMQ by polling."""
    if isinstance(broker, MemoryBroker):
        await asyncio.wait_for(broker.join(), WAIT)
    await eventually(holds, what, WAIT)


@pytest.fixture(params=["memory", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
async def connect(request: pytest.FixtureRequest) -> AsyncIterator[Connect]:
    """A factory of started brokers; all are closed (and RabbitMQ topology deleted) afterwards."""
    created: list[Broker] = []
    if request.param == "memory":
        shared = MemoryBroker()
        await shared.start()
        created.append(shared)

        async def make() -> Broker:
            return shared
    else:
        url: str = request.getfixturevalue("amqp_url")
        exchange: str = request.getfixturevalue("amqp_exchange")

        async def make() -> Broker:
            broker = AmqpBroker(url, exchange)
            await asyncio.wait_for(broker.start(), WAIT)
            created.append(broker)
            return broker

    yield make
    for broker in created:
        await asyncio.wait_for(broker.close(), WAIT)
    for broker in created:
        if isinstance(broker, AmqpBroker):
            await asyncio.wait_for(broker.delete_topology(), WAIT)


@pytest.fixture
async def rabbit(amqp_url: str, amqp_exchange: str) -> AsyncIterator[Callable[[], AmqpBroker]]:
    """Unstarted RabbitMQ brokers on one test exchange, cleaned up afterwards."""
    created: list[AmqpBroker] = []

    def make() -> AmqpBroker:
        created.append(AmqpBroker(amqp_url, amqp_exchange))
        return created[-1]

    yield make
    for broker in created:
        await asyncio.wait_for(broker.close(), WAIT)
    for broker in created:
        await asyncio.wait_for(broker.delete_topology(), WAIT)


def collector(into: list[Envelope]) -> Callable[[Envelope], Awaitable[None]]:
    async def handler(envelope: Envelope) -> None:
        into.append(envelope)

    return handler


async def test_publish_reaches_shared_consumer(connect: Connect) -> None:
    consumer, publisher = await connect(), await connect()
    got: list[Envelope] = []
    await consumer.consume("requested", [REQUESTED], collector(got))

    before = datetime.now(UTC) - timedelta(seconds=5)
    await publisher.publish(REQUESTED, {"execution_id": 42, "nested": {"a": [1, "b"]}})
    await delivered(consumer, lambda: len(got) == 1, "the message")

    envelope = got[0]
    assert envelope.message_type == REQUESTED
    assert envelope.payload == {"execution_id": 42, "nested": {"a": [1, "b"]}}
    assert isinstance(envelope.message_id, str)
    assert len(envelope.message_id) >= 16
    assert envelope.timestamp.tzinfo is not None
    assert before <= envelope.timestamp <= datetime.now(UTC) + timedelta(seconds=5)


async def test_competing_consumers_split_messages(connect: Connect) -> None:
    first, second, publisher = await connect(), await connect(), await connect()
    got_first: list[Envelope] = []
    got_second: list[Envelope] = []

    def working(into: list[Envelope]) -> Callable[[Envelope], Awaitable[None]]:
        # A real handler awaits I/O; one that never yields lets a single in-process pump
        # drain the whole queue, so the memory broker would not split the work.
        async def handler(envelope: Envelope) -> None:
            await asyncio.sleep(0)
            into.append(envelope)

        return handler

    await first.consume("requested", [REQUESTED], working(got_first), prefetch=4)
    await second.consume("requested", [REQUESTED], working(got_second), prefetch=4)

    await asyncio.gather(*(publisher.publish(REQUESTED, {"n": n}) for n in range(50)))
    await delivered(publisher, lambda: len(got_first) + len(got_second) >= 50, "50 deliveries")

    counts = Counter(e.payload["n"] for e in got_first + got_second)
    assert counts == Counter(range(50)), "each message handled exactly once"
    assert got_first, "the first consumer got a share"
    assert got_second, "the second consumer got a share"


async def test_private_consumers_each_get_every_message(connect: Connect) -> None:
    first, second, publisher = await connect(), await connect(), await connect()
    got_first: list[Envelope] = []
    got_second: list[Envelope] = []
    await first.consume(None, [CANCEL], collector(got_first))
    await second.consume(None, [CANCEL], collector(got_second))

    for n in range(5):
        await publisher.publish(CANCEL, {"execution_id": n})
    await delivered(
        publisher, lambda: len(got_first) >= 5 and len(got_second) >= 5, "both broadcasts"
    )

    assert sorted(e.payload["execution_id"] for e in got_first) == list(range(5))
    assert sorted(e.payload["execution_id"] for e in got_second) == list(range(5))


async def test_routing_keys_filter(connect: Connect) -> None:
    broker = await connect()
    completed: list[Envelope] = []
    requested: list[Envelope] = []
    await broker.consume("completed", [COMPLETED], collector(completed), prefetch=1)
    await broker.consume("requested", [REQUESTED], collector(requested), prefetch=1)

    # Published first: were it routed to the "completed" queue it would arrive before the marker.
    await broker.publish(REQUESTED, {"execution_id": 1})
    await broker.publish(COMPLETED, {"execution_id": 2})
    await delivered(broker, lambda: bool(completed) and bool(requested), "both deliveries")

    assert [e.message_type for e in completed] == [COMPLETED]
    assert [e.message_type for e in requested] == [REQUESTED]


async def test_failing_handler_does_not_stop_consumer(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    broker = await connect()
    attempts: Counter[str] = Counter()

    async def handler(envelope: Envelope) -> None:
        attempts[envelope.payload["kind"]] += 1
        if envelope.payload["kind"] == "bad":
            raise RuntimeError("handler exploded")

    caplog.set_level(logging.ERROR)
    await broker.consume("requested", [REQUESTED], handler, prefetch=1)
    await broker.publish(REQUESTED, {"kind": "bad"})
    await broker.publish(REQUESTED, {"kind": "good"})
    await delivered(broker, lambda: attempts["good"] == 1, "the message after the failure")

    assert attempts["bad"] == 1, "a failed message is dropped, not redelivered"
    assert any("handler failed" in r.getMessage() and r.exc_info for r in caplog.records)


async def test_handlers_run_concurrently_up_to_prefetch(connect: Connect) -> None:
    broker = await connect()
    release = asyncio.Event()
    in_flight = peak = done = 0

    async def handler(envelope: Envelope) -> None:
        nonlocal in_flight, peak, done
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await release.wait()
        finally:
            in_flight -= 1
            done += 1

    await broker.consume("requested", [REQUESTED], handler, prefetch=8)
    for n in range(12):
        await broker.publish(REQUESTED, {"n": n})

    await eventually(lambda: in_flight == 8, "8 handlers in flight at once")
    assert not release.is_set()
    release.set()
    await delivered(broker, lambda: done == 12, "all 12 handlers to finish")
    assert peak == 8, "never more than prefetch handlers at once"


async def test_ping_and_idempotent_close(connect: Connect) -> None:
    broker = await connect()
    assert await broker.ping()
    await broker.close()
    await broker.close()
    assert not await broker.ping()


@pytest.mark.rabbitmq
async def test_messages_persist_while_no_consumer_is_connected(
    rabbit: Callable[[], AmqpBroker],
) -> None:
    first = rabbit()
    await first.start()
    await first.consume("requested", [REQUESTED], collector([]))
    await asyncio.wait_for(first.close(), WAIT)

    publisher = rabbit()
    await publisher.start()
    await publisher.publish(REQUESTED, {"execution_id": 7})

    got: list[Envelope] = []
    restarted = rabbit()
    await restarted.start()
    await restarted.consume("requested", [REQUESTED], collector(got))
    await eventually(lambda: len(got) == 1, "the message kept while nobody consumed")
    assert got[0].payload == {"execution_id": 7}


@pytest.mark.rabbitmq
async def test_malformed_message_is_dropped(
    rabbit: Callable[[], AmqpBroker],
    amqp_url: str,
    amqp_exchange: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    broker = rabbit()
    await broker.start()
    got: list[Envelope] = []
    await broker.consume("requested", [REQUESTED], collector(got), prefetch=1)

    connection = await aio_pika.connect(amqp_url)
    async with connection:
        channel = await connection.channel()
        exchange = await channel.get_exchange(amqp_exchange, ensure=True)
        await exchange.publish(aio_pika.Message(b"not json"), routing_key=REQUESTED)
    await broker.publish(REQUESTED, {"execution_id": 1})

    await eventually(lambda: len(got) == 1, "the valid message after the malformed one")
    assert got[0].payload == {"execution_id": 1}
    assert any("malformed" in r.getMessage() for r in caplog.records)


async def test_unreachable_broker_raises_unavailable() -> None:
    broker = AmqpBroker("amqp://guest:guest@127.0.0.1:1/", "attune.test.unreachable")
    with pytest.raises(Unavailable, match="message broker unavailable"):
        await asyncio.wait_for(broker.start(), WAIT)
    with pytest.raises(Unavailable, match="message broker unavailable"):
        await asyncio.wait_for(broker.publish(REQUESTED, {"execution_id": 1}), WAIT)
    assert not await broker.ping()
    await asyncio.wait_for(broker.close(), WAIT)


@pytest.mark.rabbitmq
async def test_publish_after_close_raises_unavailable(rabbit: Callable[[], AmqpBroker]) -> None:
    broker = rabbit()
    await broker.start()
    await broker.close()
    with pytest.raises(Unavailable):
        await asyncio.wait_for(broker.publish(REQUESTED, {}), WAIT)


class _Proxy:
    """A TCP proxy in front of RabbitMQ whose plug can be pulled, to simulate a broker outage."""

    def __init__(self, upstream: str) -> None:
        url = urlsplit(upstream)
        self._upstream = (url.hostname or "127.0.0.1", url.port or 5672)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        if self._server is not None and self._server.is_serving():
            return
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()


@pytest.mark.rabbitmq
async def test_connection_loss_is_unavailable_then_recovers(
    amqp_url: str, amqp_exchange: str
) -> None:
    """Pulling the plug makes publish fail fast; aio-pika's robust connection then restores
    the channels, queues, bindings and consumers by itself."""
    proxy = _Proxy(amqp_url)
    await proxy.start()
    broker = AmqpBroker(
        f"amqp://guest:guest@127.0.0.1:{proxy.port}/?reconnect_interval=0.2", amqp_exchange
    )
    try:
        await asyncio.wait_for(broker.start(), WAIT)
        shared: list[Envelope] = []
        private: list[Envelope] = []
        await broker.consume("requested", [REQUESTED], collector(shared))
        await broker.consume(None, [CANCEL], collector(private))

        proxy.cut()

        async def down() -> bool:
            return not await broker.ping()

        await eventually(down, "the client to notice the outage")
        with pytest.raises(Unavailable, match="message broker unavailable"):
            await asyncio.wait_for(broker.publish(REQUESTED, {"execution_id": 0}), WAIT)

        await proxy.start()  # the same port: the robust connection reconnects by itself
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while True:
            try:
                await broker.publish(REQUESTED, {"execution_id": 1})
                await broker.publish(CANCEL, {"execution_id": 1})
                break
            except Unavailable:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.05)
        assert await broker.ping()
        await eventually(lambda: bool(shared) and bool(private), "restored consumers to deliver")
        assert [e.payload for e in shared] == [{"execution_id": 1}]
        assert [e.payload for e in private] == [{"execution_id": 1}]
    finally:
        await proxy.start()
        await asyncio.wait_for(broker.close(), WAIT)
        await asyncio.wait_for(broker.delete_topology(), WAIT)
        proxy.cut()


async def test_backlog_counts_the_messages_waiting_in_a_shared_queue(connect: Connect) -> None:
    broker = await connect()
    assert await broker.backlog("nobody-consumes-this") is None  # no such queue
    release = asyncio.Event()
    got: list[Envelope] = []

    async def held(envelope: Envelope) -> None:
        got.append(envelope)
        await release.wait()

    subscription = await broker.consume("held", [REQUESTED], held, prefetch=1)
    for i in range(4):
        await broker.publish(REQUESTED, {"execution_id": i})
    await eventually(lambda: len(got) == 1, "the one message the handler holds")
    # One taken (held by the handler); the other three wait.
    await eventually(lambda: _is(broker.backlog("held"), 3), "three messages waiting")
    release.set()
    await delivered(broker, lambda: len(got) == 4, "every message handled")
    await delivered(broker, lambda: _is(broker.backlog("held"), 0), "an empty queue")
    await subscription.cancel()


async def _is(count: Awaitable[int | None], expected: int) -> bool:
    return await count == expected


@pytest.mark.rabbitmq
async def test_publishes_are_confirmed_while_the_event_loop_is_busy(
    rabbit: Callable[[], AmqpBroker],
) -> None:
    """A server busy with requests still gets its publishes confirmed: each publish must not
    hold its channel into the next turn of the loop (a turn of tens of ms when busy), else
    they go one per turn and time out (aio-pika's default publish did: about 10/s)."""
    broker = rabbit()
    await broker.start()
    await broker.consume("busy", [REQUESTED], collector([]))
    stop = asyncio.Event()

    async def request_work() -> None:  # about 1 ms of CPU per step, like a request handler
        while not stop.is_set():
            sum(range(15_000))
            await asyncio.sleep(0)

    busy = [asyncio.create_task(request_work()) for _ in range(50)]
    try:
        publishes = [
            asyncio.create_task(broker.publish(REQUESTED, {"execution_id": i})) for i in range(200)
        ]
        done, pending = await asyncio.wait(publishes, timeout=8.0)
    finally:
        stop.set()
        await asyncio.gather(*busy)
    assert not pending, f"{len(pending)} of 200 publishes not confirmed within 8 s"
    assert all(t.exception() is None for t in done), [t.exception() for t in done][:3]


def test_importing_the_amqp_broker_changes_nothing_in_aiormq() -> None:
    probe = (
        "import aiormq, engine.broker.amqp as amqp; "
        "assert aiormq.Connection.FRAME_BUFFER_SIZE < amqp.FRAME_BUFFER_SIZE; print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.rabbitmq
async def test_the_connection_queues_enough_frames_for_a_burst_of_publishes(
    rabbit: Callable[[], AmqpBroker],
) -> None:
    broker = rabbit()
    await broker.start()
    assert broker._connection is not None
    transport = broker._connection.transport
    assert transport is not None
    assert transport.connection.write_queue.maxsize == amqp.FRAME_BUFFER_SIZE


# -- MemoryBroker.join: tests wait on the work, not on the clock ---------------------------------


async def test_join_returns_once_every_published_message_is_handled() -> None:
    broker = MemoryBroker()
    await broker.start()
    got: list[int] = []

    async def slow(envelope: Envelope) -> None:
        await asyncio.sleep(0.01 * (envelope.payload["n"] % 3))
        got.append(envelope.payload["n"])

    try:
        await asyncio.wait_for(broker.join(), WAIT)  # nothing published: at once
        await broker.consume("requested", [REQUESTED], slow, prefetch=4)
        await broker.consume(None, [CANCEL], collector([]))
        for n in range(10):
            await broker.publish(REQUESTED, {"n": n})
        await broker.publish(CANCEL, {"execution_id": 1})
        await asyncio.wait_for(broker.join(), WAIT)
        assert sorted(got) == list(range(10))
    finally:
        await broker.close()


async def test_join_waits_for_what_the_handlers_publish_and_for_failed_handlers() -> None:
    broker = MemoryBroker()
    await broker.start()
    finished: list[int] = []

    async def ring_completed(envelope: Envelope) -> None:
        await asyncio.sleep(0)
        if envelope.payload["execution_id"] == 0:
            raise RuntimeError("handler exploded")  # handled (and dropped) all the same
        await broker.publish(COMPLETED, envelope.payload)

    async def record(envelope: Envelope) -> None:
        await asyncio.sleep(0.01)
        finished.append(envelope.payload["execution_id"])

    try:
        await broker.consume("requested", [REQUESTED], ring_completed)
        await broker.consume("completed", [COMPLETED], record)
        for execution_id in range(3):
            await broker.publish(REQUESTED, {"execution_id": execution_id})
        await asyncio.wait_for(broker.join(), WAIT)
        assert sorted(finished) == [1, 2]
    finally:
        await broker.close()


async def test_join_does_not_wait_for_a_queue_nobody_consumes() -> None:
    broker = MemoryBroker()
    await broker.start()
    try:
        subscription = await broker.consume("requested", [REQUESTED], collector([]))
        await subscription.cancel()
        await broker.publish(REQUESTED, {"execution_id": 1})  # waits in the queue for a worker
        await asyncio.wait_for(broker.join(), WAIT)
        assert await broker.backlog("requested") == 1
    finally:
        await broker.close()
