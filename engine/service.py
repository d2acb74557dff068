"""ExecutionService: the one place that changes an execution.

Every status change is a conditional UPDATE (``WHERE status IN allowed_sources(target)``), so a
duplicate message or a race between two workers moves a row at most once. Terminal changes write
the outbox rows (``deliveries``) for the execution's chat card or callback URL in the same
transaction. Broker messages are doorbells published after commit; when one is lost, the sweep
(:meth:`ExecutionService.requeue_stale`) rings again.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from cachetools import LRUCache

from engine import broker as topics
from engine.audit import AuditEntry
from engine.broker import Broker
from engine.catalog import Catalog
from engine.clock import now_utc
from engine.concurrency import group_key
from engine.concurrency_slots import Slots
from engine.crypto import SecretBox
from engine.errors import Conflict, EngineError, InvalidRequest, NotFound
from engine.metrics import Metrics
from engine.notifications import Notifier
from engine.packs import ActionSpec
from engine.params import REDACTED, redact, validate_parameters
from engine.records import (
    Change,
    Claimed,
    Delivery,
    Event,
    Execution,
    ExecutionFilter,
    Executor,
    NewExecution,
    Route,
    StoredExecution,
    chat_target,
)
from engine.retries import TRANSIENT, RetryPolicy
from engine.status import PENDING, TERMINAL, ExecutionStatus, allowed_sources
from engine.storage import Store
from engine.storage.executions import execution_repository
from engine.storage.retries import retry_repository

log = logging.getLogger(f"attune.{__name__}")

#: Largest page of a list request.
MAX_PER_PAGE = 100
#: Statuses of a run a worker holds (kept alive by its heartbeat).
LIVE = (ExecutionStatus.RUNNING.value, ExecutionStatus.CANCELING.value)
#: During a broker outage, at most one warning about failed publishes this often.
PUBLISH_WARNING_EVERY_S = 10.0
#: Executions republished per sweep at most.
SWEEP_BATCH = 500


class ExecutionService:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        catalog: Catalog,
        secrets: SecretBox,
        metrics: Metrics,
        *,
        default_timeout_s: float,
        notifier: Notifier | None = None,
        retry_policy: RetryPolicy | None = None,
    ) -> None:
        self.executions = execution_repository(store)
        #: Claims of runs held by a concurrency policy, and the doorbells of their groups.
        self.slots = Slots(store, self.executions, catalog, self.publish_soon)
        #: When a transiently ended run is retried (engine/retries.py), and the retry marks.
        self.retry_policy = retry_policy or RetryPolicy()
        self.retry_marks = retry_repository(store)
        #: Tells the web UI's ``/ws`` listeners of each change (none listening: no cost).
        self.notifier = notifier
        self.broker = broker
        self.catalog = catalog
        self.secrets = secrets
        self.metrics = metrics
        #: Counter children by (status, action): prometheus's labels() lookup, done once.
        self._transitions: LRUCache[tuple[str, str], Any] = LRUCache(maxsize=10_000)
        self.default_timeout_s = default_timeout_s
        #: Called after a submission with a chat route (its "created" delivery) is committed.
        self.on_chat_submitted: Callable[[], None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._failed_publishes = 0
        self._last_publish_warning = -PUBLISH_WARNING_EVERY_S

    # -- requests ---------------------------------------------------------------------------

    async def submit(
        self,
        action_ref: str,
        parameters: dict[str, Any] | None,
        executor: Executor,
        *,
        callback_url: str | None = None,
        parent: int | None = None,
        enforcement: int | None = None,
        chat: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        audit_entry: AuditEntry | None = None,
        action: ActionSpec | None = None,
        secret_params: frozenset[str] = frozenset(),
    ) -> Execution:
        """Validate, record as ``requested`` (with its audit entry and first outbox row, in one
        transaction) and ring the broker.

        Raises NotFound (unknown action), InvalidParameters (naming the parameter), or
        Conflict when ``idempotency_key`` is taken. ``secret_params`` are kept secret like the
        action's own secret parameters (a rule's values read with ``kv.get_secret``).
        """
        new = await self.prepare(
            action_ref,
            parameters,
            executor,
            callback_url=callback_url,
            parent=parent,
            enforcement=enforcement,
            chat=chat,
            idempotency_key=idempotency_key,
            action=action,
            secret_params=secret_params,
        )
        audited = audit_entry.values() if audit_entry is not None else None
        row = await self.executions.submit(new, audited, chat_target(chat))
        self._submitted(row)
        if chat and self.on_chat_submitted is not None:
            self.on_chat_submitted()
        return row.record()

    async def prepare(
        self,
        action_ref: str,
        parameters: dict[str, Any] | None,
        executor: Executor,
        *,
        callback_url: str | None = None,
        parent: int | None = None,
        enforcement: int | None = None,
        chat: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        action: ActionSpec | None = None,
        secret_params: frozenset[str] = frozenset(),
    ) -> NewExecution:
        """The row :meth:`submit` records, validated (NotFound, InvalidRequest,
        InvalidParameters) and with its secrets sealed; nothing is written."""
        if action is None or action.ref != action_ref:
            action = await self.catalog.get_action(action_ref)
        if not action.enabled:
            why = f": {action.disabled_reason}" if action.disabled_reason else ""
            raise InvalidRequest(f"action '{action_ref}' is disabled{why}")
        params = validate_parameters(action.param_schema, parameters)
        secret_names = action.secrets | secret_params
        sealed = self.secrets.seal({k: v for k, v in params.items() if k in secret_names})
        now = now_utc()
        return NewExecution(
            action_ref=action.ref,
            status=ExecutionStatus.REQUESTED.value,
            config=redact(params, secret_names),
            secrets=sealed,
            parent=parent,
            enforcement=enforcement,
            executor=executor.as_dict(),
            timeout_s=action.timeout_s or self.default_timeout_s,
            callback_url=callback_url,
            chat=chat,
            idempotency_key=idempotency_key,
            created=now,
            updated=now,
            concurrency_key=group_key(action.ref, action.concurrency, params, secret_names),
        )

    async def submit_many(
        self, batch: builtins.list[tuple[NewExecution, AuditEntry | None]]
    ) -> builtins.list[Execution]:
        """Record every prepared execution (:meth:`prepare`) with its audit entry and first
        outbox row in one transaction, all or none (Conflict when an idempotency key is
        taken); then ring the broker for each, in order."""
        rows = await self.executions.submit_many(
            [
                (new, entry.values() if entry is not None else None, chat_target(new.chat))
                for new, entry in batch
            ]
        )
        for row in rows:
            self._submitted(row)
        if any(new.chat for new, _ in batch) and self.on_chat_submitted is not None:
            self.on_chat_submitted()
        return [row.record() for row in rows]

    def announce(self, row: StoredExecution) -> None:
        """Tell of an execution recorded outside :meth:`submit` (a retry, engine/retries.py)
        as of a submission: the broker, the web UI, the chat drainer."""
        self._submitted(row)
        if row.chat and self.on_chat_submitted is not None:
            self.on_chat_submitted()

    def _submitted(self, row: StoredExecution) -> None:
        self._note(row.id, row.action_ref, ExecutionStatus.REQUESTED)
        self.publish_soon(topics.REQUESTED, {"execution_id": row.id, "action_ref": row.action_ref})

    async def cancel(self, execution_id: int, by: str) -> Execution:
        """Cancel: ``cancelled`` at once before hand-off, ``canceling`` while running; an
        ended run whose retry is pending has its retry called off (the record returned is
        still ended, with no ``retry_due_at``)."""
        for _ in range(5):
            current = await self._row(execution_id)
            status = ExecutionStatus(current.status)
            if status in TERMINAL:
                if current.retry_due_at is not None:
                    called_off = await self.retry_marks.call_off(execution_id)
                    if called_off is not None:
                        log.info("execution %s: retry called off by %s", execution_id, by)
                        return called_off.record()
                retried = await self._retried_as(current)
                if retried is not None:
                    raise Conflict(
                        f"execution {execution_id} is already {status.value}; its retry is "
                        f"execution {retried}: cancel that one"
                    )
                raise Conflict(f"execution {execution_id} is already {status.value}")
            if status is ExecutionStatus.CANCELING:
                return current.record()
            if status in PENDING:
                result = {"succeeded": False, "error": f"cancelled by {by} before it started"}
                row = await self._transition(
                    execution_id,
                    ExecutionStatus.CANCELLED,
                    only_from=PENDING,  # if a worker claimed it meanwhile: look again
                    result=result,
                    finished_at=now_utc(),
                )
            else:
                row = await self._transition(execution_id, ExecutionStatus.CANCELING)
            if row is None:
                continue  # the status moved under us; look again
            if row.status == ExecutionStatus.CANCELING:
                self.publish_soon(topics.CANCEL, {"execution_id": execution_id})
            else:
                self._ended(row)
            return row.record()
        raise Conflict(f"execution {execution_id} is changing too fast to cancel; try again")

    async def get(self, execution_id: int) -> Execution:
        return (await self._row(execution_id)).record()

    async def list(
        self,
        *,
        status: builtins.list[str] | None = None,
        action_ref: str | None = None,
        action_like: builtins.list[str] | None = None,
        enforcement: int | None = None,
        parent: int | None = None,
        top_level_only: bool = False,
        pack: str | None = None,
        requester: str | None = None,
        person: str | None = None,
        original_execution: int | None = None,
        page: int = 1,
        per_page: int = 50,
    ) -> tuple[builtins.list[Execution], int]:
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
        if status:
            valid = {s.value for s in ExecutionStatus}
            unknown = [s for s in status if s not in valid]
            if unknown:
                raise InvalidRequest(
                    f"unknown status '{unknown[0]}' (expected one of "
                    f"{', '.join(s.value for s in ExecutionStatus)})"
                )
        where = ExecutionFilter(
            status=tuple(status) if status else None,
            action_ref=action_ref or None,
            action_like=None if action_like is None else tuple(action_like),
            enforcement=enforcement,
            parent=parent,
            top_level_only=top_level_only,
            pack=pack or None,
            requester=requester or None,
            person=person or None,
            original_execution=original_execution,
        )
        rows = await self.executions.list(where, limit=per_page, offset=(page - 1) * per_page)
        total = await self.executions.count(where)
        return [r.record() for r in rows], total

    async def count_by_status(self) -> dict[str, int]:
        return await self.executions.count_by_status()

    # -- worker side ------------------------------------------------------------------------

    async def claim(self, execution_id: int, worker_id: str) -> Claimed | None:
        """Move to ``running`` for ``worker_id``; None when another delivery already did."""
        now = now_utc()
        row = await self._transition(
            execution_id,
            ExecutionStatus.RUNNING,
            started_at=now,
            worker=worker_id,
            heartbeat_at=now,
            unkeyed=True,
        )
        if row is None:
            return await self._claim_with_slot(execution_id, worker_id)
        if row.chat:
            self.publish_soon(topics.STARTED, {"execution_id": row.id})
        return await self._hand_over(row)

    async def _claim_with_slot(self, execution_id: int, worker_id: str) -> Claimed | None:
        """The claim of a run held by a concurrency policy (engine/concurrency_slots.py);
        None when it is not one, waits for a slot, or is refused by its policy (then ended
        ``cancelled``, as Attune does)."""
        outcome = await self.slots.claim(execution_id, worker_id)
        if isinstance(outcome, dict):
            row = await self._transition(
                execution_id,
                ExecutionStatus.CANCELLED,
                only_from=PENDING,
                result=outcome,
                finished_at=now_utc(),
            )
            if row is not None:
                self._ended(row)
            return None
        if outcome is None:
            return None
        self._note(outcome.id, outcome.action_ref, ExecutionStatus.RUNNING)
        if outcome.chat:
            self.publish_soon(topics.STARTED, {"execution_id": outcome.id})
        return await self._hand_over(outcome)

    async def claim_pending(self, worker_id: str, limit: int) -> builtins.list[Claimed]:
        """Claim up to ``limit`` waiting executions straight from the database (used while the
        broker is down). PostgreSQL skips rows other workers are claiming (SKIP LOCKED)."""
        if limit <= 0:
            return []
        rows = await self.executions.claim_requested(worker_id, limit, now_utc())
        claimed = []
        for row in rows:
            self._note(row.id, row.action_ref, ExecutionStatus.RUNNING)
            if row.chat:
                self.publish_soon(topics.STARTED, {"execution_id": row.id})
            handed = await self._hand_over(row)
            if handed is not None:
                claimed.append(handed)
        if len(claimed) < limit:  # runs held by a concurrency policy: each with a slot
            try:
                for head in await self.slots.heads(limit - len(claimed)):
                    taken = await self._claim_with_slot(head, worker_id)
                    if taken is not None:
                        claimed.append(taken)
            except EngineError as exc:
                # The runs claimed so far are the caller's to run (raising would leave them
                # ``running`` with no one running them); the rest wait for the next poll.
                log.warning("claiming runs held by a concurrency policy: %s", exc.message)
        return claimed

    def _parameters(self, row: StoredExecution) -> dict[str, Any]:
        """The parameters an execution was asked with, secrets decrypted."""
        params = dict(row.config)
        for name, value in self.secrets.open(row.secrets).items():
            if params.get(name) == REDACTED:
                params[name] = value
        return params

    async def _hand_over(self, row: StoredExecution) -> Claimed | None:
        """The claimed ``row`` as its worker runs it; None when it cannot be run (its
        secrets no longer open: the secret key changed), then ended ``failed`` saying why, not
        left ``running`` with no one running it (and holding its concurrency slot)."""
        try:
            return self._claimed(row)
        except EngineError as exc:
            log.error("execution %s: cannot be run: %s", row.id, exc.message)
            result = {"succeeded": False, "error": f"cannot be run: {exc.message}"}
            await self.finish(row.id, ExecutionStatus.FAILED, result)
            return None

    def _claimed(self, row: StoredExecution) -> Claimed:
        return Claimed(
            id=row.id,
            action_ref=row.action_ref,
            parameters=self._parameters(row),
            timeout_s=row.timeout_s,
            requester=dict(row.executor or {}),
            enforcement=row.enforcement,
            retry_count=row.retry_count,
            in_workflow=row.workflow_task is not None,
        )

    async def record_process(self, execution_id: int, pid: int, pid_start: int | None) -> None:
        await self.executions.record_process(execution_id, pid, pid_start)

    async def heartbeat(self, worker_id: str) -> builtins.list[int]:
        """Mark this worker's runs alive; return those meanwhile asked to cancel."""
        rows = await self.executions.heartbeat(worker_id, LIVE, now_utc())
        return [i for i, status in rows if status == ExecutionStatus.CANCELING.value]

    async def abandon(
        self, *, stale_for_s: float | None = None, workers: builtins.list[str] | None = None
    ) -> builtins.list[StoredExecution]:
        """End ``abandoned`` the runs whose worker is gone: silent for ``stale_for_s``, or one
        of ``workers`` (known dead). Returns the rows (with ``pid``) that were moved."""
        silent_since = (
            now_utc() - timedelta(seconds=stale_for_s) if stale_for_s is not None else None
        )
        candidates = await self.executions.live_runs(
            LIVE, silent_since=silent_since, workers=workers
        )
        moved = []
        for candidate_id, worker in candidates:
            retry_due_at = await self._retry_due(candidate_id, ExecutionStatus.ABANDONED)
            why = (
                f"no heartbeat from worker {worker} for {stale_for_s:g} s"
                if stale_for_s is not None
                else f"worker {worker} died"
            )
            row = await self._end(
                candidate_id,
                ExecutionStatus.ABANDONED,
                frozenset({ExecutionStatus.RUNNING, ExecutionStatus.CANCELING}),
                retry_due_at,
                result={"succeeded": False, "error": f"abandoned: {why}"},
                finished_at=now_utc(),
            )
            if row is not None:
                moved.append(row)
                self._ended(row)
        return moved

    async def workers_with_runs(self) -> builtins.list[str]:
        return await self.executions.workers_with_runs(LIVE)

    async def finish(
        self,
        execution_id: int,
        status: ExecutionStatus,
        result: dict[str, Any],
        *,
        retry_due_at: datetime | None = None,
    ) -> Execution | None:
        """Record the end of a run; None if the execution had already ended.
        ``retry_due_at``: when its retry is due (:meth:`RetryPolicy.due_for`), written by the
        same statement, unless the run had been asked to cancel (``canceling``)."""
        row = await self._end(
            execution_id,
            status,
            allowed_sources(status),
            retry_due_at,
            result=result,
            finished_at=now_utc(),
        )
        if row is None:
            return None
        if row.started_at is not None and row.finished_at is not None:
            seconds = (row.finished_at - row.started_at).total_seconds()
            self.metrics.run_duration.labels(row.action_ref, row.status).observe(seconds)
        self._ended(row)
        return row.record()

    def _ended(self, row: StoredExecution) -> None:
        """Ring ``execution.completed``; for a workflow's task run also ``workflow.task_ended``
        (the row says so: no query, and no message to the workflow advancer for the others)."""
        payload = {"execution_id": row.id, "status": row.status}
        self.publish_soon(topics.COMPLETED, payload)
        if row.workflow_task:
            self.publish_soon(topics.WORKFLOW_TASK_ENDED, payload | {"parent": row.parent})

    async def find_idempotent(self, key: str) -> Execution | None:
        row = await self.executions.find_by_key(key)
        return row.record() if row is not None else None

    async def parameters_of(self, execution_id: int) -> tuple[str, dict[str, Any]]:
        """An execution's action and its parameters with secrets decrypted (for a re-run)."""
        row = await self._row(execution_id)
        return row.action_ref, self._parameters(row)

    async def get_with_route(self, execution_id: int) -> tuple[Execution, Route]:
        """The record plus where its news goes (chat route, callback URL): for the listener."""
        row = await self._row(execution_id)
        return row.record(), row.route

    async def get_many_with_route(
        self, execution_ids: builtins.list[int]
    ) -> dict[int, tuple[Execution, Route]]:
        """:meth:`get_with_route` of several executions in one query (missing ones left out)."""
        rows = await self.executions.get_many(execution_ids)
        return {row.id: (row.record(), row.route) for row in rows}

    async def deliveries(self, execution_id: int) -> builtins.list[Delivery]:
        await self._row(execution_id)
        return await self.executions.deliveries(execution_id)

    async def requeue_stale(self, older_than_s: float) -> builtins.list[int]:
        """Ring again for ``requested`` rows untouched for ``older_than_s`` (lost messages)."""
        now = now_utc()
        cutoff = now - timedelta(seconds=older_than_s)
        rows = await self.executions.requeue_stale(
            ExecutionStatus.REQUESTED.value, cutoff, SWEEP_BATCH, now
        )
        for execution_id, action_ref in rows:
            await self.broker.publish(
                topics.REQUESTED, {"execution_id": execution_id, "action_ref": action_ref}
            )
        return [execution_id for execution_id, _ in rows]

    # -- internals --------------------------------------------------------------------------

    async def _end(
        self,
        execution_id: int,
        target: ExecutionStatus,
        sources: frozenset[ExecutionStatus],
        retry_due_at: datetime | None,
        **values: Any,
    ) -> StoredExecution | None:
        """End the run ``target`` from one of ``sources``; with its retry due at
        ``retry_due_at`` only if it was ``running``: a run asked to cancel (``canceling``) that
        then times out or loses its worker is not run again. The source is part of each
        conditional UPDATE, so a cancel racing the end cannot slip between."""
        if retry_due_at is not None and ExecutionStatus.RUNNING in sources:
            row = await self._transition(
                execution_id,
                target,
                only_from=frozenset({ExecutionStatus.RUNNING}),
                retry_due_at=retry_due_at,
                **values,
            )
            if row is not None:
                return row
            sources = sources - {ExecutionStatus.RUNNING}
            if not sources:
                return None
        return await self._transition(execution_id, target, only_from=sources, **values)

    async def _retried_as(self, row: StoredExecution) -> int | None:
        """The retry submitted for the ended ``row``, looked for only when its action could
        have retried it (a transient ending with retries left)."""
        status = ExecutionStatus(row.status)
        if status not in TRANSIENT:
            return None
        try:
            action = await self.catalog.get_action(row.action_ref)
        except NotFound:
            return None
        if row.retry_count >= action.max_retries:
            return None
        return await self.retry_marks.retry_of(row)

    async def _retry_due(self, execution_id: int, status: ExecutionStatus) -> datetime | None:
        """When the retry of a run about to end ``status`` is due, or None (for a sweep that
        ends runs: it knows neither their action nor their chain; a rare path)."""
        row = await self.executions.get(execution_id)
        if row is None or row.workflow_task:  # a workflow's task: the workflow's retry applies
            return None
        return await self.retry_policy.due_for(
            self.catalog, row.action_ref, row.retry_count, status
        )

    async def _row(self, execution_id: int) -> StoredExecution:
        row = await self.executions.get(execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        return row

    async def _transition(
        self,
        execution_id: int,
        target: ExecutionStatus,
        *,
        only_from: frozenset[ExecutionStatus] | None = None,
        unkeyed: bool = False,
        **values: Any,
    ) -> StoredExecution | None:
        """Conditional UPDATE to ``target`` from its allowed sources (narrowed by
        ``only_from``), with the outbox rows of its news (``running``, a claim: "started" to
        chat; a terminal status: "completed" to chat and callback), in one transaction (one
        statement on PostgreSQL); None when the row was not in one of the sources."""
        allowed = allowed_sources(target) & (only_from or allowed_sources(target))
        news: Event | None
        if target in TERMINAL:
            news = "completed"
        else:
            news = "started" if target is ExecutionStatus.RUNNING else None
        change = Change(
            status=target.value,
            sources=tuple(s.value for s in allowed),
            values=values,
            updated=now_utc(),
            event=news,
            chat_only=news == "started",
            unkeyed=unkeyed,
        )
        row = await self.executions.change(execution_id, change)
        if row is None:
            return None
        if row.concurrency_key is not None and target in TERMINAL:
            self.slots.wake(row.concurrency_key)  # its slot is free: the next run's turn
        self._note(execution_id, row.action_ref, target)
        return row

    def _note(self, execution_id: int, action_ref: str, status: ExecutionStatus) -> None:
        if self.notifier is not None and self.notifier.listening:
            kind = "created" if status is ExecutionStatus.REQUESTED else "status_changed"
            self.notifier.publish(
                f"execution_{kind}",
                "execution",
                execution_id,
                {"id": execution_id, "action_ref": action_ref, "status": status.value},
            )
        key = (status.value, action_ref)
        counter = self._transitions.get(key)
        if counter is None:
            counter = self._transitions[key] = self.metrics.transitions.labels(*key)
        counter.inc()
        log.info(
            "execution %s %s is now %s",
            execution_id,
            action_ref,
            status.value,
            extra={"execution_id": execution_id, "action_ref": action_ref, "status": status.value},
        )

    def publish_soon(self, routing_key: str, payload: dict[str, Any]) -> None:
        """Publish in the background: callers wait on the database only, never on the broker."""
        task = asyncio.get_running_loop().create_task(self._publish(routing_key, payload))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _publish(self, routing_key: str, payload: dict[str, Any]) -> None:
        try:
            await self.broker.publish(routing_key, payload)
        except Exception as exc:  # the sweep recovers a lost "requested"; others are advisory
            self._failed_publishes += 1
            now = time.monotonic()
            if now - self._last_publish_warning >= PUBLISH_WARNING_EVERY_S:
                log.warning(
                    "could not publish %s %s: %s (%d failed publishes since the last "
                    "warning; the sweep recovers them)",
                    routing_key,
                    payload,
                    exc,
                    self._failed_publishes,
                )
                self._failed_publishes = 0
                self._last_publish_warning = now

    async def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for background publishes (at shutdown)."""
        await self.slots.drain(timeout_s)
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)
