"""In-process broker: the embedded default and the test double. Same semantics as RabbitMQ's
topic exchange for our use: shared queues distribute, private queues broadcast.

As a test double it also tells when the work it was given is done: :meth:`MemoryBroker.join`
waits until every message routed to a consumed queue has been handled, so a test waits on the
work, not on the clock."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.broker import Envelope, Handler, topic_matches

log = logging.getLogger(f"attune.{__name__}")


@dataclass
class _Queue:
    keys: list[str]
    messages: asyncio.Queue[Envelope] = field(default_factory=asyncio.Queue)
    #: Messages put here and not yet handled (waiting, or with a handler running).
    unfinished: int = 0
    #: Subscriptions consuming from this queue and not cancelled.
    consumers: set[_Subscription] = field(default_factory=set)


@dataclass(eq=False)
class _Subscription:
    """One consume() call: its pump tasks, and which of them wait for a message."""

    queue: _Queue
    progress: asyncio.Event
    pumps: set[asyncio.Task[None]] = field(default_factory=set)
    waiting: set[asyncio.Task[None]] = field(default_factory=set)
    stopped: bool = False

    async def cancel(self) -> None:
        self.queue.consumers.discard(self)
        self.progress.set()
        self.stopped = True
        for task in list(self.waiting):
            task.cancel()


class MemoryBroker:
    def __init__(self) -> None:
        self._queues: dict[str, _Queue] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False
        self.published = 0
        #: Set whenever a message is handled or a consumer goes: :meth:`join` looks again.
        self._progress = asyncio.Event()

    async def start(self) -> None:
        self._closed = False

    async def close(self) -> None:
        self._closed = True
        for queue in self._queues.values():
            queue.consumers.clear()
        self._progress.set()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks.clear()

    async def ping(self) -> bool:
        return not self._closed

    async def backlog(self, name: str) -> int | None:
        queue = self._queues.get(name)
        return None if queue is None else queue.messages.qsize()

    async def publish(self, routing_key: str, payload: dict[str, Any]) -> None:
        envelope = Envelope(message_type=routing_key, payload=payload)
        self.published += 1
        for queue in self._queues.values():
            if any(topic_matches(k, routing_key) for k in queue.keys):
                queue.messages.put_nowait(envelope)
                queue.unfinished += 1

    async def join(self) -> None:
        """Wait until every message published so far to a queue with a consumer has been
        handled (its handler returned or raised), and so have the messages those handlers
        published meanwhile. A queue nobody consumes is not waited for; nor is work a handler
        started in the background and did not await."""
        while any(q.consumers and q.unfinished for q in self._queues.values()):
            self._progress.clear()
            await self._progress.wait()

    async def consume(
        self, name: str | None, routing_keys: Sequence[str], handler: Handler, *, prefetch: int = 16
    ) -> _Subscription:
        qname = name or f"private.{uuid.uuid4().hex}"
        queue = self._queues.setdefault(qname, _Queue(keys=list(routing_keys)))
        for key in routing_keys:
            if key not in queue.keys:
                queue.keys.append(key)
        subscription = _Subscription(queue, self._progress)
        queue.consumers.add(subscription)
        for _ in range(max(1, prefetch)):
            task = asyncio.create_task(
                self._pump(queue, handler, subscription), name=f"memory-broker:{qname}"
            )
            self._tasks.add(task)
            subscription.pumps.add(task)
            task.add_done_callback(self._tasks.discard)
        return subscription

    async def _pump(self, queue: _Queue, handler: Handler, subscription: _Subscription) -> None:
        me = asyncio.current_task()
        assert me is not None
        while not subscription.stopped:
            subscription.waiting.add(me)
            try:
                envelope = await queue.messages.get()
            except asyncio.CancelledError:
                if subscription.stopped:
                    return
                raise
            finally:
                subscription.waiting.discard(me)
            try:
                await handler(envelope)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "handler failed for %s %s; message dropped",
                    envelope.message_type,
                    envelope.payload,
                )
            finally:
                queue.unfinished -= 1
                self._progress.set()
