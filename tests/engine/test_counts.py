"""List totals: exact up to a bound, a remembered full count past it."""

from __future__ import annotations

import itertools

import pytest
from sqlalchemy import insert

from engine.clock import now_utc
from engine.storage import Store
from engine.storage import totals as counts
from engine.storage.tables import users
from engine.storage.totals import Totals
from tests.waiting import eventually

_serial = itertools.count()


async def _add(store: Store, n: int) -> None:
    async with store.write() as conn:
        await conn.execute(
            insert(users),
            [
                {"login": f"u{next(_serial)}", "password_hash": "x", "role": "viewer"}
                | {"created": now_utc()}
                for _ in range(n)
            ],
        )


async def test_small_totals_are_exact_and_large_ones_refresh_after_max_age(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(counts, "EXACT_UPTO", 5)
    totals = Totals(store, max_age_s=0.2)
    viewers = [users.c.role == "viewer"]
    await _add(store, 3)
    assert await totals.count(users, viewers) == 3
    await _add(store, 1)
    assert await totals.count(users, viewers) == 4  # exact: never cached below the bound
    await _add(store, 4)
    assert await totals.count(users, viewers) == 8  # first large count: counted in full
    await _add(store, 2)
    assert await totals.count(users, viewers) == 8  # remembered while fresh
    assert await totals.count(users, [users.c.role == "admin"]) == 0  # another filter

    async def refreshed() -> bool:
        return await totals.count(users, viewers) == 10

    # Stale: served, and recounted in the background.
    await eventually(refreshed, "the recounted total", 5, interval_s=0.05)
