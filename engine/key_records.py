"""The key-value store's record (a key as stored) and the repository that keeps keys.

Pure Python: the SQL is in :mod:`engine.storage.keys`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from engine.storage import Conn


@dataclass(frozen=True, slots=True)
class KeyValue:
    """A key as stored: its value wrapped (``{"v": value}``) or, when encrypted, sealed."""

    id: int
    ref: str
    owner_type: str
    owner: str | None
    owner_identity: int | None
    owner_pack: int | None
    owner_pack_ref: str | None
    owner_action: int | None
    owner_action_ref: str | None
    owner_sensor: int | None
    owner_sensor_ref: str | None
    name: str
    encrypted: bool
    value: Any
    sealed: str | None
    expires_at: datetime | None
    created: datetime
    updated: datetime


@dataclass(frozen=True, slots=True)
class KeyContent:
    """What holds a key's value: ``{"v": value}`` as JSON, or sealed when encrypted."""

    encrypted: bool
    value: Any
    sealed: str | None


@dataclass(frozen=True, slots=True)
class NewKey:
    ref: str
    owner_type: str
    owner: str | None
    owner_identity: int | None
    owner_pack: int | None
    owner_pack_ref: str | None
    owner_action: int | None
    owner_action_ref: str | None
    owner_sensor: int | None
    owner_sensor_ref: str | None
    name: str
    content: KeyContent
    expires_at: datetime | None
    created: datetime


@dataclass(frozen=True, slots=True)
class KeyChange:
    """What an update sets (a field left None is kept)."""

    updated: datetime
    name: str | None = None
    content: KeyContent | None = None
    #: Whether the expiry is set (to ``expires_at``; None: never expires).
    set_expiry: bool = False
    expires_at: datetime | None = None


class KeyRepository(Protocol):
    async def page(
        self,
        *,
        identity: int | None,
        owner_type: str | None,
        owner: str | None,
        now: datetime,
        page: int,
        per_page: int,
    ) -> tuple[list[KeyValue], int]:
        """Live keys by ref (those owned by an identity only when it is ``identity``), and
        how many there are."""
        ...

    async def by_ref(self, ref: str) -> KeyValue | None:
        """The key (live or not)."""
        ...

    async def drop_if_expired(self, key_id: int, now: datetime) -> None: ...

    async def add(self, conn: Conn, key: NewKey) -> KeyValue | None:
        """Insert a key after removing an expired one of its ref (expired at its creation);
        None when a live key has that ref."""
        ...

    async def change(self, conn: Conn, key_id: int, change: KeyChange) -> KeyValue | None:
        """Update a key; None when it is gone."""
        ...

    async def remove(self, conn: Conn, key_id: int) -> bool: ...

    async def purge_expired(self, now: datetime) -> int: ...

    async def user_id(self, login: str) -> int | None: ...

    async def pack_id(self, ref: str) -> int | None: ...

    async def action_id(self, ref: str) -> int | None: ...
