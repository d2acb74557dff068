"""Executions and their outbox on PostgreSQL: a change and the rows that must commit with it,
in one statement.

A submission writes the execution, its audit entry and (from chat) its card's outbox row; a
status change writes the execution and the outbox rows of its news. As separate statements in
a transaction that is BEGIN, two or three statements and COMMIT: four or five round trips,
each costing the API or worker process and a PostgreSQL backend CPU time on a machine where
they share two cores. Here they are one statement (data-modifying CTEs), run in autocommit:
one round trip, and still all or nothing.

The outbox target of a chat is computed once, in Python (:func:`engine.records.delivery_target`),
and bound into the submission; a later change's news goes to the target of the execution's
"created" row (the chat route's sink and session never change after submission). A callback
URL's news goes to ``callback``.
"""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    CompoundSelect,
    Select,
    and_,
    bindparam,
    insert,
    literal,
    select,
    union_all,
    update,
)

from engine.records import NEW_EXECUTION_COLUMNS, Change, NewExecution, StoredExecution
from engine.status import ENDED
from engine.storage.concurrency import ending
from engine.storage.executions import CoreExecutions, claim_oldest_requested, stored
from engine.storage.tables import UTCDateTime, audit, deliveries, executions

#: Bound parameter names of the outbox rows (the columns' own names are the execution's).
NOW = "_now"
EVENT = "_event"
TARGET = "_target"
#: Prefix of the audit entry's bound parameters.
AUDIT_PREFIX = "a_"
#: The audit entry's columns taken from the new execution row.
FROM_ROW = frozenset({"parameters", "execution_id"})


def _outbox_rows(targets: Select[tuple[Any, str]] | CompoundSelect[Any]) -> CTE:
    rows = targets.subquery("targets")
    now = bindparam(NOW, type_=UTCDateTime())
    return (
        insert(deliveries)
        .from_select(
            ["execution_id", "target", "event", "state", "attempts", "next_attempt_at", "created"],
            select(
                rows.c.id,
                rows.c.target,
                bindparam(EVENT, type_=deliveries.c.event.type),
                literal("pending"),
                literal(0),
                now,
                now,
            ),
        )
        .cte("outbox")
    )


def _news_targets(
    changed: CTE, *, chat_only: bool
) -> Select[tuple[Any, str]] | CompoundSelect[Any]:
    """The targets of a changed execution's news: its chat's (as its "created" row has
    it) and, unless ``chat_only``, ``callback`` for a non-empty callback URL."""
    first = deliveries.alias("first")
    chat = (
        select(changed.c.id, first.c.target.label("target"))
        .select_from(changed)
        .join(first, and_(first.c.execution_id == changed.c.id, first.c.event == "created"))
    )
    if chat_only:
        return chat
    has_callback = and_(changed.c.callback_url.is_not(None), changed.c.callback_url != "")
    callback = select(changed.c.id, literal("callback").label("target")).where(has_callback)
    return union_all(chat, callback)


@functools.cache
def submission(
    columns: tuple[str, ...], audit_columns: frozenset[str] | None, chat: bool
) -> Select[tuple[object, ...]]:
    """Insert the execution (``columns`` bound by name), its audit entry (``audit_columns``
    bound as ``a_<name>``; its parameters and execution id are the new row's) and, for
    ``chat``, the outbox row of its card (target bound as ``_target``, event as ``_event``);
    select the row."""
    new = (
        insert(executions)
        .values({c: bindparam(c, type_=executions.c[c].type) for c in columns})
        .returning(*executions.c)
        .cte("new")
    )
    extra: list[CTE] = []
    if audit_columns is not None:
        names = sorted(audit_columns - FROM_ROW)
        extra.append(
            insert(audit)
            .from_select(
                [*names, "parameters", "execution_id"],
                select(
                    *(bindparam(AUDIT_PREFIX + n, type_=audit.c[n].type) for n in names),
                    new.c.config,
                    new.c.id,
                ),
            )
            .cte("audited")
        )
    if chat:
        target = bindparam(TARGET, type_=deliveries.c.target.type)
        extra.append(_outbox_rows(select(new.c.id, target.label("target"))))
    return select(new).add_cte(*extra)


