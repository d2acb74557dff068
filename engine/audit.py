"""The audit log: who asked for what, from where (Slack user and channel, API token, chat,
rule), with what parameters (secrets redacted), and what came of it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from engine.audit_records import FIELDS as FIELDS
from engine.audit_records import AuditEntry as AuditEntry
from engine.audit_records import AuditFilter, AuditRecord
from engine.errors import InvalidRequest
from engine.storage import Conn, Store
from engine.storage.audit import audit_repository

#: Largest page of ``GET /api/v1/audit``.
MAX_PER_PAGE = 200


class AuditLog:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.repo = audit_repository(store)

    async def record(self, entry: AuditEntry, conn: Conn | None = None) -> None:
        """Write an entry, in ``conn``'s transaction when given (so it commits with the act)."""
        await self.repo.add(entry, conn)

    async def entries(
        self, where: AuditFilter, page: int = 1, per_page: int = 50
    ) -> tuple[list[AuditRecord], int]:
        """A page of the entries ``where`` keeps, newest first, and how many it keeps."""
        if page < 1 or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"page must be >= 1 and per_page between 1 and {MAX_PER_PAGE}")
        rows = await self.repo.page(where, page, per_page)
        return rows, await self.repo.total(where)

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
        where = AuditFilter(
            actor=actor or None, verb=verb or None, outcome=outcome or None, since=since
        )
        rows, total = await self.entries(where, page, per_page)
        return [r.as_dict() for r in rows], total
