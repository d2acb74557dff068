"""Executions and their outbox on SQLite: the hot statements written for the sqlite3 driver.

Profiled on an API submission, SQLAlchemy's per-execute work (cache lookup, execution context,
parameter construction, result metadata) cost about twice the time SQLite itself spent on the
statement. The statements of a submission, a status change, a read by id and the outbox's
rounds are therefore plain SQL text with ``?`` parameters, run on the sqlite3 connection the
Store's SQLAlchemy connection holds (its public ``driver_connection``), in the Store's
transaction; rows come back as records. Values are stored and read as SQLAlchemy's column
types store and read them (JSON text through the Store's codec, timestamps as SQLAlchemy's
DATETIME text): ``tests/engine/test_sqlite_executions.py`` compares both paths.

The SQL text is built from column names and ``?`` placeholders only (``noqa: S608``): values
are always bound.

Statements that may scan (lists, counts) and the rare sweeps stay in SQLAlchemy Core
(:class:`engine.storage.executions.CoreExecutions`).
"""

from __future__ import annotations

import builtins
import operator
import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from engine.records import (
    NEW_EXECUTION_COLUMNS,
    Change,
    Delivery,
    NewExecution,
    StoredExecution,
    delivery_target,
)
from engine.status import ENDED
from engine.storage.concurrency import release_on_sqlite
from engine.storage.executions import (
    DELIVERY_COLUMNS,
    EXECUTION_COLUMNS,
    CoreExecutions,
    claim_oldest_requested,
    stored,
)
from engine.storage.store import Conn, LoopConn, Store, json_dumps, json_loads
from engine.storage.tables import _sqlite_datetime as read_datetime
from engine.storage.tables import _sqlite_datetime_text as datetime_text

#: Columns stored as JSON text, and as timestamps (SQLAlchemy's DATETIME text).
JSON_COLUMNS = frozenset({"config", "executor", "result", "chat", "parameters", "workflow_task"})
DATETIME_COLUMNS = frozenset(
    {
        "heartbeat_at",
        "created",
        "updated",
        "started_at",
        "finished_at",
        "retry_due_at",
        "at",
        "next_attempt_at",
        "delivered_at",
        "lease_until",
    }
)


def _json_text(value: Any) -> str:
    # As SQLAlchemy's JSON type binds it: None too is written as JSON (``null``).
    return json_dumps(value)


def _read_json(value: str | bytes | None) -> Any:
    return None if value is None else json_loads(value)


def _reader(column: str) -> Callable[[Any], Any] | None:
    if column in JSON_COLUMNS:
        return _read_json
    if column in DATETIME_COLUMNS:
        return read_datetime
    return None


#: (index, encoder) of the values of a statement's columns written through a function.
Encoders = tuple[tuple[int, Callable[[Any], Any]], ...]


def _encoders(columns: Sequence[str]) -> Encoders:
    return tuple(
        (i, _json_text if c in JSON_COLUMNS else datetime_text)
        for i, c in enumerate(columns)
        if c in JSON_COLUMNS or c in DATETIME_COLUMNS
    )


def _encoded(values: list[Any], encoders: Encoders) -> list[Any]:
    for i, encode in encoders:
        values[i] = encode(values[i])
    return values


def _readers(columns: Sequence[str]) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
    """(index, reader) of the columns read through a function (JSON, timestamps)."""
    return tuple((i, r) for i, c in enumerate(columns) if (r := _reader(c)) is not None)


_EXECUTION_READERS = _readers(EXECUTION_COLUMNS)
_DELIVERY_READERS = _readers(DELIVERY_COLUMNS)
#: A new execution's column values, in NEW_EXECUTION_COLUMNS' order.
_new_values = operator.attrgetter(*NEW_EXECUTION_COLUMNS)
_NEW_ENCODERS = _encoders(NEW_EXECUTION_COLUMNS)


def execution_from(data: Sequence[Any]) -> StoredExecution:
    values = list(data)
    for i, read in _EXECUTION_READERS:
        value = values[i]
        if value is not None:
            values[i] = read(value)
    return StoredExecution(*values)


def delivery_from(data: Sequence[Any]) -> Delivery:
    values = list(data)
    for i, read in _DELIVERY_READERS:
        value = values[i]
        if value is not None:
            values[i] = read(value)
    return Delivery(*values)


def _marks(n: int) -> str:
    return ", ".join("?" * n)


