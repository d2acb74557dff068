"""Fixtures shared by the engine's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from engine.storage import Store, build_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A migrated SQLite Store in this test's folder (file ``s.db``)."""
    store = build_store(f"sqlite+aiosqlite:///{tmp_path / 's.db'}")
    await store.upgrade()
    yield store
    await store.close()
