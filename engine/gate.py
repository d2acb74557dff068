"""The gate: every request to run, re-run, cancel or view an execution from a person or an
integration passes here. It checks the requester's permission (engine/policy.py), asks for
confirmation where an action wants it, de-duplicates retried requests, and writes the audit
log; then it hands over to :class:`ExecutionService`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from engine.audit import AuditEntry, AuditLog
from engine.audit_records import Confirmation
from engine.catalog import Catalog
from engine.clock import now_utc
from engine.crypto import SecretBox
from engine.errors import (
    Conflict,
    EngineError,
    Forbidden,
    InvalidParameters,
    InvalidRequest,
    NotFound,
    NotYours,
)
from engine.params import REDACTED, redact, validate_parameters
from engine.policy import Denied, Policy, Verb
from engine.records import Execution, Executor, NewExecution, Source
from engine.service import ExecutionService
from engine.storage import Store
from engine.storage.audit import confirmation_repository


@dataclass(frozen=True)
class Requester:
    """A person or integration asking, with the role that decides what they may do."""

    identity: str
    role: str
    source: Source
    channel: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def executor(self) -> Executor:
        """Who asked, as the execution records it: with the role they asked with, which is
        what the run's own API token may do at most (read back without a query per run)."""
        return Executor(
            identity=self.identity,
            source=self.source,
            channel=self.channel,
            extra={**self.extra, "role": self.role},
        )

    def entry(self, verb: str, outcome: str, **more: Any) -> AuditEntry:
        token = self.extra.get("token")
        return AuditEntry(
            actor=self.identity,
            role=self.role,
            source=self.source,
            channel=self.channel or (f"token:{token}" if token else None),
            verb=verb,
            outcome=outcome,
            **more,
        )


@dataclass(frozen=True)
class NeedsConfirmation:
    """The action asks for confirmation: nothing runs until ``code`` is confirmed."""

    code: str
    action_ref: str
    config: dict[str, Any]
    expires_in_s: float


@dataclass(frozen=True)
class Submitted:
    record: Execution
    #: True when an idempotency key matched an earlier request: nothing new was created.
    replayed: bool = False


#: Most executions one batch may hold.
MAX_BATCH = 100


@dataclass(frozen=True)
class BatchItem:
    action_ref: str
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True)
class BatchSubmitted:
    records: list[Execution]
    #: True when an idempotency key matched an earlier batch: nothing new was created.
    replayed: bool = False


def batch_key(key: str, index: int) -> str:
    """The idempotency key of a batch's ``index``-th execution."""
    return f"{key}#batch:{index}"


def _at(index: int, exc: EngineError) -> EngineError:
    """``exc`` naming the batch item it is about (``executions[3].parameters: ...``)."""
    if isinstance(exc, InvalidParameters):
        return InvalidParameters(f"executions[{index}].parameters: {exc.message}")
    if isinstance(exc, NotFound):
        return InvalidRequest(f"executions[{index}].action_ref: {exc.message}")
    if isinstance(exc, Forbidden):
        return Forbidden(f"executions[{index}]: {exc.message}")
    return InvalidRequest(f"executions[{index}]: {exc.message}")


