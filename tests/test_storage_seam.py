"""The storage seam holds for every module: outside ``engine/storage/`` nothing imports
SQLAlchemy, the schema (``engine.storage.tables``) or a dialect's implementation, and nothing
asks which database it is on or reads a SQLAlchemy row's mapping. Storage is reached through
``engine.storage`` (the Store) and the repository factories of ``engine/storage/<aggregate>``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORAGE = ROOT / "engine" / "storage"
MODULES = sorted(
    str(path.relative_to(ROOT))
    for package in ("bot", "engine", "config")
    for path in (ROOT / package).rglob("*.py")
    if STORAGE not in path.parents
)
#: Modules of engine/storage/ no one else may import: the schema and the dialects' own code.
STORAGE_INSIDES = {
    "engine.storage.tables",
    "engine.storage.store",
    "engine.storage.sqlite_executions",
    "engine.storage.postgres_executions",
    "engine.storage.migrations",
}


def _imports(tree: ast.AST) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_walk_finds_the_modules_on_both_sides() -> None:
    assert "engine/service.py" in MODULES
    assert "bot/slack_sink.py" in MODULES
    assert not [m for m in MODULES if m.startswith("engine/storage/")]


@pytest.mark.parametrize("name", MODULES)
def test_no_sqlalchemy_no_schema_and_no_dialect_outside_storage(name: str) -> None:
    tree = ast.parse((ROOT / name).read_text())
    imported = _imports(tree)
    assert not [m for m in imported if m.split(".")[0] == "sqlalchemy"], imported
    assert not [
        m for m in imported if any(m == i or m.startswith(i + ".") for i in STORAGE_INSIDES)
    ], imported
    names = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    assert not names & {"is_sqlite", "dialect", "_mapping"}, names
