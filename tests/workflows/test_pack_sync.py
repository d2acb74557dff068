"""Workflows loaded at start (``sync_packs``): after every pack's actions, so a workflow may run
another pack's action; one naming an action no pack has is reported with its file and left out,
and the rest loads. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config import Settings
from engine.errors import NotFound
from engine.runtime import Runtime, build_runtime
from engine.workflows.service import Workflows
from tests.e2e.conftest import _fresh_postgres_database


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def runtime(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Runtime]:
    packs = tmp_path / "packs"
    write(
        packs,
        {
            "alpha/pack.yaml": "ref: alpha\n",
            "alpha/workflows/uses_zeta.yaml": (
                "tasks:\n  - {name: a, action: zeta.hello, on_success: b}\n"
                "  - {name: b, action: core.noop}\n"
            ),
            "alpha/workflows/missing.yaml": "tasks:\n  - {name: a, action: zeta.nothing}\n",
            "zeta/pack.yaml": "ref: zeta\n",
            "zeta/actions/hello.yaml": "name: hello\nentry_point: hello.sh\n",
            "zeta/actions/hello.sh": "#!/bin/sh\necho hello\n",
        },
    )

    async def build(url: str) -> Runtime:
        settings = Settings(
            database_url=url, data_dir=tmp_path, packs_path=str(packs), admin_password="x" * 12
        )
        return await build_runtime(settings)

    if request.param == "sqlite":
        rt = await build(f"sqlite+aiosqlite:///{tmp_path}/t.db")
        try:
            yield rt
        finally:
            await rt.close()
        return
    async with _fresh_postgres_database() as url:
        rt = await build(url)
        try:
            yield rt
        finally:
            await rt.close()


async def test_start_up_loads_cross_pack_workflows_and_names_the_bad_file(
    runtime: Runtime, tmp_path: Path
) -> None:
    workflows = Workflows(runtime.store, runtime.catalog)
    stored = await workflows.get("alpha.uses_zeta")
    assert [t["action"] for t in stored.fields.definition["tasks"]] == ["zeta.hello", "core.noop"]
    action = await runtime.catalog.action("alpha.uses_zeta")
    assert action.spec.enabled is True
    assert action.spec.disabled_reason is None
    missing = tmp_path / "packs" / "alpha" / "workflows" / "missing.yaml"
    assert f"{missing}: task 'a' action: no action 'zeta.nothing'" in runtime.pack_errors
    with pytest.raises(NotFound):
        await workflows.get("alpha.missing")
    with pytest.raises(NotFound):
        await runtime.catalog.action("alpha.missing")
    # a second start changes nothing and stores each workflow once
    await runtime.sync_packs()
    assert [w.ref for w in await workflows.list("alpha")] == ["alpha.uses_zeta"]
