"""Executions and their outbox reach the database only through their repository in
engine/storage/ (engine/storage/executions.py and its SQLite and PostgreSQL implementations):
the service, the outbox, the worker, the sinks, the API routes and the chat faces import no
SQLAlchemy and ask no dialect; the records they pass are frozen and typed."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from engine import records

ROOT = Path(__file__).resolve().parents[2]
MODULES = [
    "engine/service.py",
    "engine/outbox.py",
    "engine/records.py",
    "engine/worker.py",
    "engine/callbacks.py",
    "engine/notifications.py",
    "engine/acks_first.py",
    "engine/api/routes.py",
    "engine/api/schemas.py",
    "bot/handler.py",
    "bot/render.py",
    "bot/slack_sink.py",
    "bot/terminal.py",
    "bot/commands.py",
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
    tree = ast.parse((ROOT / name).read_text())
    imported = _imports(tree)
    assert not [m for m in imported if m.split(".")[0] == "sqlalchemy"]
    # Storage is reached through the repository's factory only (no tables, no statements).
    assert not [m for m in imported if m.startswith("engine.storage.") and m not in {
        "engine.storage.executions"}]  # fmt: skip
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"is_sqlite", "dialect", "_mapping"}


def test_the_storage_factory_is_all_the_service_imports_of_storage() -> None:
    tree = ast.parse((ROOT / "engine/service.py").read_text())
    found = {
        (node.module, alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("engine.storage")
        for alias in node.names
    }
    assert found == {
        ("engine.storage", "Store"),
        ("engine.storage.executions", "execution_repository"),
    }


@pytest.mark.parametrize(
    "record",
    [
        records.Execution,
        records.StoredExecution,
        records.NewExecution,
        records.Route,
        records.Delivery,
        records.Change,
        records.ExecutionFilter,
        records.Executor,
        records.Claimed,
    ],
)
def test_records_are_frozen(record: type) -> None:
    assert dataclasses.is_dataclass(record)
    assert record.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert "__slots__" in vars(record)
