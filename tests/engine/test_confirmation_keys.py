"""A request with an idempotency key asks for confirmation once: the code comes from the key, so
the same request asked again (a Slack retry or a form reaching another process) gets the same
code while it waits, and is told how it ended once answered or expired."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from config.settings import Settings
from engine.errors import Conflict
from engine.gate import NeedsConfirmation, Requester, Submitted
from engine.packs import ActionSpec
from engine.params import normalize_schema
from engine.runtime import Runtime, build_runtime

ANA = Requester(identity="U0ANA", role="operator", source="slack", channel="C1")
BOB = Requester(identity="U0BOB", role="operator", source="slack", channel="C1")


async def _runtime(tmp_path: Path, **knobs: float) -> Runtime:
    return await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/c.db",
            data_dir=tmp_path,
            packs_path=str(tmp_path),
            admin_password="x" * 12,
            **knobs,  # type: ignore[arg-type]
        )
    )


@pytest.fixture
async def rt(tmp_path: Path) -> AsyncIterator[Runtime]:
    runtime = await _runtime(tmp_path)
    yield runtime
    await runtime.close()


async def _confirm_action(rt: Runtime) -> str:
    spec = ActionSpec(
        ref=f"ck.wipe_{uuid.uuid4().hex[:8]}",
        pack_ref="ck",
        name="wipe",
        runner_type="shell",
        entry_point=None,
        script="#!/bin/sh\nexit 0\n",
        param_schema=normalize_schema({"target": {"type": "string"}}),
        confirm=True,
    )
    await rt.catalog.create_action(spec)
    return spec.ref


async def test_the_same_keyed_request_asks_once_with_one_code(rt: Runtime) -> None:
    ref = await _confirm_action(rt)
    first = await rt.gate.run(ANA, ref, {"target": "db1"}, idempotency_key="slack-view:V1")
    again = await rt.gate.run(ANA, ref, {"target": "db1"}, idempotency_key="slack-view:V1")
    other = await rt.gate.run(ANA, ref, {"target": "db1"}, idempotency_key="slack-view:V2")
    unkeyed = await rt.gate.run(ANA, ref, {"target": "db1"})
    assert isinstance(first, NeedsConfirmation)
    assert isinstance(again, NeedsConfirmation)
    assert isinstance(other, NeedsConfirmation)
    assert isinstance(unkeyed, NeedsConfirmation)
    assert again.code == first.code
    assert len({first.code, other.code, unkeyed.code}) == 3
    assert 0 < again.expires_in_s <= first.expires_in_s

    # Someone else cannot pick up the request by sending its key.
    with pytest.raises(Conflict):
        await rt.gate.run(BOB, ref, {"target": "db1"}, idempotency_key="slack-view:V1")

    ran = await rt.gate.confirm(ANA, first.code)
    assert isinstance(ran, Submitted)
    with pytest.raises(Conflict, match="already asked and confirmed"):
        await rt.gate.run(ANA, ref, {"target": "db1"}, idempotency_key="slack-view:V1")


async def test_a_keyed_request_asked_again_after_its_confirmation_expired_is_told_so(
    tmp_path: Path,
) -> None:
    rt = await _runtime(tmp_path, confirm_ttl_s=0.001)
    try:
        ref = await _confirm_action(rt)
        first = await rt.gate.run(ANA, ref, {}, idempotency_key="slack-event:Ev1")
        assert isinstance(first, NeedsConfirmation)
        with pytest.raises(Conflict, match="confirmation expired"):
            await rt.gate.run(ANA, ref, {}, idempotency_key="slack-event:Ev1")
    finally:
        await rt.close()