_ALL = ", ".join(EXECUTION_COLUMNS)
_DELIVERY_ALL = ", ".join(DELIVERY_COLUMNS)
INSERT_EXECUTION = (
    f"INSERT INTO executions ({', '.join(NEW_EXECUTION_COLUMNS)}) "  # noqa: S608
    f"VALUES ({_marks(len(NEW_EXECUTION_COLUMNS))}) RETURNING {_ALL}"
)
SELECT_EXECUTION = f"SELECT {_ALL} FROM executions WHERE id = ?"  # noqa: S608
SELECT_BY_KEY = f"SELECT {_ALL} FROM executions WHERE idempotency_key = ?"  # noqa: S608
INSERT_DELIVERY = (
    "INSERT INTO deliveries (execution_id, target, event, state, attempts, next_attempt_at, "
    "created) VALUES (?, ?, ?, 'pending', 0, ?, ?)"
)
RECORD_PROCESS = "UPDATE executions SET pid = ?, pid_start = ? WHERE id = ?"
_OPEN = "state IN ('pending', 'sending')"  # inline, as the partial indexes are defined
_DUE = (
    f"deliveries.{_OPEN} AND deliveries.target IN ({{targets}}) AND ("
    "(deliveries.state = 'pending' AND deliveries.next_attempt_at <= ?) OR "
    "(deliveries.state = 'sending' AND deliveries.lease_until < ?))"
)
CANDIDATES = (
    f"SELECT deliveries.id FROM deliveries WHERE {_DUE} AND NOT (EXISTS (SELECT * FROM "  # noqa: S608
    "deliveries AS earlier WHERE earlier.execution_id = deliveries.execution_id AND "
    f"earlier.target = deliveries.target AND earlier.id < deliveries.id AND earlier.{_OPEN})) "
    "ORDER BY deliveries.id LIMIT ?"
)
TAKE = (
    "UPDATE deliveries SET state = 'sending', lease_until = ? WHERE deliveries.id IN ({ids}) "  # noqa: S608
    f"AND {_DUE} RETURNING {_DELIVERY_ALL}"
)
DELIVERED = (
    "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, lease_until = NULL, "
    "last_error = NULL, delivered_at = ? WHERE id IN ({ids}) AND state = 'sending'"
)
RETRY = (
    "UPDATE deliveries SET state = ?, attempts = ?, lease_until = NULL, last_error = ?, "
    "next_attempt_at = ? WHERE id = ? AND state = 'sending'"
)
RELEASE = (
    "UPDATE deliveries SET state = 'pending', lease_until = NULL "
    "WHERE id IN ({ids}) AND state = 'sending'"
)


def driver(conn: Conn) -> sqlite3.Connection:
    assert isinstance(conn, LoopConn)
    return conn.driver


