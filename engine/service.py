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
from datetime import timedelta
from typing import Any

from cachetools import LRUCache
from sqlalchemy import ColumnElement, Row, bindparam, false, func, insert, or_, select, update

from engine import broker as topics
from engine.audit import AuditEntry
from engine.broker import Broker
from engine.catalog import Catalog
from engine.counts import Totals
from engine.crypto import SecretBox
from engine.errors import Conflict, InvalidRequest, NotFound
from engine.metrics import Metrics
from engine.notifications import Notifier
from engine.packs import ActionSpec
from engine.params import REDACTED, redact, validate_parameters
from engine.records import (
    Claimed,
    Executor,
    delivery_record,
    delivery_target,
    execution_record,
)
from engine.status import PENDING, TERMINAL, ExecutionStatus, allowed_sources
from engine.storage import Conn, Store, folded
from engine.storage.fast import hot
from engine.storage.tables import audit, deliveries, executions, now_utc

log = logging.getLogger(f"attune.{__name__}")

#: Largest page of a list request.
MAX_PER_PAGE = 100
#: Statuses of a run a worker holds (kept alive by its heartbeat).
LIVE = (ExecutionStatus.RUNNING.value, ExecutionStatus.CANCELING.value)
#: During a broker outage, at most one warning about failed publishes this often.
PUBLISH_WARNING_EVERY_S = 10.0
#: Executions republished per sweep at most.
SWEEP_BATCH = 500


# Statements of the hot paths, built once (values come as execution parameters).
_INSERT_EXECUTION = hot(insert(executions).returning(*executions.c))
_INSERT_AUDIT = hot(insert(audit))
_INSERT_DELIVERY = hot(insert(deliveries))
_SELECT_EXECUTION = hot(select(executions).where(executions.c.id == bindparam("_id")))
#: Looked up before each submission that carries a key (every slash command's `run`: its
#: signature is the key), so on the driver like the insert that follows.
_SELECT_IDEMPOTENT = hot(
    select(executions).where(executions.c.idempotency_key == bindparam("_key"))
)
_SELECT_EXECUTIONS = hot(
    select(executions).where(executions.c.id.in_(bindparam("_ids", expanding=True)))
)
_RECORD_PROCESS = hot(update(executions).where(executions.c.id == bindparam("_id")))
_TRANSITION = hot(
    update(executions)
    .where(
        executions.c.id == bindparam("_id"),
        executions.c.status.in_(bindparam("_sources", expanding=True)),
    )
    .returning(*executions.c)
)