class Gate:
    def __init__(
        self,
        store: Store,
        service: ExecutionService,
        catalog: Catalog,
        policy: Policy,
        audit: AuditLog,
        secrets_box: SecretBox,
        *,
        confirm_ttl_s: float,
    ) -> None:
        self.store = store
        self.confirmations = confirmation_repository(store)
        self.service = service
        self.catalog = catalog
        self.policy = policy
        self.audit = audit
        self.secrets = secrets_box
        self.confirm_ttl_s = confirm_ttl_s

    async def deny(
        self,
        who: Requester,
        verb: Verb,
        action_ref: str,
        *,
        audit_verb: str | None = None,
        execution_id: int | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> None:
        """Forbidden, audited as ``audit_verb`` (else ``verb``), unless ``who`` may."""
        if self.policy.allows(who.role, verb, action_ref):
            return
        error = Forbidden(Denied(who.role, verb, action_ref).message)
        await self.audit.record(
            who.entry(
                audit_verb or verb,
                "denied",
                target=action_ref,
                detail=error.message,
                execution_id=execution_id,
                parameters=await self._redacted(action_ref, parameters),
            )
        )
        raise error

    async def _redacted(
        self, action_ref: str, parameters: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """Parameters as asked for, for the audit: the action's secrets masked; names only
        when the action is unknown (which values are secret cannot be told)."""
        if not parameters:
            return None
        try:
            secrets_of = (await self.catalog.get_action(action_ref)).secrets
        except EngineError:
            return _shown(parameters)
        return redact({str(k)[:64]: v for k, v in list(parameters.items())[:50]}, secrets_of)

    async def run(
        self,
        who: Requester,
        action_ref: str,
        parameters: dict[str, Any] | None,
        *,
        chat: dict[str, Any] | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        confirmed: bool = False,
        verb: str = "run",
        parent: int | None = None,
    ) -> Submitted | NeedsConfirmation:
        """Run an action for ``who``; a chat request of a ``confirm: true`` action first
        returns :class:`NeedsConfirmation`."""
        if idempotency_key is not None:
            earlier = await self.service.find_idempotent(idempotency_key)
            if earlier is not None:
                return await self._replay(who, earlier, action_ref, parameters)
        await self.deny(who, "run", action_ref, audit_verb=verb, parameters=parameters)
        try:
            action = await self.catalog.get_action(action_ref)
            if action.confirm and who.source in ("slack", "chat") and not confirmed:
                return await self._ask(
                    who, action_ref, action.param_schema, parameters, chat, idempotency_key
                )
            record = await self.service.submit(
                action_ref,
                parameters,
                who.executor(),
                chat=chat,
                callback_url=callback_url,
                idempotency_key=idempotency_key,
                parent=parent,
                action=action,
                audit_entry=who.entry(verb, "accepted", target=action_ref),
            )
        except Conflict:
            if idempotency_key is not None:
                earlier = await self.service.find_idempotent(idempotency_key)
                if earlier is not None:
                    return await self._replay(who, earlier, action_ref, parameters)
            raise
        except EngineError as exc:
            await self.audit.record(
                who.entry(
                    verb,
                    "refused",
                    target=action_ref,
                    parameters=_shown(parameters),
                    detail=exc.message,
                )
            )
            raise
        return Submitted(record)

    async def run_many(
        self,
        who: Requester,
        items: list[BatchItem],
        *,
        chat: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        verb: str = "run",
    ) -> BatchSubmitted:
        """Run several actions for ``who`` as one request: every item is checked first
        (permission, action, parameters; a chat request of a ``confirm: true`` action is
        refused: it is confirmed on its own), then all are recorded in one transaction, or
        none. An error names the item (``executions[i]``). ``idempotency_key`` covers the
        batch: a retry gets the same executions."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise InvalidRequest(
                f"a batch holds 1 to {MAX_BATCH} executions, got {len(items)}; nothing was run"
            )
        if idempotency_key is not None:
            earlier = await self._replay_batch(who, items, idempotency_key)
            if earlier is not None:
                return earlier
        prepared: list[tuple[NewExecution, AuditEntry | None]] = []
        for index, item in enumerate(items):
            try:
                await self.deny(
                    who, "run", item.action_ref, audit_verb=verb, parameters=item.parameters
                )
                action = await self.catalog.get_action(item.action_ref)
                if action.confirm and who.source in ("slack", "chat"):
                    raise InvalidRequest(
                        f"{item.action_ref} asks for confirmation, which a batch does not "
                        "ask: run it on its own"
                    )
                new = await self.service.prepare(
                    item.action_ref,
                    item.parameters,
                    who.executor(),
                    chat=chat,
                    idempotency_key=(
                        batch_key(idempotency_key, index) if idempotency_key else None
                    ),
                    action=action,
                )
            except EngineError as exc:
                error = _at(index, exc)
                if not isinstance(exc, Forbidden):  # a denial is audited by _deny
                    await self._refused(who, verb, item, error.message)
                raise error from None
            prepared.append((new, who.entry(verb, "accepted", target=item.action_ref)))
        try:
            records = await self.service.submit_many(prepared)
        except Conflict:
            if idempotency_key is not None:  # the same batch, sent twice at once
                earlier = await self._replay_batch(who, items, idempotency_key)
                if earlier is not None:
                    return earlier
            raise
        return BatchSubmitted(records)

    async def _refused(self, who: Requester, verb: str, item: BatchItem, detail: str) -> None:
        await self.audit.record(
            who.entry(
                verb,
                "refused",
                target=item.action_ref,
                parameters=_shown(item.parameters),
                detail=detail,
            )
        )

    async def _replay_batch(
        self, who: Requester, items: list[BatchItem], key: str
    ) -> BatchSubmitted | None:
        """The executions of an earlier batch sent with ``key``, if it asked for the same
        things (else Conflict); None when no batch used the key."""
        first = await self.service.find_idempotent(batch_key(key, 0))
        if first is None:
            return None
        records: list[Execution] = []
        for index, item in enumerate(items):
            earlier = (
                first if index == 0 else await self.service.find_idempotent(batch_key(key, index))
            )
            if earlier is None:
                raise Conflict(
                    f"this Idempotency-Key was used for a batch of {index} executions; "
                    "use a new key"
                )
            replayed = await self._replay(who, earlier, item.action_ref, item.parameters)
            records.append(replayed.record)
        if await self.service.find_idempotent(batch_key(key, len(items))) is not None:
            raise Conflict("this Idempotency-Key was used for a longer batch; use a new key")
        return BatchSubmitted(records, replayed=True)

    async def _replay(
        self,
        who: Requester,
        earlier: Execution,
        action_ref: str,
        parameters: dict[str, Any] | None,
    ) -> Submitted:
        """The first execution for a retried key, if the retry asks for the same thing."""
        await self.deny(who, "run", earlier.action_ref)
        same = earlier.action_ref == action_ref
        if same:
            action = await self.catalog.get_action(action_ref)
            try:
                params = validate_parameters(action.param_schema, parameters)
            except EngineError:
                same = False
            else:
                same = redact(params, action.secrets) == earlier.config
        if not same:
            raise Conflict(
                f"this Idempotency-Key was used for a different request (execution "
                f"{earlier.id} of {earlier.action_ref}); use a new key"
            )
        return Submitted(earlier, replayed=True)

    async def rerun(
        self,
        who: Requester,
        execution_id: int,
        *,
        chat: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Submitted | NeedsConfirmation:
        action_ref, params = await self.service.parameters_of(execution_id)
        await self.deny(who, "view", action_ref, audit_verb="rerun", execution_id=execution_id)
        await self._own_secrets(who, execution_id, await self.service.get(execution_id))
        return await self.run(
            who, action_ref, params, chat=chat, verb="rerun", idempotency_key=idempotency_key
        )

    async def _own_secrets(self, who: Requester, execution_id: int, record: Execution) -> None:
        """A re-run carries the original's secret values: only its requester (same identity,
        same source) or an admin may re-run an execution whose secret parameters were set.
        Anyone else is refused (audited); they run the action anew with their own values."""
        config = record.config or {}
        secret = sorted(str(name) for name, value in config.items() if value == REDACTED)
        original = record.requester or {}
        mine = (original.get("identity"), original.get("source")) == (who.identity, who.source)
        if not secret or mine or who.role == "admin":
            return
        owner = original.get("identity") or "someone else"
        error = Forbidden(
            f"execution #{execution_id} was requested by {owner} with secret parameters "
            f"({', '.join(secret)}): only they or an admin can re-run it; run "
            f"{record.action_ref} anew with your own values"
        )
        await self.audit.record(
            who.entry(
                "rerun",
                "denied",
                target=record.action_ref,
                detail=error.message,
                execution_id=execution_id,
            )
        )
        raise error

    async def cancel(self, who: Requester, execution_id: int) -> Execution:
        record = await self.service.get(execution_id)
        await self.deny(who, "cancel", record.action_ref, execution_id=execution_id)
        try:
            record = await self.service.cancel(execution_id, who.identity)
        except EngineError as exc:
            await self.audit.record(
                who.entry(
                    "cancel",
                    "refused",
                    target=record.action_ref,
                    detail=exc.message,
                    execution_id=execution_id,
                )
            )
            raise
        await self.audit.record(
            who.entry("cancel", "accepted", target=record.action_ref, execution_id=execution_id)
        )
        return record

    async def view(self, who: Requester, execution_id: int) -> Execution:
        record = await self.service.get(execution_id)
        await self.deny(who, "view", record.action_ref, execution_id=execution_id)
        return record

    async def manage(self, who: Requester, action_ref: str, verb: str) -> None:
        """Refuse (403, audited as ``verb`` denied) a write of ``action_ref`` or of a rule
        that runs it, unless the role holds ``manage`` on it."""
        await self.deny(who, "manage", action_ref, audit_verb=verb)

    # -- confirmations ----------------------------------------------------------------------

    async def _ask(
        self,
        who: Requester,
        action_ref: str,
        schema: dict[str, Any],
        parameters: dict[str, Any] | None,
        chat: dict[str, Any] | None,
        idempotency_key: str | None = None,
    ) -> NeedsConfirmation:
        """Record the request as pending confirmation under a new code. A request with an
        idempotency key (a Slack retry, a form or an event delivered to two processes) gets
        a code derived from the key, so the same request asks once: a second asking finds
        the first's code, or is told how it was answered."""
        from engine.params import secret_names

        params = validate_parameters(schema, parameters)  # refuse bad input before asking
        config = redact(params, secret_names(schema))
        code = (
            self.secrets.tag("confirm:" + idempotency_key, 8)
            if idempotency_key is not None
            else secrets.token_hex(4)
        )
        now = now_utc()
        asked = Confirmation(
            code=code,
            action_ref=action_ref,
            sealed=self.secrets.seal(params) or "",
            config=config,
            requester=who.identity,
            executor=who.executor().as_dict(),
            chat=chat,
            state="pending",
            expires_at=now + timedelta(seconds=self.confirm_ttl_s),
            created=now,
        )
        try:
            async with self.store.write() as conn:
                await self.confirmations.add(conn, asked)
                await self.audit.record(
                    who.entry(
                        "run",
                        "confirmation_requested",
                        target=action_ref,
                        parameters=config,
                        detail=f"code {code}",
                    ),
                    conn,
                )
        except Conflict:
            earlier = await self.confirmations.get(code) if idempotency_key else None
            if earlier is None or earlier.requester != who.identity:
                raise
            if earlier.state != "pending":
                raise Conflict(
                    f"this request was already asked and {earlier.state} (code {code})"
                ) from None
            left_s = (earlier.expires_at - now).total_seconds()
            if left_s <= 0:
                raise Conflict(
                    f"this request was already asked and its confirmation expired (code {code})"
                ) from None
            return NeedsConfirmation(code, earlier.action_ref, earlier.config, left_s)
        return NeedsConfirmation(code, action_ref, config, self.confirm_ttl_s)

    async def confirm(self, who: Requester, code: str) -> Submitted:
        """Run a confirmed request. Only its requester, or an admin, may confirm it."""
        row = await self._settle(who, code, "confirmed")
        executor = dict(row.executor)
        original = Requester(
            identity=row.requester,
            role=str(executor.pop("role", who.role)),
            source=executor.pop("source", who.source),
            channel=executor.pop("channel", None),
            extra={k: v for k, v in executor.items() if k != "identity"},
        )
        params = self.secrets.open(row.sealed) if row.sealed else {}
        result = await self.run(
            original,
            row.action_ref,
            params,
            chat=row.chat,
            confirmed=True,
            idempotency_key=f"confirm:{code}",
        )
        assert isinstance(result, Submitted)
        await self.confirmations.ran(code, result.record.id)
        return result

    async def abort(self, who: Requester, code: str) -> str:
        row = await self._settle(who, code, "aborted")
        return str(row.action_ref)

    async def _settle(self, who: Requester, code: str, state: str) -> Confirmation:
        row = await self.confirmations.get(code)
        if row is None:
            raise NotFound(f"no request waits for confirmation under code {code}")
        verb = "confirm" if state == "confirmed" else "abort"
        if who.identity != row.requester and who.role != "admin":
            await self.audit.record(
                who.entry(
                    verb,
                    "denied",
                    target=row.action_ref,
                    detail=f"code {code} belongs to {row.requester}",
                )
            )
            raise NotYours(verb, row.requester, dict(row.executor or {}))
        if row.state != "pending":
            raise Conflict(f"this request was already {row.state}")
        if row.expires_at <= now_utc():
            await self._move(code, "expired")
            raise Conflict("this request expired; run the command again")
        if not await self._move(code, state):
            raise Conflict("this request was just settled by someone else")
        await self.audit.record(
            who.entry(
                verb,
                "accepted",
                target=row.action_ref,
                parameters=row.config,
                detail=f"code {code}",
            )
        )
        return row

    async def _move(self, code: str, state: str) -> bool:
        return await self.confirmations.settle(code, state)


def _shown(parameters: dict[str, Any] | None) -> dict[str, Any] | None:
    """Parameters of a refused request, for the audit: names only. The values were not
    validated, so which of them are secrets is not known; they are not written."""
    if not parameters:
        return None
    return {str(k)[:64]: "…" for k in list(parameters)[:50]}
