"""Attune's notifier messages (``execution_created``, ``execution_status_changed``) for the
changes this process makes, to whoever listens: the ``/ws`` clients of Attune's web UI.

A listener holds its subscription filters (Attune's: ``all``, ``entity_type:T``,
``entity:T:ID``, ``user:ID``, ``notification_type:T``) and a bounded queue; a listener too slow
to keep up loses the oldest news, never slows the engine. With nobody listening a publish is
one attribute check. In a cluster each API process hears the changes it makes itself (a
worker's transitions happen in the worker's process): the UI refreshes the rest when it
fetches.

A watcher (:meth:`Notifier.watch`: the change feed of :mod:`engine.changes`, while a stream
is open) is called on every change, before any message is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

#: Notifications a listener may have waiting before the oldest are dropped.
QUEUE_SIZE = 256


@dataclass(eq=False)  # each listener is itself (kept in a set)
class Listener:
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    filters: set[str] = field(default_factory=set)
    dropped: int = 0

    def wants(self, note: dict[str, Any]) -> bool:
        if not self.filters:
            return False
        kind, entity_id = note["entity_type"], note["entity_id"]
        return bool(
            {
                "all",
                f"entity_type:{kind}",
                f"entity:{kind}:{entity_id}",
                f"notification_type:{note['notification_type']}",
                f"user:{note.get('user_id')}",
            }
            & self.filters
        )

    def offer(self, note: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(note)


class Notifier:
    def __init__(self) -> None:
        self._listeners: set[Listener] = set()
        self._watchers: list[Callable[[], None]] = []

    @property
    def listening(self) -> bool:
        return bool(self._listeners or self._watchers)

    def watch(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` on each change of this process (until :meth:`unwatch`)."""
        self._watchers.append(wake)

    def unwatch(self, wake: Callable[[], None]) -> None:
        if wake in self._watchers:
            self._watchers.remove(wake)

    def listen(self) -> Listener:
        listener = Listener()
        self._listeners.add(listener)
        return listener

    def forget(self, listener: Listener) -> None:
        self._listeners.discard(listener)

    def publish(
        self,
        notification_type: str,
        entity_type: str,
        entity_id: int,
        payload: dict[str, Any],
        user_id: int | None = None,
    ) -> None:
        for wake in self._watchers:
            wake()
        if not self._listeners:
            return
        note = {
            "notification_type": notification_type,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "user_id": user_id,
            "payload": {"entity_type": entity_type, "entity_id": entity_id, **payload},
            "timestamp": datetime.now(UTC).isoformat(),
        }
        for listener in self._listeners:
            if listener.wants(note):
                listener.offer(note)