def _with_route(row: Row[Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return execution_record(row), {"chat": row.chat, "callback_url": row.callback_url}


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
    ) -> None:
        self.store = store
        #: Tells the web UI's ``/ws`` listeners of each change (none listening: no cost).
        self.notifier = notifier
        self.broker = broker
        self.catalog = catalog
        self.secrets = secrets
        self.metrics = metrics
        #: Counter children by (status, action): prometheus's labels() lookup, done once.
        self._transitions: LRUCache[tuple[str, str], Any] = LRUCache(maxsize=10_000)
        self.default_timeout_s = default_timeout_s
        self.totals = Totals(store)
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
    ) -> dict[str, Any]:
        """Validate, record as ``requested`` (with its audit entry and first outbox row, in one
        transaction) and ring the broker.

        Raises NotFound (unknown action), InvalidParameters (naming the parameter), or
        Conflict when ``idempotency_key`` is taken. ``secret_params`` are kept secret like the
        action's own secret parameters (a rule's values read with ``kv.get_secret``).
        """
        if action is None or action.ref != action_ref:
            action = await self.catalog.get_action(action_ref)
        if not action.enabled:
            why = f": {action.disabled_reason}" if action.disabled_reason else ""
            raise InvalidRequest(f"action '{action_ref}' is disabled{why}")
        params = validate_parameters(action.param_schema, parameters)
        secret_names = action.secrets | secret_params
        sealed = self.secrets.seal({k: v for k, v in params.items() if k in secret_names})
        now = now_utc()
        values = {
            "action_ref": action.ref,
            "status": ExecutionStatus.REQUESTED.value,
            "config": redact(params, secret_names),
            "secrets": sealed,
            "parent": parent,
            "enforcement": enforcement,
            "executor": executor.as_dict(),
            "result": None,
            "timeout_s": action.timeout_s or self.default_timeout_s,
            "callback_url": callback_url,
            "chat": chat,
            "idempotency_key": idempotency_key,
            "created": now,
            "updated": now,
        }
        if self.store.is_sqlite:
            async with self.store.write() as conn:
                row = (await conn.execute(_INSERT_EXECUTION, values)).one()
                if chat:
                    await self._enqueue(conn, row, "created", now, chat_only=True)
                if audit_entry is not None:
                    await conn.execute(
                        _INSERT_AUDIT,
                        audit_entry.values(parameters=row.config, execution_id=row.id),
                    )
        else:
            row = await self._submit_folded(values, audit_entry, bool(chat), now)
        self._note(row.id, action.ref, ExecutionStatus.REQUESTED)
        self.publish_soon(topics.REQUESTED, {"execution_id": row.id, "action_ref": action.ref})
        if chat and self.on_chat_submitted is not None:
            self.on_chat_submitted()
        return execution_record(row)

    async def _submit_folded(
        self, values: dict[str, Any], entry: AuditEntry | None, chat: bool, now: Any
    ) -> Row[Any]:
        """PostgreSQL: the execution, its audit entry and card row in one statement."""
        audited = entry.values() if entry is not None else None
        params = dict(values)
        if audited is not None:
            params.update(
                {folded.AUDIT_PREFIX + k: v for k, v in audited.items() if k not in folded.FROM_ROW}
            )
        if chat:
            params |= {folded.EVENT: "created", folded.NOW: now}
        stmt = folded.submission(
            frozenset(values), None if audited is None else frozenset(audited), chat
        )
        async with self.store.write(single=True) as conn:
            return (await conn.execute(stmt, params)).one()

    async def cancel(self, execution_id: int, by: str) -> dict[str, Any]:
        """Cancel: ``cancelled`` at once before hand-off, ``canceling`` while running."""
        for _ in range(5):
            current = await self._row(execution_id)
            status = ExecutionStatus(current.status)
            if status in TERMINAL:
                raise Conflict(f"execution {execution_id} is already {status.value}")
            if status is ExecutionStatus.CANCELING:
                return execution_record(current)
            async with self.store.write() as conn:
                if status in PENDING:
                    result = {"succeeded": False, "error": f"cancelled by {by} before it started"}
                    row = await self._transition(
                        conn,
                        execution_id,
                        ExecutionStatus.CANCELLED,
                        only_from=PENDING,  # if a worker claimed it meanwhile: look again
                        result=result,
                        finished_at=now_utc(),
                    )
                else:
                    row = await self._transition(conn, execution_id, ExecutionStatus.CANCELING)
            if row is None:
                continue  # the status moved under us; look again
            if row.status == ExecutionStatus.CANCELING:
                self.publish_soon(topics.CANCEL, {"execution_id": execution_id})
            else:
                self.publish_soon(
                    topics.COMPLETED, {"execution_id": execution_id, "status": row.status}
                )
            return execution_record(row)
        raise Conflict(f"execution {execution_id} is changing too fast to cancel; try again")

    async def get(self, execution_id: int) -> dict[str, Any]:
        return execution_record(await self._row(execution_id))

    async def list(
        self,
        *,
        status: list[str] | None = None,
        action_ref: str | None = None,
        action_like: list[str] | None = None,
        enforcement: int | None = None,
        parent: int | None = None,
        pack: str | None = None,
        page: int = 1,
        per_page: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
        where: builtins.list[ColumnElement[bool]] = []
        if status:
            valid = {s.value for s in ExecutionStatus}
            unknown = [s for s in status if s not in valid]
            if unknown:
                raise InvalidRequest(
                    f"unknown status '{unknown[0]}' (expected one of "
                    f"{', '.join(s.value for s in ExecutionStatus)})"
                )
            where.append(executions.c.status.in_(status))
        if action_ref:
            where.append(executions.c.action_ref == action_ref)
        if enforcement is not None:
            where.append(executions.c.enforcement == enforcement)
        if parent is not None:
            where.append(executions.c.parent == parent)
        if pack:
            escaped = pack.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(executions.c.action_ref.like(f"{escaped}.%", escape="\\"))
        if action_like is not None:  # only actions matching one of these LIKE patterns
            where.append(
                or_(false(), *(executions.c.action_ref.like(p, escape="\\") for p in action_like))
            )
        query = (
            select(executions)
            .where(*where)
            .order_by(executions.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.store.read(offload=True) as conn:
            rows = (await conn.execute(query)).all()
        key = (
            tuple(status or ()),
            action_ref,
            None if action_like is None else tuple(action_like),
            enforcement,
            parent,
            pack,
        )
        total = await self.totals.count(executions, where, key)
        return [execution_record(r) for r in rows], total

    async def count_by_status(self) -> dict[str, int]:
        async with self.store.read(offload=True) as conn:
            rows = (
                (
                    await conn.execute(
                        select(executions.c.status, func.count()).group_by(executions.c.status)
                    )
                )
                .tuples()
                .all()
            )
        return {status: int(n) for status, n in rows}

    # -- worker side ------------------------------------------------------------------------

    async def claim(self, execution_id: int, worker_id: str) -> Claimed | None:
        """Move to ``running`` for ``worker_id``; None when another delivery already did."""
        now = now_utc()
        async with self.store.write(single=True) as conn:
            row = await self._transition(
                conn,
                execution_id,
                ExecutionStatus.RUNNING,
                started_at=now,
                worker=worker_id,
                heartbeat_at=now,
            )
        if row is None:
            return None
        if row.chat:
            self.publish_soon(topics.STARTED, {"execution_id": row.id})
        return self._claimed(row)

    async def claim_pending(self, worker_id: str, limit: int) -> builtins.list[Claimed]:
        """Claim up to ``limit`` waiting executions straight from the database (used while the
        broker is down). PostgreSQL skips rows other workers are claiming (SKIP LOCKED)."""
        if limit <= 0:
            return []
        now = now_utc()
        pick = (
            select(executions.c.id)
            .where(executions.c.status == ExecutionStatus.REQUESTED.value)
            .order_by(executions.c.id)
            .limit(limit)
        )
        if not self.store.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        async with self.store.write() as conn:
            rows = (
                await conn.execute(
                    update(executions)
                    .where(
                        executions.c.id.in_(pick.scalar_subquery()),
                        executions.c.status == ExecutionStatus.REQUESTED.value,
                    )
                    .values(
                        status=ExecutionStatus.RUNNING.value,
                        updated=now,
                        started_at=now,
                        worker=worker_id,
                        heartbeat_at=now,
                    )
                    .returning(*executions.c)
                )
            ).all()
            for row in rows:
                if row.chat:
                    await self._enqueue(conn, row, "started", now, chat_only=True)
        claimed = []
        for row in rows:
            self._note(row.id, row.action_ref, ExecutionStatus.RUNNING)
            if row.chat:
                self.publish_soon(topics.STARTED, {"execution_id": row.id})
            claimed.append(self._claimed(row))
        return claimed

    def _parameters(self, row: Row[Any]) -> dict[str, Any]:
        """The parameters an execution was asked with, secrets decrypted."""
        params = dict(row.config)
        for name, value in self.secrets.open(row.secrets).items():
            if params.get(name) == REDACTED:
                params[name] = value
        return params

    def _claimed(self, row: Row[Any]) -> Claimed:
        return Claimed(
            id=row.id,
            action_ref=row.action_ref,
            parameters=self._parameters(row),
            timeout_s=row.timeout_s,
            requester=dict(row.executor or {}),
            enforcement=row.enforcement,
        )

    async def record_process(self, execution_id: int, pid: int, pid_start: int | None) -> None:
        async with self.store.write(single=True) as conn:
            await conn.execute(
                _RECORD_PROCESS, {"_id": execution_id, "pid": pid, "pid_start": pid_start}
            )

    async def heartbeat(self, worker_id: str) -> builtins.list[int]:
        """Mark this worker's runs alive; return those meanwhile asked to cancel."""
        async with self.store.write(single=True) as conn:
            rows = (
                await conn.execute(
                    update(executions)
                    .where(
                        executions.c.worker == worker_id,
                        executions.c.status.in_(LIVE),
                    )
                    .values(heartbeat_at=now_utc())
                    .returning(executions.c.id, executions.c.status)
                )
            ).all()
        return [r.id for r in rows if r.status == ExecutionStatus.CANCELING.value]

    async def abandon(
        self, *, stale_for_s: float | None = None, workers: builtins.list[str] | None = None
    ) -> builtins.list[Row[Any]]:
        """End ``abandoned`` the runs whose worker is gone: silent for ``stale_for_s``, or one
        of ``workers`` (known dead). Returns the rows (with ``pid``) that were moved."""
        where: builtins.list[ColumnElement[bool]] = [executions.c.status.in_(LIVE)]
        if stale_for_s is not None:
            where.append(executions.c.heartbeat_at < now_utc() - timedelta(seconds=stale_for_s))
        if workers is not None:
            where.append(executions.c.worker.in_(workers))
        async with self.store.read() as conn:
            candidates = (
                await conn.execute(select(executions.c.id, executions.c.worker).where(*where))
            ).all()
        moved = []
        for candidate in candidates:
            why = (
                f"no heartbeat from worker {candidate.worker} for {stale_for_s:g} s"
                if stale_for_s is not None
                else f"worker {candidate.worker} died"
            )
            async with self.store.write() as conn:
                row = await self._transition(
                    conn,
                    candidate.id,
                    ExecutionStatus.ABANDONED,
                    only_from=frozenset({ExecutionStatus.RUNNING, ExecutionStatus.CANCELING}),
                    result={"succeeded": False, "error": f"abandoned: {why}"},
                    finished_at=now_utc(),
                )
            if row is not None:
                moved.append(row)
                self.publish_soon(topics.COMPLETED, {"execution_id": row.id, "status": row.status})
        return moved

    async def workers_with_runs(self) -> builtins.list[str]:
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(executions.c.worker)
                    .distinct()
                    .where(
                        executions.c.status.in_(LIVE),
                        executions.c.worker.is_not(None),
                    )
                )
            ).all()
        return [r.worker for r in rows]

    async def finish(
        self, execution_id: int, status: ExecutionStatus, result: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Record the end of a run; None if the execution had already ended."""
        async with self.store.write(single=True) as conn:
            row = await self._transition(
                conn, execution_id, status, result=result, finished_at=now_utc()
            )
        if row is None:
            return None
        if row.started_at is not None and row.finished_at is not None:
            seconds = (row.finished_at - row.started_at).total_seconds()
            self.metrics.run_duration.labels(row.action_ref, row.status).observe(seconds)
        self.publish_soon(topics.COMPLETED, {"execution_id": execution_id, "status": row.status})
        return execution_record(row)

    async def find_idempotent(self, key: str) -> dict[str, Any] | None:
        async with self.store.read() as conn:
            row = (await conn.execute(_SELECT_IDEMPOTENT, {"_key": key})).first()
        return execution_record(row) if row is not None else None

    async def parameters_of(self, execution_id: int) -> tuple[str, dict[str, Any]]:
        """An execution's action and its parameters with secrets decrypted (for a re-run)."""
        row = await self._row(execution_id)
        return row.action_ref, self._parameters(row)

    async def get_with_route(self, execution_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The record plus where its news goes (chat route, callback URL): for the listener."""
        return _with_route(await self._row(execution_id))

    async def get_many_with_route(
        self, execution_ids: builtins.list[int]
    ) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
        """:meth:`get_with_route` of several executions in one query (missing ones left out)."""
        async with self.store.read() as conn:
            rows = (await conn.execute(_SELECT_EXECUTIONS, {"_ids": execution_ids})).all()
        return {row.id: _with_route(row) for row in rows}

    async def update_chat(self, execution_id: int, chat: dict[str, Any]) -> None:
        """Store the chat route (e.g. the card's message ts once it is posted)."""
        async with self.store.write(single=True) as conn:
            await conn.execute(
                update(executions).where(executions.c.id == execution_id).values(chat=chat)
            )

    async def deliveries(self, execution_id: int) -> builtins.list[dict[str, Any]]:
        await self._row(execution_id)
        async with self.store.read() as conn:
            rows = (
                await conn.execute(
                    select(deliveries)
                    .where(deliveries.c.execution_id == execution_id)
                    .order_by(deliveries.c.id)
                )
            ).all()
        return [delivery_record(r) for r in rows]

    async def requeue_stale(self, older_than_s: float) -> builtins.list[int]:
        """Ring again for ``requested`` rows untouched for ``older_than_s`` (lost messages)."""
        cutoff = now_utc() - timedelta(seconds=older_than_s)
        is_stale = (
            executions.c.status == ExecutionStatus.REQUESTED.value,
            executions.c.updated < cutoff,
        )
        # The ids first, then the update by id: as one ``UPDATE ... WHERE id IN (SELECT ...
        # LIMIT)`` PostgreSQL planned a young table (no statistics yet) as a nested loop that
        # re-ran the subquery per row (measured: 0.3 s for 650 requested rows, every sweep).
        async with self.store.write() as conn:
            ids = (
                (
                    await conn.execute(
                        select(executions.c.id)
                        .where(*is_stale)
                        .order_by(executions.c.id)
                        .limit(SWEEP_BATCH)
                    )
                )
                .scalars()
                .all()
            )
            if not ids:
                return []
            rows = (
                await conn.execute(
                    update(executions)
                    .where(executions.c.id.in_(ids), *is_stale)
                    .values(updated=now_utc())
                    .returning(executions.c.id, executions.c.action_ref)
                )
            ).all()
        for row in rows:
            await self.broker.publish(
                topics.REQUESTED, {"execution_id": row.id, "action_ref": row.action_ref}
            )
        return [row.id for row in rows]

    # -- internals --------------------------------------------------------------------------

    async def _row(self, execution_id: int) -> Row[Any]:
        async with self.store.read() as conn:
            row = (await conn.execute(_SELECT_EXECUTION, {"_id": execution_id})).first()
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        return row

    async def _transition(
        self,
        conn: Conn,
        execution_id: int,
        target: ExecutionStatus,
        *,
        only_from: frozenset[ExecutionStatus] | None = None,
        **values: Any,
    ) -> Row[Any] | None:
        """Conditional UPDATE to ``target`` from its allowed sources (narrowed by
        ``only_from``), with the outbox rows of its news (``running``, a claim: "started" to
        chat; a terminal status: "completed" to chat and callback), in one statement on
        PostgreSQL; None when the row was not in one of the sources."""
        now = now_utc()
        allowed = allowed_sources(target) & (only_from or allowed_sources(target))
        params = {**values, "status": target.value, "updated": now}
        if target in TERMINAL:
            news: str | None = "completed"
        else:
            news = "started" if target is ExecutionStatus.RUNNING else None
        where = {"_id": execution_id, "_sources": [s.value for s in allowed]}
        if self.store.is_sqlite:
            row = (await conn.execute(_TRANSITION, params | where)).first()
            if row is not None and news is not None:
                await self._enqueue(conn, row, news, now, chat_only=news == "started")
        else:  # one statement (engine.storage.folded)
            stmt = folded.transition(frozenset(params), news is not None, news == "started")
            more = {folded.EVENT: news, folded.NOW: now} if news is not None else {}
            row = (await conn.execute(stmt, params | where | more)).first()
        if row is None:
            return None
        self._note(execution_id, row.action_ref, target)
        return row

    async def _enqueue(
        self, conn: Conn, row: Row[Any], event: str, now: Any, *, chat_only: bool
    ) -> None:
        """Outbox rows for ``event``, in the caller's transaction (so news is never lost)."""
        targets = []
        if row.chat:
            targets.append(delivery_target(row.chat))
        if row.callback_url and not chat_only:
            targets.append("callback")
        for target in targets:
            await conn.execute(
                _INSERT_DELIVERY,
                {
                    "execution_id": row.id,
                    "target": target,
                    "event": event,
                    "state": "pending",
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created": now,
                },
            )

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
        if self._background:
            await asyncio.wait(list(self._background), timeout=timeout_s)
