"""The automation aggregate's tables (triggers, rules, events, enforcements) in SQL: the
implementation of :class:`engine.automation.records.AutomationRepository`, in parts by
sub-aggregate. The statements are the same on SQLite and PostgreSQL.

Two reads reach outside the aggregate: the execution made for an enforcement (``executions``,
so that an interrupted pass never makes a second one) and the keys a rule's templates read
(``keys``, live and not owned by an identity)."""

from __future__ import annotations

from engine.automation.records import AutomationRepository
from engine.storage.automation.events import SqlEvents
from engine.storage.automation.rules import SqlRules
from engine.storage.automation.timers import SqlTimers
from engine.storage.automation.triggers import SqlTriggers
from engine.storage.store import Store


class SqlAutomation(SqlTriggers, SqlRules, SqlEvents, SqlTimers):
    """All of the aggregate's tables."""


def automation_repository(store: Store) -> AutomationRepository:
    """The automation repository of ``store`` (one implementation for both dialects)."""
    return SqlAutomation(store)


__all__ = ["SqlAutomation", "automation_repository"]
