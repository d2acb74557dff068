"""RabbitMQ implementation of the broker seam (aio-pika).

Topology
    One durable *topic* exchange (``attune.executions`` by default). A shared consumer
    (``consume("requested", ...)``) declares a durable queue named ``f"{exchange}.{name}"``; every
    process consuming that name competes for its messages. A private consumer (``name=None``)
    declares an exclusive, auto-delete queue ``f"{exchange}.private.<hex>"`` that lives as long as
    its connection, so every private consumer receives every matching message. Each queue is
    bound to the exchange once per routing key (topic patterns such as ``execution.*`` work).

Guarantees
    ``publish`` sends a persistent message (delivery mode 2) on a channel with publisher
    confirms and returns only once RabbitMQ has acknowledged it, i.e. once any durable queue it
    was routed to holds it on disk. Confirms are awaited outside aiormq's write lock, so
    concurrent publishes on the one channel are pipelined rather than serialized. Messages that
    match no queue are dropped (``mandatory=False``), as with :class:`MemoryBroker`: the
    database, not the broker, holds the state. Consumers ack after the handler returns and
    reject (without requeue) when it raises or the body is not an :class:`Envelope`; a message
    whose handler is interrupted by ``close()`` or a lost connection is left unacked, so
    RabbitMQ redelivers it. The connection is robust: after a network failure aio-pika
    reconnects and restores channels, queues, bindings and consumers.

Every driver exception is translated to :class:`engine.errors.Unavailable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aio_pika
import aiormq
import pamqp.exceptions
from aio_pika.abc import (
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from pydantic import ValidationError

from engine.broker import Envelope, Handler
from engine.errors import Unavailable

log = logging.getLogger(f"attune.{__name__}")

#: Frames aiormq may queue for a connection's socket writer (its default: 10). See
#: :func:`_widen_frame_buffer`.
FRAME_BUFFER_SIZE = 4096

# What the driver raises when RabbitMQ is unreachable, refuses us or drops the connection.
_DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    pamqp.exceptions.PAMQPException,
    ConnectionError,
    OSError,
    RuntimeError,  # includes aiormq's ChannelInvalidStateError
    TimeoutError,
)


def _widen_frame_buffer() -> None:
    """Let aiormq queue up to :data:`FRAME_BUFFER_SIZE` frames for each connection's writer.

    Why: aiormq queues at most ``Connection.FRAME_BUFFER_SIZE`` (10) frames for its socket
    writer. A publish that finds that queue full waits, holding its channel's lock, for the
    writer's next turn of the event loop: on a busy server (a turn of tens of ms) publishes
    crawled at about 10/s and timed out (measured with 50 busy tasks on the loop: 31
    confirmed/s; 300/s, all of them, with a larger queue). The bound stays, well above one
    burst of publishes.

    How: aiormq sizes a connection's queue from that class attribute when it builds the
    connection (aio-pika builds one on connect and on every reconnect) and takes no argument
    for it, so the attribute is raised, for the whole process, just before this broker
    connects; it is never lowered (another user of aiormq in the process keeps a larger one)."""
    if aiormq.Connection.FRAME_BUFFER_SIZE < FRAME_BUFFER_SIZE:
        aiormq.Connection.FRAME_BUFFER_SIZE = FRAME_BUFFER_SIZE


def _unavailable(exc: BaseException) -> Unavailable:
    detail = str(exc) or type(exc).__name__
    return Unavailable(f"message broker unavailable: {detail}")


class AmqpBroker:
    """A :class:`engine.broker.Broker` backed by RabbitMQ."""

    def __init__(
        self,
        url: str,
        exchange: str = "attune.executions",
        *,
        connect_timeout: float = 10.0,
        publish_timeout: float = 10.0,
        close_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.exchange = exchange
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._close_timeout = close_timeout
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self._shared_queues: set[str] = set()
        self._connector: asyncio.Task[None] | None = None
        self._pending: list[tuple[str | None, list[str], Handler, int, _AmqpSubscription]] = []

    async def start(self) -> None:
        if self._connection is not None:
            return
        _widen_frame_buffer()  # before the connection is built: aiormq reads it then
        try:
            async with asyncio.timeout(self._connect_timeout):
                connection = await aio_pika.connect_robust(self.url, timeout=self._connect_timeout)
                try:
                    channel = connection.channel(publisher_confirms=True)
                    await channel.initialize()
                    self._exchange = await channel.declare_exchange(
                        self.exchange, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                except BaseException:
                    with contextlib.suppress(Exception):
                        await connection.close()
                    raise
        except _DRIVER_ERRORS as exc:
            raise _unavailable(exc) from exc
        self._connection, self._channel = connection, channel

    async def ping(self) -> bool:
        conn = self._connection
        return conn is not None and not conn.is_closed and conn.connected.is_set()

    async def backlog(self, name: str) -> int | None:
        """Ready messages in ``<exchange>.<name>`` (a passive declare on a short-lived
        channel); None when not connected, or the queue does not exist."""
        connection = self._connection
        if connection is None or connection.is_closed:
            return None
        try:
            async with asyncio.timeout(self._connect_timeout):
                async with connection.channel(publisher_confirms=False) as channel:
                    queue = await channel.declare_queue(f"{self.exchange}.{name}", passive=True)
                    count = queue.declaration_result.message_count
        except _DRIVER_ERRORS:  # a queue that does not exist closes the channel (404)
            return None
        return count if isinstance(count, int) else None

    async def publish(self, routing_key: str, payload: dict[str, Any]) -> None:
        exchange = self._exchange
        if exchange is None:
            raise Unavailable("message broker unavailable: not connected")
        envelope = Envelope(message_type=routing_key, payload=payload)
        message = aio_pika.Message(
            body=envelope.model_dump_json().encode(),
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            message_id=envelope.message_id,
            timestamp=envelope.timestamp,
            type=envelope.message_type,
        )
        try:
            async with asyncio.timeout(self._publish_timeout):
                publisher = self._channel
                if publisher is None or publisher.is_closed:
                    raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
                channel = await publisher.get_underlay_channel()
                assert isinstance(channel, aiormq.Channel)  # its publish can skip the wait
                # As Exchange.publish, but with wait=False: the channel's lock is released as
                # soon as the frames are queued, not once they are flushed. With wait=True
                # each publish held the lock into the next turn of the event loop, so on a
                # busy server publishes went one per turn, about 10/s (measured), and timed
                # out. The broker's confirm is still awaited: durability is unchanged.
                confirmation = await channel.basic_publish(
                    message.body,
                    exchange=exchange.name,
                    routing_key=routing_key,
                    properties=message.properties,
                    mandatory=False,
                    wait=False,
                )
        except _DRIVER_ERRORS as exc:
            raise _unavailable(exc) from exc
        if not isinstance(confirmation, aiormq.spec.Basic.Ack):
            raise Unavailable(f"message broker did not confirm the message: {confirmation!r}")

    async def consume(
        self, name: str | None, routing_keys: Sequence[str], handler: Handler, *, prefetch: int = 16
    ) -> _AmqpSubscription:
        connection = self._connection
        if connection is None and self._connector is not None:
            # Not connected yet: the consumer starts as soon as the connection is made.
            pending = _AmqpSubscription(self, None, "")
            self._pending.append((name, list(routing_keys), handler, prefetch, pending))
            return pending
        if connection is None:
            raise Unavailable("message broker unavailable: not connected")
        shared = name is not None
        qname = f"{self.exchange}.{name if shared else 'private.' + uuid.uuid4().hex}"
        channel = connection.channel(publisher_confirms=False)
        try:
            async with asyncio.timeout(self._connect_timeout):
                await channel.initialize()
                await channel.set_qos(prefetch_count=max(1, prefetch))
                queue = await channel.declare_queue(
                    qname, durable=shared, exclusive=not shared, auto_delete=not shared
                )
                if shared:
                    self._shared_queues.add(qname)
                for key in routing_keys:
                    await queue.bind(self.exchange, routing_key=key)
                tag = await queue.consume(self._callback(handler))
        except BaseException as exc:
            # Do not leave a half-built channel for the robust connection to restore.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(channel.close(), self._close_timeout)
            if isinstance(exc, _DRIVER_ERRORS):
                raise _unavailable(exc) from exc
            raise
        self._consumers.append((queue, tag))
        return _AmqpSubscription(self, queue, tag)

    def start_in_background(self, retry_s: float = 2.0) -> None:
        """Keep trying to connect (every ``retry_s``) without blocking the caller; consumers
        asked for meanwhile start once connected. For processes that must come up while
        RabbitMQ is down (workers then claim work from the database)."""
        if self._connector is None:
            self._connector = asyncio.create_task(self._connect_loop(retry_s), name="amqp-connect")

    async def _connect_loop(self, retry_s: float) -> None:
        while self._connection is None:
            try:
                await self.start()
            except Unavailable as exc:
                log.info("still no broker (%s); next try in %.0f s", exc.message, retry_s)
                await asyncio.sleep(retry_s)
        pending, self._pending = self._pending, []
        for name, keys, handler, prefetch, subscription in pending:
            if subscription.cancelled:
                continue
            try:
                real = await self.consume(name, keys, handler, prefetch=prefetch)
            except Unavailable as exc:
                log.error("could not start a consumer after connecting: %s", exc.message)
                continue
            subscription.attach(real)
        log.info("connected to the broker")
        self._connector = None

    async def _cancel_consumer(self, queue: AbstractQueue, tag: str) -> None:
        if (queue, tag) not in self._consumers:
            return
        self._consumers.remove((queue, tag))
        try:
            await queue.cancel(tag, timeout=self._close_timeout)
        except _DRIVER_ERRORS as exc:
            log.warning("could not cancel consumer %s: %s", tag, exc)

    def _callback(self, handler: Handler) -> Callable[[AbstractIncomingMessage], Awaitable[None]]:
        """aio-pika runs this as a task per delivery, so up to ``prefetch`` run at once."""

        async def on_message(message: AbstractIncomingMessage) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._inflight.add(task)
            try:
                await self._handle(message, handler)
            finally:
                if task is not None:
                    self._inflight.discard(task)

        return on_message

    async def _handle(self, message: AbstractIncomingMessage, handler: Handler) -> None:
        try:
            envelope = Envelope.model_validate_json(message.body)
        except ValidationError:
            log.error(
                "dropping malformed message %s on %s: %.200r",
                message.message_id,
                message.routing_key,
                message.body,
            )
            await self._settle(message, ack=False)
            return
        try:
            await handler(envelope)
        except asyncio.CancelledError:
            raise  # close() or a lost connection: left unacked, RabbitMQ redelivers it
        except Exception:
            log.exception(
                "handler failed for %s %s; message dropped", envelope.message_type, envelope.payload
            )
            await self._settle(message, ack=False)
        else:
            await self._settle(message, ack=True)

    @staticmethod
    async def _settle(message: AbstractIncomingMessage, *, ack: bool) -> None:
        try:
            if ack:
                await message.ack()
            else:
                await message.reject(requeue=False)
        except _DRIVER_ERRORS as exc:
            # The channel went away: RabbitMQ will redeliver the message on reconnect.
            log.warning(
                "could not %s message %s: %s", "ack" if ack else "reject", message.message_id, exc
            )

    async def close(self) -> None:
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
            self._connector = None
        connection = self._connection
        if connection is None:
            return
        consumers, inflight = list(self._consumers), list(self._inflight)
        self._connection = self._channel = self._exchange = None
        self._consumers.clear()
        step = self._close_timeout / 2
        if connection.connected.is_set():
            cancels = [queue.cancel(tag, timeout=step) for queue, tag in consumers]
            with contextlib.suppress(*_DRIVER_ERRORS):
                await asyncio.wait_for(asyncio.gather(*cancels, return_exceptions=True), step)
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.wait(inflight, timeout=step)
        try:
            await asyncio.wait_for(connection.close(), step)
        except _DRIVER_ERRORS as exc:
            log.warning("closing the broker connection failed: %s", exc)

    async def delete_topology(self) -> None:
        """Delete the shared queues this broker declared and its exchange (for tests)."""
        temporary: AbstractConnection | None = None
        connection: AbstractConnection | None = self._connection
        try:
            async with asyncio.timeout(self._connect_timeout):
                if connection is None or not connection.connected.is_set():
                    connection = temporary = await aio_pika.connect(self.url)
                for qname in sorted(self._shared_queues):
                    async with connection.channel() as channel:
                        await channel.queue_delete(qname, if_unused=False, if_empty=False)
                async with connection.channel() as channel:
                    await channel.exchange_delete(self.exchange)
        except _DRIVER_ERRORS as exc:
            raise _unavailable(exc) from exc
        finally:
            if temporary is not None:
                with contextlib.suppress(*_DRIVER_ERRORS):
                    await temporary.close()
        self._shared_queues.clear()


class _AmqpSubscription:
    """Cancels one consumer (basic.cancel); deliveries already handed out run to the end.
    A subscription made before the connection is attached to its consumer later."""

    def __init__(self, broker: AmqpBroker, queue: AbstractQueue | None, tag: str) -> None:
        self._broker, self._queue, self._tag = broker, queue, tag
        self.cancelled = False

    def attach(self, real: _AmqpSubscription) -> None:
        self._queue, self._tag = real._queue, real._tag

    async def cancel(self) -> None:
        self.cancelled = True
        if self._queue is not None:
            await self._broker._cancel_consumer(self._queue, self._tag)
