"""The catalog, identity, keys, audit, roster and reports reach the database only through
their repositories in engine/storage/: none of their modules imports SQLAlchemy or asks which
database it is on, and their records are frozen."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from engine.audit_records import AuditRecord, Confirmation
from engine.catalog_records import Action, Pack
from engine.identity import RefreshGrant, StoredUser, TokenHolder, User
from engine.key_records import KeyValue
from engine.report_records import HistoryFacts, HourCount, WorkerLoad

ENGINE = Path(__file__).resolve().parents[2] / "engine"
MODULES = [
    "analytics.py",
    "audit.py",
    "audit_events.py",
    "audit_records.py",
    "auth.py",
    "catalog.py",
    "catalog_records.py",
    "execution_tokens.py",
    "gate.py",
    "history.py",
    "housekeeping.py",
    "identity.py",
    "key_records.py",
    "keys.py",
    "logins.py",
    "purge.py",
    "report_records.py",
    "runtimes.py",
    "session_tokens.py",
    "users.py",
    "worker_roster.py",
    "api/auth_routes.py",
    "api/catalog_routes.py",
    "api/empty_routes.py",
    "api/identity_routes.py",
    "api/key_routes.py",
    "api/ui_routes.py",
]


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("name", MODULES)
def test_no_sqlalchemy_and_no_dialect_outside_storage(name: str) -> None:
    source = (ENGINE / name).read_text()
    tree = ast.parse(source)
    assert not [m for m in _imports(tree) if m.split(".")[0] == "sqlalchemy"]
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"is_sqlite", "dialect", "_mapping"}


@pytest.mark.parametrize(
    "record",
    [
        Pack,
        Action,
        User,
        StoredUser,
        TokenHolder,
        RefreshGrant,
        KeyValue,
        AuditRecord,
        Confirmation,
        HourCount,
        WorkerLoad,
        HistoryFacts,
    ],
)
def test_records_are_frozen(record: type) -> None:
    assert dataclasses.is_dataclass(record)
    assert record.__dataclass_params__.frozen  # type: ignore[attr-defined]