@functools.cache
def transition(
    columns: tuple[str, ...],
    notify: bool,
    chat_only: bool,
    unkeyed: bool = False,
    ends: bool = False,
) -> Select[tuple[object, ...]]:
    """Move the execution ``_id`` from one of ``_sources`` (an expanding list), setting
    ``columns`` (bound by name); with ``notify``, add the outbox rows of event ``_event``
    (chat only, or chat and callback); select the row, none when it was not in a source.
    ``unkeyed``: only a row outside any concurrency group; ``ends`` (a terminal status): the
    row leaves its concurrency group, giving its slot back (engine/storage/concurrency.py)."""
    where = [
        executions.c.id == bindparam("_id"),
        executions.c.status.in_(bindparam("_sources", expanding=True)),
    ]
    if unkeyed:
        where.append(executions.c.concurrency_key.is_(None))
    values: dict[str, Any] = {c: bindparam(c, type_=executions.c[c].type) for c in columns}
    if ends:
        values["concurrency_key"] = None
    changed = (
        update(executions).where(*where).values(values).returning(*executions.c).cte("changed")
    )
    stmt = select(changed)
    if ends:
        stmt, released = ending(changed, NOW)
        stmt = stmt.add_cte(released)
    if notify:
        stmt = stmt.add_cte(_outbox_rows(_news_targets(changed, chat_only=chat_only)))
    return stmt


def _submission(
    new: NewExecution, audit: dict[str, Any] | None, chat_target: str | None
) -> tuple[Select[tuple[object, ...]], dict[str, Any]]:
    """The statement of :func:`submission` for ``new`` and its bound values."""
    params: dict[str, Any] = {name: getattr(new, name) for name in NEW_EXECUTION_COLUMNS}
    if audit is not None:
        params.update({AUDIT_PREFIX + k: v for k, v in audit.items() if k not in FROM_ROW})
    if chat_target is not None:
        params |= {TARGET: chat_target, EVENT: "created", NOW: new.created}
    stmt = submission(
        NEW_EXECUTION_COLUMNS,
        None if audit is None else frozenset(audit),
        chat_target is not None,
    )
    return stmt, params


class PostgresExecutions(CoreExecutions):
    """The PostgreSQL repository: submissions and changes folded into one statement each."""

    async def submit(
        self, new: NewExecution, audit: dict[str, Any] | None, chat_target: str | None
    ) -> StoredExecution:
        stmt, params = _submission(new, audit, chat_target)
        async with self.store.write(single=True) as conn:
            return stored((await conn.execute(stmt, params)).one())

    async def submit_many(
        self, batch: Sequence[tuple[NewExecution, dict[str, Any] | None, str | None]]
    ) -> builtins.list[StoredExecution]:
        """One submission statement per execution, all in one transaction."""
        rows = []
        async with self.store.write() as conn:
            for item in batch:
                stmt, params = _submission(*item)
                rows.append(stored((await conn.execute(stmt, params)).one()))
        return rows

    async def change(self, execution_id: int, change: Change) -> StoredExecution | None:
        if not change.sources:
            return None
        params = {
            **change.values,
            "status": change.status,
            "updated": change.updated,
            "_id": execution_id,
            "_sources": list(change.sources),
        }
        ends = change.status in ENDED
        if change.event is not None or ends:
            params |= {EVENT: change.event, NOW: change.updated}
        stmt = transition(
            ("status", "updated", *change.values),
            change.event is not None,
            change.chat_only,
            change.unkeyed,
            ends,
        )
        async with self.store.write(single=True) as conn:
            row = (await conn.execute(stmt, params)).first()
        return None if row is None else stored(row)

    async def claim_requested(
        self, worker_id: str, limit: int, now: datetime
    ) -> builtins.list[StoredExecution]:
        changed = claim_oldest_requested(limit, worker_id, now, skip_locked=True).cte("changed")
        stmt = select(changed).add_cte(_outbox_rows(_news_targets(changed, chat_only=True)))
        async with self.store.write(single=True) as conn:
            rows = (await conn.execute(stmt, {EVENT: "started", NOW: now})).all()
        return [stored(r) for r in rows]
