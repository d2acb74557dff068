"""The audit log: who asked for what, from where (Slack user and channel, API token, chat,
rule), with what parameters (secrets redacted), and what came of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from engine.counts import Totals
from engine.errors import InvalidRequest
from engine.storage import Conn, Store
from engine.storage.tables import audit, now_utc

#: Largest page of ``GET /api/v1/audit``.
MAX_PER_PAGE = 200
FIELDS = (
    "id",
    "at",
    "actor",
    "role",
    "source",
    "channel",
    "verb",
    "target",
    "parameters",
    "outcome",
    "detail",
    "execution_id",
)


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    source: str
    verb: str
    outcome: str
    role: str | None = None
    channel: str | None = None
    target: str | None = None
    parameters: dict[str, Any] | None = None
    detail: str | None = None
    execution_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def values(self, **override: Any) -> dict[str, Any]:
        """The row to insert (``override`` replaces fields): a shallow copy, as nothing
        changes the values before they are written (``dataclasses.asdict`` deep-copied them,
        6% of an API submission's CPU)."""
        data = {
            "actor": self.actor,
            "source": self.source,
            "verb": self.verb,
            "outcome": self.outcome,
            "role": self.role,
            "channel": self.channel,
            "target": self.target,
            "parameters": self.parameters,
            "detail": self.detail[:2000] if self.detail is not None else None,
            "execution_id": self.execution_id,
            "at": now_utc(),
        }
        data.update(override)
        return data


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.totals = Totals(store)

    async def record(self, entry: AuditEntry, conn: Conn | None = None) -> None:
        """Write an entry, in ``conn``'s transaction when given (so it commits with the act)."""
        if conn is not None:
            await conn.execute(insert(audit).values(**entry.values()))
            return
        async with self.store.write() as own:
            await own.execute(insert(audit).values(**entry.values()))

    async def list(
        self,
        *,
        actor: str | None = None,
        verb: str | None = None,
        outcome: str | None = None,
        since: datetime | None = None,
        page: int = 1,
        per_page: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
        where = []
        if actor:
            where.append(audit.c.actor == actor)
        if verb:
            where.append(audit.c.verb == verb)
        if outcome:
            where.append(audit.c.outcome == outcome)
        if since is not None:
            where.append(audit.c.at >= since)
        query = (
            select(audit)
            .where(*where)
            .order_by(audit.c.id.desc())
            .limit(per_page)
            .offset((page - 1) * per_page)
        )
        async with self.store.read(offload=True) as conn:
            rows = (await conn.execute(query)).all()
        total = await self.totals.count(audit, where)
        return [{k: r._mapping[k] for k in FIELDS} for r in rows], total
