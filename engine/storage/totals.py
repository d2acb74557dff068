"""Totals for paged lists that stay fast on large tables.

A list's ``total`` is exact up to :data:`EXACT_UPTO` matching rows (counting stops there, so
the cost is bounded). Past that, the full count is kept per filter and served for up to
``max_age_s``; a stale one is served while a recount runs in the background, so a page of a
table with millions of rows never waits on a full count after its first one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable, Sequence
from typing import Any

from cachetools import LRUCache
from sqlalchemy import ColumnElement, Table, and_, func, literal, select, true

from engine.storage.store import Store

#: Totals up to this many rows are always exact.
EXACT_UPTO = 10_000
#: Filters whose large totals are remembered at most (the least recently used goes).
_MAX_KEYS = 256


class Totals:
    def __init__(self, store: Store, *, max_age_s: float = 5.0) -> None:
        self.store = store
        self.max_age_s = max_age_s
        self._large: LRUCache[Hashable, tuple[float, int]] = LRUCache(maxsize=_MAX_KEYS)
        self._recounting: dict[Hashable, asyncio.Task[int]] = {}

    async def count(
        self, table: Table, where: Sequence[ColumnElement[bool]], key: Hashable | None = None
    ) -> int:
        """Rows of ``table`` matching ``where``; ``key`` names the filter (same key, same
        ``where``; by default the filter's SQL with its values)."""
        bounded = select(func.count()).select_from(
            select(literal(1)).select_from(table).where(*where).limit(EXACT_UPTO + 1).subquery()
        )
        async with self.store.read(offload=True) as conn:
            n = int((await conn.execute(bounded)).scalar_one())
        if key is None:
            key = _describe(table, where)
        if n <= EXACT_UPTO:
            self._large.pop(key, None)
            return n
        cached = self._large.get(key)
        if cached is None:
            return await self._recount(table, where, key)
        if time.monotonic() - cached[0] > self.max_age_s and key not in self._recounting:
            task = asyncio.get_running_loop().create_task(self._recount(table, where, key))
            task.add_done_callback(_quiet)
        return cached[1]

    async def _recount(
        self, table: Table, where: Sequence[ColumnElement[bool]], key: Hashable
    ) -> int:
        running = self._recounting.get(key)
        if running is not None:
            return await asyncio.shield(running)
        task = asyncio.get_running_loop().create_task(self._full(table, where))
        self._recounting[key] = task
        try:
            n = await asyncio.shield(task)
        finally:
            self._recounting.pop(key, None)
        self._large[key] = (time.monotonic(), n)
        return n

    async def _full(self, table: Table, where: Sequence[ColumnElement[bool]]) -> int:
        async with self.store.read(offload=True) as conn:
            return int(
                (
                    await conn.execute(select(func.count()).select_from(table).where(*where))
                ).scalar_one()
            )


def _describe(table: Table, where: Sequence[ColumnElement[bool]]) -> str:
    clause = and_(true(), *where).compile(compile_kwargs={"literal_binds": True})
    return f"{table.name}: {clause}"


def _quiet(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # a failed background recount is retried by the next request
