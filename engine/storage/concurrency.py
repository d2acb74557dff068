"""Concurrency groups in storage: the slots of runs held by a concurrency policy.

``concurrency_groups.running`` counts the runs of a group (``executions.concurrency_key``)
that hold a slot. It moves only in the transaction that moves such a run's status:

- up by one when a ``requested`` run of the group becomes ``running`` (:meth:`take`: the
  conditional ``UPDATE ... SET running = running + 1 WHERE running < limit`` is the limit,
  held across processes by the group row's lock; the run must be its group's oldest waiting
  one, so the group is first come first served);
- down by one when a run that holds a slot (``started_at`` set: it was claimed) ends, in the
  statement or transaction of its terminal change (:func:`release_on_sqlite`,
  :func:`ending`), which also clears the run's ``concurrency_key`` (the partial index then
  holds only the live runs of groups).

A run that ends without having started (cancelled while waiting) never took a slot and gives
none back; a terminal change happens once per row; so the count cannot drift.
"""

from __future__ import annotations

import builtins
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, bindparam, exists, func, insert, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.selectable import CTE

from engine.records import StoredExecution
from engine.storage.executions import EXECUTION_COLUMNS, stored
from engine.storage.store import Store
from engine.storage.tables import UTCDateTime, concurrency_groups, deliveries, executions
from engine.storage.tables import _sqlite_datetime_text as datetime_text

groups = concurrency_groups
REQUESTED = "requested"


@dataclass(frozen=True, slots=True)
class Took:
    """The run took a slot: it is ``running`` now, one of ``running`` of its group."""

    row: StoredExecution
    running: int


@dataclass(frozen=True, slots=True)
class Full:
    """No slot free: ``running`` runs of the group hold them all."""

    running: int


@dataclass(frozen=True, slots=True)
class NotFirst:
    """A slot is free but an older run of the group waits: ``head`` (None: this run no
    longer waits)."""

    head: int | None


Outcome = Took | Full | NotFirst


class _Undo(Exception):
    """Rolls the taking back (the slot stays free) and carries why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__()
        self.outcome = outcome


def _head_of(key: Any) -> Select[tuple[Any]]:
    return select(func.min(executions.c.id)).where(
        executions.c.concurrency_key == key, executions.c.status == REQUESTED
    )


def _ensure_group(dialect: str, key: str, now: datetime) -> Any:
    make = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return make(groups).values(key=key, running=0, updated=now).on_conflict_do_nothing()


class ConcurrencyGroups:
    """The slots of concurrency groups (each method one transaction)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def take(
        self, execution_id: int, key: str, limit: int, worker_id: str, now: datetime
    ) -> Outcome:
        """Claim the ``requested`` run ``execution_id`` of group ``key`` for ``worker_id``
        with a slot, if one of ``limit`` is free and no older run of the group waits; with
        its "started" outbox row (chat), in one transaction."""
        try:
            async with self.store.write() as conn:
                await conn.execute(_ensure_group(self.store.dialect, key, now))
                took = (
                    await conn.execute(
                        update(groups)
                        .where(groups.c.key == key, groups.c.running < limit)
                        .values(running=groups.c.running + 1, updated=now)
                        .returning(groups.c.running)
                    )
                ).first()
                if took is None:
                    running = (
                        await conn.execute(select(groups.c.running).where(groups.c.key == key))
                    ).scalar()
                    return Full(int(running or 0))
                # The group row is locked until commit: the oldest waiting run is stable.
                head = (await conn.execute(_head_of(key))).scalar()
                if head != execution_id:
                    raise _Undo(NotFirst(head))
                row = (
                    await conn.execute(
                        update(executions)
                        .where(executions.c.id == execution_id, executions.c.status == REQUESTED)
                        .values(
                            status="running",
                            updated=now,
                            started_at=now,
                            worker=worker_id,
                            heartbeat_at=now,
                        )
                        .returning(*executions.c)
                    )
                ).first()
                if row is None:
                    raise _Undo(NotFirst(None))
                await conn.execute(_started_news(execution_id, now))
                return Took(stored(row), int(took.running))
        except _Undo as undo:
            return undo.outcome

    async def state(self, key: str) -> tuple[int, int | None]:
        """How many runs of the group hold a slot, and its oldest waiting run (None: none)."""
        async with self.store.read() as conn:
            row = (
                await conn.execute(
                    select(
                        select(groups.c.running)
                        .where(groups.c.key == key)
                        .scalar_subquery()
                        .label("running"),
                        _head_of(key).scalar_subquery().label("head"),
                    )
                )
            ).one()
        return int(row.running or 0), row.head

    async def running(self, keys: builtins.list[str]) -> dict[str, int]:
        """Runs holding a slot, by group (groups never used: left out)."""
        if not keys:
            return {}
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(groups.c.key, groups.c.running).where(groups.c.key.in_(keys))
                )
            ).all()
        return {r.key: int(r.running) for r in rows}

    async def heads(self, limit: int) -> builtins.list[int]:
        """The oldest waiting run of up to ``limit`` groups (for claiming from the database
        while the broker is away)."""
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(func.min(executions.c.id))
                    .where(
                        executions.c.concurrency_key.is_not(None),
                        executions.c.status == REQUESTED,
                    )
                    .group_by(executions.c.concurrency_key)
                    .order_by(func.min(executions.c.id))
                    .limit(limit)
                )
            ).scalars()
            return [int(i) for i in rows]