class SqliteExecutions(CoreExecutions):
    """The SQLite repository: hot statements on the driver, the rest in Core."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        #: UPDATE statements of a change, by (columns set, number of sources, unkeyed only).
        self._changes: dict[tuple[tuple[str, ...], int, bool], tuple[str, Encoders]] = {}
        #: INSERT statements of audit rows, by their columns.
        self._audits: dict[tuple[str, ...], tuple[str, Encoders]] = {}

    async def submit(
        self, new: NewExecution, audit: dict[str, Any] | None, chat_target: str | None
    ) -> StoredExecution:
        async with self.store.write() as conn:
            return self._insert(driver(conn), new, audit, chat_target)

    async def submit_many(
        self, batch: Sequence[tuple[NewExecution, dict[str, Any] | None, str | None]]
    ) -> builtins.list[StoredExecution]:
        async with self.store.write() as conn:
            db = driver(conn)
            return [self._insert(db, *item) for item in batch]

    def _insert(
        self,
        db: sqlite3.Connection,
        new: NewExecution,
        audit: dict[str, Any] | None,
        chat_target: str | None,
    ) -> StoredExecution:
        values = _encoded(list(_new_values(new)), _NEW_ENCODERS)
        row = execution_from(db.execute(INSERT_EXECUTION, values).fetchone())
        if chat_target is not None:
            when = datetime_text(new.created)
            db.execute(INSERT_DELIVERY, (row.id, chat_target, "created", when, when))
        if audit is not None:
            entry = {**audit, "parameters": row.config, "execution_id": row.id}
            columns = tuple(entry)
            plan = self._audits.get(columns)
            if plan is None:
                sql = f"INSERT INTO audit ({', '.join(columns)}) VALUES ({_marks(len(columns))})"  # noqa: S608
                plan = self._audits[columns] = (sql, _encoders(columns))
            db.execute(plan[0], _encoded(list(entry.values()), plan[1]))
        return row

    async def get(self, execution_id: int) -> StoredExecution | None:
        async with self.store.read() as conn:
            data = driver(conn).execute(SELECT_EXECUTION, (execution_id,)).fetchone()
        return None if data is None else execution_from(data)

    async def get_many(self, execution_ids: Sequence[int]) -> list[StoredExecution]:
        if not execution_ids:
            return []
        sql = f"SELECT {_ALL} FROM executions WHERE id IN ({_marks(len(execution_ids))})"  # noqa: S608
        async with self.store.read() as conn:
            rows = driver(conn).execute(sql, list(execution_ids)).fetchall()
        return [execution_from(r) for r in rows]

    async def find_by_key(self, idempotency_key: str) -> StoredExecution | None:
        async with self.store.read() as conn:
            data = driver(conn).execute(SELECT_BY_KEY, (idempotency_key,)).fetchone()
        return None if data is None else execution_from(data)

    async def change(self, execution_id: int, change: Change) -> StoredExecution | None:
        if not change.sources:
            return None
        key = (tuple(change.values), len(change.sources), change.unkeyed)
        plan = self._changes.get(key)
        if plan is None:
            columns = ("status", "updated", *key[0])
            sets = ", ".join(f"{c} = ?" for c in columns)
            unkeyed = " AND concurrency_key IS NULL" if change.unkeyed else ""
            sql = (
                f"UPDATE executions SET {sets} WHERE id = ? AND status IN "  # noqa: S608
                f"({_marks(len(change.sources))}){unkeyed} RETURNING {_ALL}"
            )
            plan = self._changes[key] = (sql, _encoders(columns))
        sql, encoders = plan
        params = _encoded([change.status, change.updated, *change.values.values()], encoders)
        params.append(execution_id)
        params.extend(change.sources)
        async with self.store.write(single=True) as conn:
            db = driver(conn)
            data = db.execute(sql, params).fetchone()
            if data is None:
                return None
            row = execution_from(data)
            if change.event is not None:
                _enqueue(db, row, change.event, change.updated, chat_only=change.chat_only)
            if row.concurrency_key is not None and change.status in ENDED:
                release_on_sqlite(db, row, change.updated)
        return row

    async def claim_requested(
        self, worker_id: str, limit: int, now: datetime
    ) -> builtins.list[StoredExecution]:
        claim = claim_oldest_requested(limit, worker_id, now, skip_locked=False)
        async with self.store.write() as conn:
            rows = (await conn.execute(claim)).all()
            claimed = [stored(r) for r in rows]
            db = driver(conn)
            for row in claimed:
                _enqueue(db, row, "started", now, chat_only=True)
        return claimed

    async def record_process(self, execution_id: int, pid: int, pid_start: int | None) -> None:
        async with self.store.write(single=True) as conn:
            driver(conn).execute(RECORD_PROCESS, (pid, pid_start, execution_id))

    # -- the outbox -------------------------------------------------------------------------

    async def due_deliveries(
        self, targets: Sequence[str], now: datetime, limit: int
    ) -> builtins.list[int]:
        when = datetime_text(now)
        sql = CANDIDATES.format(targets=_marks(len(targets)))
        async with self.store.read() as conn:
            rows = driver(conn).execute(sql, [*targets, when, when, limit]).fetchall()
        return [r[0] for r in rows]

    async def take_deliveries(
        self, ids: Sequence[int], targets: Sequence[str], now: datetime, lease_until: datetime
    ) -> builtins.list[Delivery]:
        when = datetime_text(now)
        sql = TAKE.format(ids=_marks(len(ids)), targets=_marks(len(targets)))
        params = [datetime_text(lease_until), *ids, *targets, when, when]
        async with self.store.write(single=True) as conn:
            rows = driver(conn).execute(sql, params).fetchall()
        return [delivery_from(r) for r in rows]

    async def delivered(self, ids: Sequence[int], now: datetime) -> None:
        sql = DELIVERED.format(ids=_marks(len(ids)))
        async with self.store.write(single=True) as conn:
            driver(conn).execute(sql, [datetime_text(now), *ids])

    async def retry_delivery(
        self,
        delivery_id: int,
        *,
        state: str,
        attempts: int,
        error: str,
        next_attempt_at: datetime,
    ) -> None:
        params = (state, attempts, error, datetime_text(next_attempt_at), delivery_id)
        async with self.store.write(single=True) as conn:
            driver(conn).execute(RETRY, params)

    async def release_deliveries(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        async with self.store.write(single=True) as conn:
            driver(conn).execute(RELEASE.format(ids=_marks(len(ids))), list(ids))


def _enqueue(
    db: sqlite3.Connection, row: StoredExecution, event: str, now: datetime, *, chat_only: bool
) -> None:
    """The outbox rows of ``event``, in the caller's transaction (so news is never lost)."""
    when = datetime_text(now)
    if row.chat:
        db.execute(INSERT_DELIVERY, (row.id, delivery_target(row.chat), event, when, when))
    if row.callback_url and not chat_only:
        db.execute(INSERT_DELIVERY, (row.id, "callback", event, when, when))
