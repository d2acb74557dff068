"""The ``inquiries`` rows (:mod:`engine.inquiry_records`), on either dialect: every move out of
``pending`` is a conditional UPDATE, so the first answer (or the timeout) wins once."""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, insert, select, update

from engine.inquiry_records import (
    PENDING,
    Inquiry,
    InquiryFilter,
    InquiryRepository,
    InquiryRequest,
)
from engine.storage.store import Store
from engine.storage.tables import executions, inquiries

_I = inquiries.c


def _record(row: Any) -> Inquiry:
    return Inquiry(
        id=int(row.id),
        execution=int(row.execution),
        prompt=row.prompt,
        response_schema=row.response_schema,
        assigned_to=row.assigned_to,
        assignees=tuple(row.assignees or ()),
        status=row.status,
        response=row.response,
        responded_by=row.responded_by,
        responded_at=row.responded_at,
        timeout_at=row.timeout_at,
        chat=row.chat,
        created=row.created,
        updated=row.updated,
    )


def _where(where: InquiryFilter) -> list[ColumnElement[bool]]:
    out: list[ColumnElement[bool]] = []
    if where.status is not None:
        out.append(_I.status == where.status)
    if where.execution is not None:
        out.append(_I.execution == where.execution)
    if where.assigned_to is not None:
        out.append(_I.assigned_to == where.assigned_to)
    return out


class SqlInquiries:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def park(
        self,
        execution_id: int,
        worker_id: str,
        run_result: dict[str, Any],
        request: InquiryRequest,
        timeout_at: datetime | None,
        now: datetime,
    ) -> Inquiry | None:
        async with self.store.write() as conn:
            detached = (
                await conn.execute(
                    update(executions)
                    .where(
                        executions.c.id == execution_id,
                        executions.c.status == "running",
                        executions.c.worker == worker_id,
                    )
                    .values(
                        worker=None,
                        heartbeat_at=None,
                        pid=None,
                        pid_start=None,
                        result=run_result,
                        updated=now,
                    )
                    .returning(executions.c.chat)
                )
            ).first()
            if detached is None:
                return None
            row = (
                await conn.execute(
                    insert(inquiries)
                    .values(
                        execution=execution_id,
                        prompt=request.prompt,
                        response_schema=request.response_schema,
                        assigned_to=request.assigned_to,
                        assignees=list(request.assignees),
                        status=PENDING,
                        timeout_at=timeout_at,
                        chat=detached.chat,
                        created=now,
                        updated=now,
                    )
                    .returning(*inquiries.c)
                )
            ).one()
        return _record(row)

    async def get(self, inquiry_id: int) -> Inquiry | None:
        async with self.store.read() as conn:
            row = (await conn.execute(select(inquiries).where(_I.id == inquiry_id))).first()
        return None if row is None else _record(row)

    async def list(self, where: InquiryFilter, limit: int, offset: int) -> builtins.list[Inquiry]:
        query = (
            select(inquiries)
            .where(*_where(where))
            .order_by(_I.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def count(self, where: InquiryFilter) -> int:
        query = select(func.count()).select_from(inquiries).where(*_where(where))
        async with self.store.read() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def settle(
        self,
        inquiry_id: int,
        status: str,
        now: datetime,
        *,
        response: dict[str, Any] | None = None,
        responded_by: str | None = None,
    ) -> Inquiry | None:
        values: dict[str, Any] = {"status": status, "updated": now}
        if response is not None:
            values |= {"response": response, "responded_by": responded_by, "responded_at": now}
        async with self.store.write(single=True) as conn:
            row = (
                await conn.execute(
                    update(inquiries)
                    .where(_I.id == inquiry_id, _I.status == PENDING)
                    .values(**values)
                    .returning(*inquiries.c)
                )
            ).first()
        return None if row is None else _record(row)

    async def with_chat(self, limit: int) -> builtins.list[Inquiry]:
        query = (
            select(inquiries)
            .where(_I.status == PENDING, _I.chat.is_not(None))
            .order_by(_I.id)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows if r.chat]

    async def settled_since(self, since: datetime, limit: int) -> builtins.list[Inquiry]:
        query = (
            select(inquiries)
            .where(_I.updated >= since, _I.status != PENDING, _I.chat.is_not(None))
            .order_by(_I.updated, _I.id)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows if r.chat]

    async def set_chat(
        self, inquiry_id: int, chat: dict[str, Any], expected_updated: datetime, now: datetime
    ) -> Inquiry | None:
        async with self.store.write(single=True) as conn:
            row = (
                await conn.execute(
                    update(inquiries)
                    .where(_I.id == inquiry_id, _I.updated == expected_updated)
                    .values(chat=chat, updated=now)
                    .returning(*inquiries.c)
                )
            ).first()
        return None if row is None else _record(row)

    async def overdue(self, now: datetime, limit: int) -> builtins.list[Inquiry]:
        query = (
            select(inquiries)
            .where(_I.status == PENDING, _I.timeout_at.is_not(None), _I.timeout_at <= now)
            .order_by(_I.timeout_at)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [_record(r) for r in rows]

    async def unsettled(
        self, live: Sequence[str], limit: int
    ) -> builtins.list[tuple[Inquiry, str]]:
        pending_but_stopped = (_I.status == PENDING) & (executions.c.status != "running")
        settled_but_live = (_I.status != PENDING) & executions.c.status.in_(list(live))
        query = (
            select(inquiries, executions.c.status.label("execution_status"))
            .join(executions, executions.c.id == _I.execution)
            .where(pending_but_stopped | settled_but_live)
            .order_by(_I.id)
            .limit(limit)
        )
        async with self.store.read() as conn:
            rows = (await conn.execute(query)).all()
        return [(_record(r), str(r.execution_status)) for r in rows]


def inquiry_repository(store: Store) -> InquiryRepository:
    return SqlInquiries(store)
