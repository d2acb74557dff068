"""SQLite's execution repository runs its hot statements on the sqlite3 driver: the same
stored text, rows, values and errors as SQLAlchemy's own path (compared here, statement by
statement), timestamps as SQLAlchemy writes them, audit rows complete."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import bindparam, insert, select, text

from engine.errors import Conflict
from engine.records import Change, NewExecution, StoredExecution
from engine.storage import Store
from engine.storage.executions import execution_repository
from engine.storage.sqlite_executions import SqliteExecutions
from engine.storage.tables import audit, deliveries, executions

# What SQLAlchemy runs, for comparison.
_INSERT_SA = insert(executions).returning(*executions.c)
_SELECT_SA = select(executions).where(executions.c.id.in_(bindparam("_ids", expanding=True)))

WHEN = datetime(2026, 11, 27, 3, 4, 5, 678901, tzinfo=UTC)


def _new(**extra: Any) -> NewExecution:
    values: dict[str, Any] = {
        "action_ref": "core.noop",
        "status": "requested",
        "config": {"text": "héllo", "n": [1, 2.5, None], "big": 2**70 + 1, "nan": math.nan},
        "secrets": None,
        "parent": None,
        "enforcement": None,
        "executor": {"source": "api", "login": "admin"},
        "timeout_s": 30.0,
        "callback_url": None,
        "chat": None,
        "idempotency_key": None,
        "created": WHEN,
        "updated": WHEN,
        **extra,
    }
    return NewExecution(**values)


def _values(new: NewExecution) -> dict[str, Any]:
    return {name: getattr(new, name) for name in NewExecution.__match_args__}


def _same(a: Any, b: Any) -> bool:
    """Equal, NaN included."""
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def _same_row(a: StoredExecution, b: StoredExecution, *, but: frozenset[str]) -> None:
    for name in StoredExecution.__match_args__:
        if name not in but:
            assert _same(getattr(a, name), getattr(b, name)), name


async def _stored_text(store: Store, table: str, row_id: int) -> tuple[Any, ...]:
    """Every column of a row as SQLite holds it (type and text)."""
    async with store.read() as conn:
        names = [r[1] for r in (await conn.execute(text(f"PRAGMA table_info({table})"))).all()]
        picked = ", ".join(f"typeof({n}), quote({n})" for n in names if n != "id")
        row = (
            await conn.execute(text(f"SELECT {picked} FROM {table} WHERE id = :i"), {"i": row_id})  # noqa: S608
        ).one()
    return tuple(row)


@pytest.fixture
def repo(store: Store) -> SqliteExecutions:
    found = execution_repository(store)
    assert isinstance(found, SqliteExecutions)
    return found


@pytest.mark.parametrize(
    "route",
    [
        {"chat": {"sink": "terminal", "session": "s1"}, "callback_url": "http://x/"},
        {"chat": None, "parent": 3, "enforcement": 4, "secrets": "sealed", "timeout_s": 5},
    ],
    ids=["chat", "none"],
)
async def test_rows_equal_sqlalchemys_rows(
    store: Store, repo: SqliteExecutions, route: dict[str, Any]
) -> None:
    new = _new(**route)
    ours = await repo.submit(new, None, "terminal:s1" if new.chat else None)
    async with store.write() as conn:
        plain = StoredExecution(*(await conn.execute(_INSERT_SA, _values(new))).one())
    assert ours.id + 1 == plain.id
    assert ours.created == WHEN
    assert ours.created.tzinfo is UTC
    _same_row(ours, plain, but=frozenset({"id"}))
    # Stored alike, to the byte: JSON text (None as JSON null), timestamps' text.
    assert await _stored_text(store, "executions", ours.id) == await _stored_text(
        store, "executions", plain.id
    )
    got = await repo.get_many([plain.id, ours.id])
    async with store.read() as conn:
        want = [
            StoredExecution(*r)
            for r in (await conn.execute(_SELECT_SA, {"_ids": [plain.id, ours.id]})).all()
        ]
    assert [r.id for r in got] == [r.id for r in want] == [ours.id, plain.id]
    for a, b in zip(got, want, strict=True):
        _same_row(a, b, but=frozenset())
        assert a.config["big"] == 2**70 + 1  # not a float: exactly
        assert math.isnan(a.config["nan"])
    one = await repo.get(ours.id)
    assert one is not None
    _same_row(one, want[0], but=frozenset())
    assert await repo.get(plain.id + 100) is None


async def test_outbox_and_audit_rows_are_stored_as_sqlalchemy_stores_them(
    store: Store, repo: SqliteExecutions
) -> None:
    entry = {"actor": "a", "source": "api", "verb": "run", "outcome": "accepted", "role": None,
             "channel": None, "target": "core.noop", "parameters": None, "detail": None,
             "execution_id": None, "at": WHEN}  # fmt: skip
    ours = await repo.submit(_new(chat={"channel": "C1"}), entry, "slack")
    async with store.write() as conn:
        plain = (await conn.execute(_INSERT_SA, _values(_new()))).one()
        await conn.execute(
            insert(deliveries).values(
                execution_id=plain.id,
                target="slack",
                event="created",
                state="pending",
                attempts=0,
                next_attempt_at=WHEN,
                created=WHEN,
            )
        )
        await conn.execute(
            insert(audit).values(entry | {"parameters": plain.config, "execution_id": plain.id})
        )
        ids = (await conn.execute(select(deliveries.c.id).order_by(deliveries.c.id))).scalars()
        ours_d, plain_d = list(ids)
        audits = (await conn.execute(select(audit.c.id).order_by(audit.c.id))).scalars()
        ours_a, plain_a = list(audits)
    strip = slice(2, None)  # execution_id differs (first column: its type and value)
    assert (await _stored_text(store, "deliveries", ours_d))[strip] == (
        await _stored_text(store, "deliveries", plain_d)
    )[strip]
    ours_audit = await _stored_text(store, "audit", ours_a)
    plain_audit = await _stored_text(store, "audit", plain_a)
    assert ours_audit[:-2] == plain_audit[:-2]  # but the execution id, the last column
    assert ours_audit[-2:] == ("integer", str(ours.id))
    # Read back as SQLAlchemy reads them.
    (listed,) = await repo.deliveries(ours.id)
    assert (listed.target, listed.event, listed.state, listed.created) == (
        "slack",
        "created",
        "pending",
        WHEN,
    )


async def test_a_change_moves_once_and_an_empty_source_list_moves_nothing(
    repo: SqliteExecutions,
) -> None:
    first = await repo.submit(_new(callback_url="http://x/"), None, None)
    moved = await repo.change(
        first.id,
        Change(
            status="failed",
            sources=("requested", "running"),
            values={"finished_at": WHEN, "result": {"ok": False}},
            updated=WHEN,
            event="completed",
        ),
    )
    assert moved is not None
    assert (moved.status, moved.finished_at, moved.result) == ("failed", WHEN, {"ok": False})
    again = Change(status="completed", sources=("requested",), values={}, updated=WHEN)
    assert await repo.change(first.id, again) is None
    empty = Change(status="completed", sources=(), values={}, updated=WHEN)
    assert await repo.change(first.id, empty) is None
    assert [(d.target, d.event) for d in await repo.deliveries(first.id)] == [
        ("callback", "completed")
    ]


async def test_the_outbox_round_as_sqlalchemy_reads_it(
    store: Store, repo: SqliteExecutions
) -> None:
    row = await repo.submit(_new(chat={"channel": "C1"}), None, "slack")
    later = WHEN + timedelta(seconds=1)
    assert await repo.due_deliveries(["callback"], later, 50) == []
    (due,) = await repo.due_deliveries(["slack", "callback"], later, 50)
    (taken,) = await repo.take_deliveries([due], ["slack"], later, later + timedelta(minutes=2))
    assert (taken.execution_id, taken.state, taken.attempts) == (row.id, "sending", 0)
    assert await repo.due_deliveries(["slack"], later, 50) == []  # leased
    await repo.retry_delivery(due, state="pending", attempts=1, error="boom", next_attempt_at=later)
    (taken,) = await repo.take_deliveries([due], ["slack"], later, later + timedelta(minutes=2))
    await repo.delivered([due], later)
    async with store.read() as conn:
        sa = (await conn.execute(select(deliveries).where(deliveries.c.id == due))).one()
    assert (sa.state, sa.attempts, sa.last_error, sa.delivered_at, sa.lease_until) == (
        "delivered",
        2,
        None,
        later,
        None,
    )
    (listed,) = await repo.deliveries(row.id)
    assert (listed.state, listed.attempts, listed.delivered_at) == ("delivered", 2, later)


async def test_a_unique_key_taken_is_a_conflict(store: Store, repo: SqliteExecutions) -> None:
    await repo.submit(_new(idempotency_key="k1"), None, None)
    with pytest.raises(Conflict):
        await repo.submit(_new(idempotency_key="k1"), None, None)
    async with store.read() as conn:
        rows = (await conn.execute(select(executions.c.idempotency_key))).all()
    assert [r.idempotency_key for r in rows] == ["k1"]
    found = await repo.find_by_key("k1")
    assert found is not None
    assert found.idempotency_key == "k1"
    assert await repo.find_by_key("k2") is None


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