def _started_news(execution_id: int, now: datetime) -> Any:
    """The "started" outbox row of a claimed run, to its chat (the target of its "created"
    row), as every claim writes it."""
    at = bindparam("_at", now, type_=UTCDateTime())
    return insert(deliveries).from_select(
        ["execution_id", "target", "event", "state", "attempts", "next_attempt_at", "created"],
        select(
            deliveries.c.execution_id,
            deliveries.c.target,
            literal("started"),
            literal("pending"),
            literal(0),
            at,
            at,
        ).where(deliveries.c.execution_id == execution_id, deliveries.c.event == "created"),
    )


# -- the end of a run that held a slot --------------------------------------------------------

_SQLITE_RELEASE = (
    "UPDATE concurrency_groups SET running = running - 1, updated = ? WHERE key = ? AND running > 0"
)
_SQLITE_FORGET = "UPDATE executions SET concurrency_key = NULL WHERE id = ?"


def release_on_sqlite(db: sqlite3.Connection, row: StoredExecution, now: datetime) -> None:
    """In the transaction of the terminal change of ``row`` (a run of a group): give its slot
    back if it held one, and take it out of its group."""
    if row.started_at is not None:
        db.execute(_SQLITE_RELEASE, (datetime_text(now), row.concurrency_key))
    db.execute(_SQLITE_FORGET, (row.id,))


def ending(changed: CTE, now_param: str) -> tuple[Select[Any], CTE]:
    """For a terminal change on PostgreSQL (``changed``: the UPDATE of execution ``_id`` that
    sets ``concurrency_key`` to NULL): the select of the changed row with the group it was in
    (every sub-statement sees the row as it was before), and the CTE that gives the slot
    back when the run held one (it was started). No group: nothing is updated."""
    before = (
        select(executions.c.concurrency_key)
        .where(executions.c.id == bindparam("_id"))
        .scalar_subquery()
    )
    released = (
        update(groups)
        .where(
            groups.c.key == before,
            groups.c.running > 0,
            exists(select(changed.c.id).where(changed.c.started_at.is_not(None))),
        )
        .values(
            running=groups.c.running - 1,
            updated=bindparam(now_param, type_=UTCDateTime()),
        )
        .returning(groups.c.key)
        .cte("released")
    )
    columns = [
        before.label("concurrency_key") if name == "concurrency_key" else changed.c[name]
        for name in EXECUTION_COLUMNS
    ]
    return select(*columns), released
