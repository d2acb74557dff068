"""Chat and the retry chain: ``status`` says a retry is pending, ``cancel`` of an ended run
calls its pending retry off and says so, ``help`` names the action's retries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.handler import CommandHandler
from config import Settings
from engine.packs import ActionSpec
from engine.runtime import Runtime, build_runtime
from tests.bot.test_handler import ROOT, SLACK, until_status


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
            data_dir=tmp_path,
            packs_path=str(ROOT / "packs"),
            admin_password="x" * 12,
            kill_grace_s=0.5,
            # Retries wait a minute: a pending retry stays pending through the test.
            retry_backoff_base_s=60.0,
        )
    )
    await rt.start_worker()
    yield rt
    await rt.close()


async def test_cancel_in_chat_calls_a_pending_retry_off(runtime: Runtime) -> None:
    await runtime.catalog.create_action(
        ActionSpec(
            ref="ops.hang",
            pack_ref="ops",
            name="hang",
            description="Hangs",
            runner_type="shell",
            script="sleep 30",
            timeout_s=0.3,
            max_retries=2,
        )
    )
    handler = CommandHandler(runtime)
    assert "Retried up to 2 times" in (await handler.handle("help ops.hang", SLACK)).text
    run = await handler.handle("run ops.hang", SLACK)
    assert run.execution_id is not None
    await until_status(runtime, run.execution_id, "timeout")
    status = await handler.handle(f"status {run.execution_id}", SLACK)
    assert "retry pending" in status.text
    cancel = await handler.handle(f"cancel {run.execution_id}", SLACK)
    assert cancel.text == (
        f"The retry of execution #{run.execution_id} is called off (it stays timeout)."
    )
    status = await handler.handle(f"status {run.execution_id}", SLACK)
    assert "retry pending" not in status.text
    again = await handler.handle(f"cancel {run.execution_id}", SLACK)
    assert "already timeout" in again.text
