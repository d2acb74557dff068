"""Hot paths: SQLite statements on the driver (the same rows, values and errors as SQLAlchemy's
own path), timestamps as SQLAlchemy writes them, audit rows complete."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import StatementError

from engine.errors import Conflict, Unavailable
from engine.storage import Store, fast
from engine.storage.tables import executions

_INSERT = fast.hot(insert(executions).returning(*executions.c))
_SELECT = fast.hot(select(executions).where(executions.c.id.in_(bindparam("_ids", expanding=True))))
_MOVE = fast.hot(
    update(executions)
    .where(
        executions.c.id == bindparam("_id"),
        executions.c.status.in_(bindparam("_from", expanding=True)),
    )
    .returning(executions.c.id, executions.c.status, executions.c.finished_at)
)
# The same statements, not marked: SQLAlchemy runs them.
_INSERT_SA = insert(executions).returning(*executions.c)
_SELECT_SA = select(executions).where(executions.c.id.in_(bindparam("_ids", expanding=True)))

WHEN = datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=UTC)


def _values(**extra: Any) -> dict[str, Any]:
    return {
        "action_ref": "core.noop",
        "status": "requested",
        "config": {"text": "héllo", "n": [1, 2.5, None], "big": 2**70 + 1, "nan": math.nan},
        "executor": {"source": "api", "login": "admin"},
        "chat": None,
        "timeout_s": 30.0,
        "created": WHEN,
        "updated": WHEN,
        **extra,
    }


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included."""
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


async def test_hot_rows_equal_sqlalchemys_rows(store: Store) -> None:
    async with store.write() as conn:
        hot = (await conn.execute(_INSERT, _values())).one()
        plain = (await conn.execute(_INSERT_SA, _values())).one()
    assert hot.id + 1 == plain.id
    assert hot.created == WHEN
    assert hot.created.tzinfo is UTC
    for name in hot._mapping:
        if name != "id":
            assert _same(hot._mapping[name], plain._mapping[name]), name
    async with store.read() as conn:
        ids = (await conn.execute(_SELECT, {"_ids": [plain.id, hot.id]})).scalars()
        assert (ids.all(), ids.first()) == ([hot.id, plain.id], hot.id)
        fast_rows = (await conn.execute(_SELECT, {"_ids": [plain.id, hot.id]})).all()
        sa_rows = (await conn.execute(_SELECT_SA, {"_ids": [plain.id, hot.id]})).all()
    assert len(fast_rows) == len(sa_rows) == 2
    for got, want in zip(fast_rows, sa_rows, strict=True):
        assert all(_same(got._mapping[k], want._mapping[k]) for k in want._mapping)
        assert got.config["big"] == 2**70 + 1  # not a float: exactly
        assert math.isnan(got.config["nan"])


async def test_an_expanding_list_and_rowcount(store: Store) -> None:
    async with store.write() as conn:
        first = (await conn.execute(_INSERT, _values())).one()
        moved = await conn.execute(
            _MOVE,
            {
                "_id": first.id,
                "_from": ["requested", "running"],
                "status": "failed",
                "finished_at": WHEN,
            },
        )
        row = moved.one()
        assert (row.status, row.finished_at, moved.rowcount) == ("failed", WHEN, 1)
        again = await conn.execute(
            _MOVE, {"_id": first.id, "_from": ["requested"], "status": "succeeded"}
        )
        assert again.first() is None
        assert again.rowcount == 0
        # An empty IN list is rendered by SQLAlchemy (no fast plan for it).
        empty = await conn.execute(_MOVE, {"_id": first.id, "_from": [], "status": "succeeded"})
        assert empty.first() is None


async def test_a_unique_key_taken_is_a_conflict(store: Store) -> None:
    async with store.write() as conn:
        await conn.execute(_INSERT, _values(idempotency_key="k1"))
    with pytest.raises(Conflict):
        async with store.write() as conn:
            await conn.execute(_INSERT, _values(idempotency_key="k1"))
    async with store.read() as conn:
        rows = (await conn.execute(select(executions.c.idempotency_key))).all()
    assert [r.idempotency_key for r in rows] == ["k1"]


async def test_a_missing_parameter_is_sqlalchemys_error(store: Store) -> None:
    with pytest.raises(Unavailable) as caught:
        async with store.read() as conn:
            await conn.execute(_MOVE, {"_from": ["requested"], "status": "failed"})
    assert isinstance(caught.value.__cause__, StatementError)
    assert "'_id'" in str(caught.value.__cause__)


def test_sqlite_timestamps_keep_sqlalchemys_text() -> None:
    """UTCDateTime writes and reads on SQLite the text SQLAlchemy's DATETIME does."""
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    from engine.storage.tables import UTCDateTime

    dialect = sqlite.dialect()
    ours_in = UTCDateTime().bind_processor(dialect)
    ours_out = UTCDateTime().result_processor(dialect, None)
    theirs_in = DateTime().dialect_impl(dialect).bind_processor(dialect)
    local = datetime(2026, 11, 27, 5, 4, 5, 678901, tzinfo=timezone(timedelta(hours=1)))
    for value in (WHEN, WHEN.replace(microsecond=0), local, datetime(999, 1, 2, 3, 4, 5)):
        naive_utc = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
        assert ours_in(value) == theirs_in(naive_utc)
        assert ours_out(ours_in(value)) == value.replace(tzinfo=value.tzinfo or UTC)
    assert ours_out("2026-11-27 03:04:05") == datetime(2026, 11, 27, 3, 4, 5, tzinfo=UTC)
    assert ours_in(None) is None
    assert ours_out(None) is None


def test_an_audit_row_has_every_field_of_its_entry() -> None:
    """AuditEntry.values() lists its fields by hand: none may be forgotten."""
    from dataclasses import fields

    from engine.audit import AuditEntry
    from engine.storage.tables import audit

    entry = AuditEntry(actor="a", source="api", verb="run", outcome="ok", detail="x" * 3000)
    row = entry.values(execution_id=7)
    assert set(row) == {f.name for f in fields(AuditEntry)} - {"extra"} | {"at"}
    assert set(row) == set(audit.c.keys()) - {"id"}
    assert row["execution_id"] == 7
    assert len(row["detail"]) == 2000
