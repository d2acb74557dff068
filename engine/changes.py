"""The change feed: one per process, it tells its subscribers (the SSE streams of
``GET /api/v1/executions/stream``, ``attune run --wait``) of every execution that changed,
whichever process changed it.

It reads the executions in ``(updated, id)`` order past its high-water mark from the database,
so a worker process's changes are seen too: every :data:`POLL_S` while at least one subscriber
listens (never with nobody listening), and at once when this process changes an execution
(:meth:`engine.notifications.Notifier.watch`). A change committed late (its ``updated`` stamped
before an earlier-read one committed) is not missed: each read goes back :data:`LAG_S` behind
the mark and skips the ``(execution id, updated)`` pairs already sent.

An event is the execution's state when read: two changes between reads arrive as one (the
latest). A subscriber holds a bounded queue; one that falls :data:`QUEUE_SIZE` changes behind
is dropped (closed), never buffered without bound. The cursor of an event (:func:`cursor_of`)
names a point in time; :meth:`ChangeFeed.replay` sends again every execution changed since a
cursor (from :data:`LAG_S` before it: a reconnecting client may see its last few events
again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from engine.background import cancel_and_wait
from engine.clock import now_utc
from engine.errors import EngineError, InvalidRequest
from engine.notifications import Notifier
from engine.records import Execution, StoredExecution
from engine.storage import Store
from engine.storage.changes import ExecutionChanges

log = logging.getLogger(f"attune.{__name__}")

#: Pause between two reads of the database while someone listens (another process's changes
#: are sent within about this long).
POLL_S = 0.25
#: How far behind its mark each read looks again, for changes committed late (also covers a
#: small clock difference between processes).
LAG_S = 2.0
#: After a wake, the feed waits this long before reading, so that a burst of changes (a busy
#: server) is read once, not once per change.
GATHER_S = 0.01
#: Rows per read (a read continues page by page).
BATCH = 500
#: Changes a subscriber may have waiting; one more and it is dropped.
QUEUE_SIZE = 1000
#: At most one warning about a failed read this often.
WARN_EVERY_S = 30.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Accept = Callable[[Execution], bool]


def cursor_of(at: datetime, execution_id: int) -> str:
    """An event id: microseconds since the epoch of ``at``, and the execution's id."""
    return f"{(at - _EPOCH) // timedelta(microseconds=1)}-{execution_id}"


def parse_cursor(text: str) -> datetime:
    """The time of an event id from :func:`cursor_of`; InvalidRequest when it is not one."""
    head, _, tail = text.strip().partition("-")
    if not (_digits(head) and _digits(tail)) or len(head) > 18 or len(tail) > 19:
        raise InvalidRequest(
            f"Last-Event-ID '{text[:60]}' is not an event id of this stream "
            "(expected <microseconds>-<execution id>)"
        )
    try:
        return _EPOCH + timedelta(microseconds=int(head))
    except OverflowError:  # past the year 9999: no event of this stream is named so
        raise InvalidRequest(
            f"Last-Event-ID '{text[:60]}' names a time no event of this stream has"
        ) from None


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


class ExecutionChange:
    """One execution's state as an event: its record, its cursor, and (built once, for every
    subscriber) Attune's notification JSON."""

    __slots__ = ("_data", "cursor", "execution")

    def __init__(self, execution: Execution, at: datetime) -> None:
        self.execution = execution
        self.cursor = cursor_of(at, execution.id)
        self._data: str | None = None

    @property
    def key(self) -> tuple[int, datetime]:
        return self.execution.id, self.execution.updated

    @property
    def data(self) -> str:
        if self._data is None:
            self._data = orjson.dumps(notification(self.execution)).decode()
        return self._data


def notification(execution: Execution) -> dict[str, Any]:
    """Attune's notifier message for an execution's current state (as ``/ws`` sends)."""
    kind = "created" if execution.updated == execution.created else "status_changed"
    return {
        "notification_type": f"execution_{kind}",
        "entity_type": "execution",
        "entity_id": execution.id,
        "user_id": execution.executor,
        "payload": {"entity_type": "execution", "entity_id": execution.id, **execution.as_dict()},
        "timestamp": execution.updated.isoformat(),
    }


