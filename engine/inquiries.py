"""Inquiries, as Attune's: a run that asks a human and waits (``core.ask``, or any action whose
result data is ``{"__inquiry": {...}}``).

Model: the execution stays ``running`` while it waits, but no worker holds it (the worker's
slot is freed; the row loses its worker and heartbeat, so the abandon sweep leaves it alone).
The first valid answer (a conditional UPDATE from ``pending``) ends the execution ``completed``
with the answer in its result; the deadline ends both ``timeout``; cancelling the execution
cancels the inquiry. :class:`InquirySweep` (in every serve process) ends overdue inquiries and
settles executions whose inquiry moved (or inquiries whose execution was cancelled).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from engine import broker as topics
from engine.audit import AuditLog
from engine.audit_records import AuditEntry
from engine.auth import Principal
from engine.background import cancel_and_wait
from engine.clock import now_utc
from engine.errors import Conflict, Forbidden, InvalidRequest, NotFound
from engine.inquiry_records import (
    CANCELLED,
    PENDING,
    RESPONDED,
    STATUSES,
    TIMEOUT,
    Inquiry,
    InquiryFilter,
    InquiryRepository,
    InquiryRequest,
    schema_problem,
)
from engine.service import LIVE, ExecutionService
from engine.status import ExecutionStatus

if TYPE_CHECKING:
    from engine.broker import Broker, Envelope
    from engine.runtime import Runtime

log = logging.getLogger(f"attune.{__name__}")

MAX_LIMIT = 500
SWEEP_BATCH = 200
#: How often a serve process looks for overdue inquiries (a timeout is late by this at most).
SWEEP_INTERVAL_S = 1.0


def _answer_entry(
    inquiry: Inquiry, by: str, source: str, outcome: str, *, role: str | None
) -> AuditEntry:
    return AuditEntry(
        actor=by,
        role=role,
        source=source,
        verb="inquiry respond",
        outcome=outcome,
        detail=f"inquiry #{inquiry.id}",
        execution_id=inquiry.execution,
    )


class InquiryService:
    def __init__(
        self, repo: InquiryRepository, executions: ExecutionService, audit: AuditLog
    ) -> None:
        self.repo = repo
        self.executions = executions
        #: Every answer taken, and every API answer refused, is an audit row.
        self.audit = audit

    # -- the worker side --------------------------------------------------------------------

    async def park(
        self, execution_id: int, worker_id: str, run_result: dict[str, Any], request: InquiryRequest
    ) -> Inquiry | None:
        """Record the question and let the execution wait without its worker."""
        now = now_utc()
        deadline = now + timedelta(seconds=request.timeout_s) if request.timeout_s else None
        made = await self.repo.park(execution_id, worker_id, run_result, request, deadline, now)
        if made is not None:
            log.info("execution %s waits for inquiry %s", execution_id, made.id)
        return made

    # -- reading ----------------------------------------------------------------------------

    async def get(self, inquiry_id: int) -> Inquiry:
        found = await self.repo.get(inquiry_id)
        if found is None:
            raise NotFound(f"Inquiry with ID {inquiry_id} not found")
        return found

    async def list(
        self, where: InquiryFilter, *, limit: int = 50, offset: int = 0
    ) -> tuple[builtins.list[Inquiry], int]:
        if where.status is not None and where.status not in STATUSES:
            raise InvalidRequest(
                f"unknown status '{where.status}' (expected one of {', '.join(STATUSES)})"
            )
        if not 1 <= limit <= MAX_LIMIT or offset < 0:
            raise InvalidRequest(f"limit must be 1-{MAX_LIMIT} and offset at least 0")
        return await self.repo.list(where, limit, offset), await self.repo.count(where)

    # -- answering --------------------------------------------------------------------------

    async def may_answer(self, inquiry: Inquiry, who: Principal) -> bool:
        """The assigned identity, a login or role among the assignees, or an admin; with no
        one assigned, whoever started the execution (or an admin)."""
        if who.is_admin:
            return True
        if inquiry.assigned_to is not None or inquiry.assignees:
            return (who.user_id is not None and who.user_id == inquiry.assigned_to) or bool(
                {who.login, who.role} & set(inquiry.assignees)
            )
        started_by = (await self.executions.get(inquiry.execution)).requester
        return bool(who.login) and started_by.get("identity") == who.login

    async def respond(self, inquiry_id: int, response: Any, who: Principal) -> Inquiry:
        inquiry = await self.get(inquiry_id)
        if not await self.may_answer(inquiry, who):
            await self.audit.record(
                _answer_entry(inquiry, who.login, "api", "denied", role=who.role)
            )
            raise Forbidden(f"{who.login} is not assigned to inquiry {inquiry_id}")
        return await self.answer(inquiry, response, who.login, source="api", role=who.role)

    async def answer(
        self,
        inquiry: Inquiry,
        response: Any,
        by: str,
        *,
        source: str = "slack",
        role: str | None = None,
    ) -> Inquiry:
        """Record the first valid answer and end the execution ``completed`` with it (the
        caller has checked who may answer); the answer is audited."""
        if inquiry.status != PENDING:
            raise Conflict(f"inquiry {inquiry.id} is already {inquiry.status}")
        problem = schema_problem(inquiry.response_schema, response)
        if problem is not None:
            raise InvalidRequest(problem)
        settled = await self.repo.settle(
            inquiry.id, RESPONDED, now_utc(), response=response, responded_by=by
        )
        if settled is None:
            current = await self.get(inquiry.id)
            raise Conflict(f"inquiry {inquiry.id} is already {current.status}")
        await self.audit.record(_answer_entry(settled, by, source, "accepted", role=role))
        await self._end_execution(settled)
        return settled

    async def _end_execution(self, inquiry: Inquiry) -> bool:
        """Move the waiting execution to the end the inquiry's status means; False when it had
        already ended (another process did it)."""
        execution = await self.executions.get(inquiry.execution)
        if ExecutionStatus(execution.status).is_terminal:
            return False
        result = dict(execution.result or {})
        if inquiry.status == RESPONDED:
            status = ExecutionStatus.COMPLETED
            result |= {
                "succeeded": True,
                "error": None,
                "data": {
                    "inquiry": inquiry.id,
                    "response": inquiry.response,
                    "responded_by": inquiry.responded_by,
                },
            }
        elif inquiry.status == TIMEOUT:
            status = ExecutionStatus.TIMEOUT
            result |= {
                "succeeded": False,
                "data": {"inquiry": inquiry.id},
                "error": f"inquiry {inquiry.id} was not answered in time",
            }
        else:
            status = ExecutionStatus.CANCELLED
            result |= {
                "succeeded": False,
                "data": {"inquiry": inquiry.id},
                "error": f"cancelled while waiting for inquiry {inquiry.id}",
            }
        return await self.executions.finish(inquiry.execution, status, result) is not None

    # -- the sweep --------------------------------------------------------------------------

    async def sweep(self) -> int:
        """End overdue inquiries and settle executions and inquiries that disagree; returns
        how many executions this call ended. Safe in any number of processes (each move is a
        conditional update)."""
        moved = 0
        for inquiry in await self.repo.overdue(now_utc(), SWEEP_BATCH):
            settled = await self.repo.settle(inquiry.id, TIMEOUT, now_utc())
            if settled is not None:
                log.info("inquiry %s timed out", inquiry.id)
                moved += await self._end_execution(settled)
        for inquiry, execution_status in await self.repo.unsettled(LIVE, SWEEP_BATCH):
            if inquiry.status == PENDING:
                # Its execution was asked to cancel (or ended some other way).
                settled = await self.repo.settle(inquiry.id, CANCELLED, now_utc())
                if settled is None:
                    continue
                log.info("inquiry %s cancelled with its execution", inquiry.id)
                inquiry = settled
            if execution_status in LIVE:
                moved += await self._end_execution(inquiry)
        return moved


class InquirySweep:
    """The loop of a serve process that runs :meth:`InquiryService.sweep` every
    ``interval_s``, and at once when an execution is asked to cancel."""

    def __init__(
        self, service: InquiryService, interval_s: float, broker: Broker | None = None
    ) -> None:
        self.service = service
        self.interval_s = interval_s
        self.broker = broker
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> InquirySweep:
        if self.broker is not None:
            await self.broker.consume(None, [topics.CANCEL], self._on_cancel, prefetch=4)
        self._task = asyncio.create_task(self._loop(), name="inquiries")
        return self

    async def _on_cancel(self, _envelope: Envelope) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            try:
                await self.service.sweep()
            except Exception as exc:
                log.warning("inquiry sweep failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.interval_s)
            self._wake.clear()

    async def stop(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)


def inquiries_of(runtime: Runtime) -> InquiryService:
    return runtime.inquiries
