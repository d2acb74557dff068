"""``submit_many`` on both dialects: every execution, its audit entry and its chat card's
outbox row in one transaction; one that cannot be written (a taken idempotency key) leaves
none of the batch behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from engine.audit import AuditEntry, AuditLog
from engine.clock import now_utc
from engine.errors import Conflict
from engine.records import ExecutionFilter, NewExecution
from engine.storage import Store, build_store
from engine.storage.executions import execution_repository
from tests.engine.test_integration import PostgresDatabases

WAIT_S = 30.0
CHAT = {"sink": "terminal", "session": "s1"}


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    databases = PostgresDatabases()
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 's.db'}"
    else:
        url = await databases.get(request.getfixturevalue("postgres_url"))
    store = build_store(url)
    try:
        await asyncio.wait_for(store.upgrade(), WAIT_S)
        yield store
    finally:
        await store.close()
        await databases.drop()


def new(message: str, key: str | None = None) -> NewExecution:
    now = now_utc()
    return NewExecution(
        action_ref="core.echo",
        status="requested",
        config={"message": message},
        secrets=None,
        parent=None,
        enforcement=None,
        executor={"identity": "tester", "source": "chat"},
        timeout_s=60,
        callback_url=None,
        chat=CHAT,
        idempotency_key=key,
        created=now,
        updated=now,
    )


def audit_of(message: str) -> dict[str, Any]:
    entry = AuditEntry(actor="tester", role="admin", source="chat", verb="run",
                       outcome="accepted", target="core.echo", detail=message)  # fmt: skip
    return entry.values()


async def test_a_batch_is_recorded_in_order_with_its_outbox_rows(any_store: Store) -> None:
    repo = execution_repository(any_store)
    rows = await repo.submit_many(
        [(new(f"m{i}", f"k#{i}"), audit_of(f"m{i}"), "terminal:s1") for i in range(3)]
    )
    assert [r.config["message"] for r in rows] == ["m0", "m1", "m2"]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert await repo.count(ExecutionFilter()) == 3
    entries, total = await AuditLog(any_store).list(page=1, per_page=10)
    assert total == 3
    assert sorted(e["execution_id"] for e in entries) == [r.id for r in rows]
    for row in rows:
        deliveries = await repo.deliveries(row.id)
        assert [(d.target, d.event) for d in deliveries] == [("terminal:s1", "created")]


async def test_one_row_that_cannot_be_written_leaves_none(any_store: Store) -> None:
    repo = execution_repository(any_store)
    await repo.submit(new("first", "taken"), None, None)
    batch = [(new(f"m{i}", f"b#{i}"), audit_of(f"m{i}"), "terminal:s1") for i in range(3)]
    batch.append((new("last", "taken"), audit_of("last"), "terminal:s1"))
    with pytest.raises(Conflict):
        await repo.submit_many(batch)
    assert await repo.count(ExecutionFilter()) == 1
    assert await repo.find_by_key("b#0") is None
    assert (await AuditLog(any_store).list())[1] == 0  # nor its audit entries
    # The store goes on working, and the same batch without the taken key is recorded.
    rows = await repo.submit_many(batch[:3])
    assert len(rows) == 3
    assert await repo.count(ExecutionFilter()) == 4
