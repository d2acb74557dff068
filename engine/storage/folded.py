"""PostgreSQL: an execution's change and the rows that must commit with it, in one statement.

A submission writes the execution, its audit entry and (from chat) its card's outbox row; a
status change writes the execution and the outbox rows of its news. As separate statements in
a transaction that is BEGIN, two or three statements and COMMIT: four or five round trips,
each costing the API or worker process and a PostgreSQL backend CPU time on a machine where
they share two cores. Here they are one statement (data-modifying CTEs), run in autocommit:
one round trip, and still all or nothing.

The outbox targets are derived in SQL as :func:`engine.service.delivery_target` derives them in
Python: ``terminal:<session>`` for a terminal chat, ``slack`` for any other chat (a non-empty
JSON object), ``callback`` for a non-empty callback URL.
"""

from __future__ import annotations

import functools

from sqlalchemy import (
    CTE,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    select,
    union_all,
    update,
)

from engine.storage.tables import UTCDateTime, audit, deliveries, executions

#: Bound parameter names of the outbox rows (the columns' own names are the execution's).
NOW = "_now"
EVENT = "_event"
#: Prefix of the audit entry's bound parameters.
AUDIT_PREFIX = "a_"
#: The audit entry's columns taken from the new execution row.
FROM_ROW = frozenset({"parameters", "execution_id"})


def _outbox_rows(changed: CTE, *, chat_only: bool) -> CTE:
    chat = changed.c.chat
    is_chat = and_(func.jsonb_typeof(chat) == "object", chat != literal_column("'{}'::jsonb"))
    target = case(
        (
            chat["sink"].as_string() == "terminal",
            # As the f-string of delivery_target: a missing session reads "None".
            "terminal:" + func.coalesce(chat["session"].as_string(), "None"),
        ),
        else_=literal("slack"),
    )
    parts: list[Select[tuple[int, str]]] = [
        select(changed.c.id, target.label("target")).where(is_chat)
    ]
    if not chat_only:
        has_callback = and_(changed.c.callback_url.is_not(None), changed.c.callback_url != "")
        parts.append(select(changed.c.id, literal("callback").label("target")).where(has_callback))
    rows = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery("targets")
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


@functools.cache
def submission(
    columns: frozenset[str], audit_columns: frozenset[str] | None, chat: bool
) -> Select[tuple[object, ...]]:
    """Insert the execution (``columns`` bound by name), its audit entry (``audit_columns``
    bound as ``a_<name>``; its parameters and execution id are the new row's) and, for
    ``chat``, the outbox row of its card (event bound as ``_event``); select the row."""
    new = (
        insert(executions)
        .values({c: bindparam(c, type_=executions.c[c].type) for c in sorted(columns)})
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
        extra.append(_outbox_rows(new, chat_only=True))
    return select(new).add_cte(*extra)


@functools.cache
def transition(
    columns: frozenset[str], notify: bool, chat_only: bool
) -> Select[tuple[object, ...]]:
    """Move the execution ``_id`` from one of ``_sources`` (an expanding list), setting
    ``columns`` (bound by name); with ``notify``, add the outbox rows of event ``_event``
    (chat only, or chat and callback); select the row, none when it was not in a source."""
    changed = (
        update(executions)
        .where(
            executions.c.id == bindparam("_id"),
            executions.c.status.in_(bindparam("_sources", expanding=True)),
        )
        .values({c: bindparam(c, type_=executions.c[c].type) for c in sorted(columns)})
        .returning(*executions.c)
        .cte("changed")
    )
    stmt = select(changed)
    if notify:
        stmt = stmt.add_cte(_outbox_rows(changed, chat_only=chat_only))
    return stmt
