"""Executions and their outbox reach the database only through their repository in
engine/storage/ (engine/storage/executions.py and its SQLite and PostgreSQL implementations):
the service imports nothing else of storage, and the records it passes are frozen and typed
(that no module outside storage imports SQLAlchemy or asks the dialect is
tests/test_storage_seam.py's)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from engine import records

ROOT = Path(__file__).resolve().parents[2]


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
        ("engine.storage.retries", "retry_repository"),
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