class Subscription:
    """A subscriber's bounded queue of changes it accepts."""

    def __init__(self, accept: Accept, limit: int) -> None:
        self.accept = accept
        self.limit = limit
        self.closed = False
        #: Closed because it fell :attr:`limit` changes behind.
        self.dropped = False
        self._items: deque[ExecutionChange] = deque()
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def offer(self, change: ExecutionChange) -> bool:
        """Queue ``change``; False (and closed) when the queue was full."""
        if self.closed:
            return False
        if len(self._items) >= self.limit:
            self.dropped = True
            self.close()
            return False
        self._items.append(change)
        self._ready.set()
        return True

    def close(self) -> None:
        """No more changes: :meth:`next` returns None (what was queued is let go)."""
        self.closed = True
        self._items.clear()
        self._ready.set()

    async def next(self) -> ExecutionChange | None:
        """The next change, waiting for one; None once closed."""
        while not self._items:
            if self.closed:
                return None
            self._ready.clear()
            await self._ready.wait()
        if self.closed:
            return None
        return self._items.popleft()


class ChangeFeed:
    def __init__(
        self,
        store: Store,
        notifier: Notifier | None,
        *,
        poll_s: float = POLL_S,
        lag_s: float = LAG_S,
        batch: int = BATCH,
        queue_size: int = QUEUE_SIZE,
    ) -> None:
        self.reader = ExecutionChanges(store)
        self.notifier = notifier
        self.poll_s = poll_s
        self.lag = timedelta(seconds=lag_s)
        self.batch = batch
        self.queue_size = queue_size
        self._subs: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._wake_up = self._wake.set
        #: The newest ``updated`` read, and the (id, updated) pairs sent within LAG_S of it.
        self._high = now_utc()
        self._seen: set[tuple[int, datetime]] = set()
        self._last_warning = -WARN_EVERY_S
        self._closed = False

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def subscribe(self, accept: Accept, *, queue_size: int | None = None) -> Subscription:
        """A subscription to the changes ``accept`` takes, from now on."""
        sub = Subscription(accept, queue_size or self.queue_size)
        if self._closed:
            sub.close()
            return sub
        self._subs.add(sub)
        if self._task is None:
            self._high, self._seen = now_utc(), set()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="change-feed")
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()
        self._subs.discard(sub)
        if not self._subs:
            self._wake.set()  # the loop ends now, not at its next read

    async def close(self) -> None:
        """Close every subscription and stop reading (at shutdown)."""
        self._closed = True
        for sub in list(self._subs):
            self.unsubscribe(sub)
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def replay(
        self, since: datetime, *, only: int | None = None
    ) -> AsyncIterator[list[ExecutionChange]]:
        """Every execution changed since ``since`` (from :data:`LAG_S` before it), page by
        page, oldest change first; ``only``: that execution alone."""
        after, after_id = since - self.lag, 0
        while True:
            rows = await self.reader.after(after, after_id, self.batch, only=only)
            if rows:
                yield [ExecutionChange(r.record(), r.updated) for r in rows]
            if len(rows) < self.batch:
                return
            after, after_id = rows[-1].updated, rows[-1].id

    async def _run(self) -> None:
        if self.notifier is not None:
            self.notifier.watch(self._wake_up)
        try:
            while self._subs:
                self._wake.clear()
                try:
                    await self._poll()
                except Exception as exc:  # the database is away: read again next round
                    now = time.monotonic()
                    if now - self._last_warning >= WARN_EVERY_S:
                        self._last_warning = now
                        if isinstance(exc, EngineError):
                            log.warning("change feed: cannot read changes: %s", exc.message)
                        else:
                            log.exception("change feed: reading changes failed")
                if not self._subs:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_s):
                        await self._wake.wait()
                await asyncio.sleep(GATHER_S)  # changes made together are read together
        finally:
            if self.notifier is not None:
                self.notifier.unwatch(self._wake_up)
            if self._task is asyncio.current_task():
                self._task = None

    async def _poll(self) -> None:
        """Read the ``(id, updated)`` pairs past the mark less the lag (from the index), then
        the rows of those not sent yet."""
        after, after_id = self._high - self.lag, 0
        while True:
            keys = await self.reader.keys_after(after, after_id, self.batch)
            fresh = [i for i, updated in keys if (i, updated) not in self._seen]
            rows = await self.reader.rows(fresh)
            for row in sorted(rows, key=lambda r: (r.updated, r.id)):
                self._take(row)
            if len(keys) < self.batch:
                break
            after, after_id = keys[-1][1], keys[-1][0]
        horizon = self._high - self.lag
        self._seen = {key for key in self._seen if key[1] >= horizon}

    def _take(self, row: StoredExecution) -> None:
        key = (row.id, row.updated)
        if key in self._seen:
            return
        self._seen.add(key)
        if row.updated > self._high:
            self._high = row.updated
        change: ExecutionChange | None = None
        for sub in list(self._subs):
            if change is None:
                change = ExecutionChange(row.record(), self._high)
            if sub.accept(change.execution) and not sub.offer(change):
                self._subs.discard(sub)
                log.info(
                    "change stream dropped: %d changes waiting (a client too slow to read)",
                    sub.limit,
                )
