"""The command handler against a real runtime (SQLite, in-process broker, a worker)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bot.handler import ChatContext, CommandHandler
from config import Settings
from engine.api.automation_views import rule_view, trigger_view
from engine.runtime import Runtime, build_runtime
from engine.storage.tables import deliveries
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SLACK = ChatContext(
    source="slack",
    sink="slack",
    user_id="U1",
    user_name="ana",
    channel_id="C1",
    team_id="T1",
    response_url="http://127.0.0.1:9/r",
)


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
            data_dir=tmp_path,
            packs_path=str(ROOT / "packs"),
            admin_password="x" * 12,
            kill_grace_s=0.5,
        )
    )
    await rt.start_worker()
    yield rt
    await rt.close()


async def until_status(rt: Runtime, execution_id: int, *statuses: str) -> dict[str, object]:
    record: dict[str, object] = await eventually(
        lambda: rt.service.get(execution_id),
        f"execution {execution_id} to be one of {statuses}",
        10,
        interval_s=0.02,
        done=lambda r: r.status in statuses,
    )
    return record


async def test_run_replies_with_the_number_and_records_who_and_where(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle('run core.echo message="hi there"', SLACK)
    assert reply.ok
    assert reply.execution_id is not None
    assert f"#{reply.execution_id} queued" in reply.text
    record = await until_status(runtime, reply.execution_id, "completed")
    # Slack users are known by their user id; the name is kept for people to read.
    assert record.requester == {
        "identity": "U1",
        "source": "slack",
        "channel": "C1",
        "user_id": "U1",
        "user_name": "ana",
        "team_id": "T1",
        "role": "operator",
    }
    assert record.config == {"message": "hi there"}
    _, route = await runtime.service.get_with_route(reply.execution_id)
    assert route.chat["channel"] == "C1"
    assert route.chat["response_url"] == "http://127.0.0.1:9/r"
    async with runtime.store.read() as conn:
        events = (
            await conn.execute(
                select(deliveries.c.event, deliveries.c.target)
                .where(deliveries.c.execution_id == reply.execution_id)
                .order_by(deliveries.c.id)
            )
        ).all()
    assert [tuple(e) for e in events] == [
        ("created", "slack"),
        ("started", "slack"),
        ("completed", "slack"),
    ]


async def test_values_are_coerced_by_the_schema(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("run examples.wait seconds=0", SLACK)
    assert reply.execution_id is not None
    record = await until_status(runtime, reply.execution_id, "completed")
    assert record.config == {"seconds": 0}


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("run nope.nothing", "action 'nope.nothing' not found"),
        ("run examples.greet", "missing required parameter 'name'"),
        ("run examples.wait seconds=soon", "parameter 'seconds' must be an integer"),
        ("run core.echo message=hi extra=1", "unknown parameter 'extra'"),
        ("status 999999", "Execution 999999 not found"),
        ("help nope.nothing", "not found"),
        ("actions nopack", "pack 'nopack' not found"),
    ],
)
async def test_bad_commands_get_a_clear_reply(runtime: Runtime, text: str, says: str) -> None:
    reply = await CommandHandler(runtime).handle(text, SLACK)
    assert not reply.ok
    assert says.lower() in reply.text.lower()
    assert "Traceback" not in reply.text


async def test_status_cancel_and_rerun(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    run = await handler.handle("run core.sleep seconds=30", SLACK)
    assert run.execution_id is not None
    await until_status(runtime, run.execution_id, "running")
    status = await handler.handle(f"status {run.execution_id}", SLACK)
    assert f"#{run.execution_id} core.sleep: running" in status.text
    cancel = await handler.handle(f"cancel {run.execution_id}", SLACK)
    assert "cancel" in cancel.text
    await until_status(runtime, run.execution_id, "cancelled")
    again = await handler.handle(f"cancel {run.execution_id}", SLACK)
    assert "already cancelled" in again.text
    rerun = await handler.handle(f"rerun {run.execution_id}", SLACK)
    assert rerun.execution_id not in (None, run.execution_id)
    assert f"re-run of #{run.execution_id}" in rerun.text
    record = await runtime.service.get(rerun.execution_id)  # type: ignore[arg-type]
    assert record.config == {"seconds": 30}
    await runtime.service.cancel(rerun.execution_id, "test")  # type: ignore[arg-type]


async def test_help_and_actions(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    assert "run <pack.action>" in (await handler.handle("help", SLACK)).text
    assert "`name` (string, required)" in (await handler.handle("help examples.greet", SLACK)).text
    listing = (await handler.handle("actions core", SLACK)).text
    assert "core.echo" in listing
    assert "examples.greet" not in listing


async def test_unexpected_errors_are_reported_without_a_trace(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("boom at line 12")

    monkeypatch.setattr(runtime.service, "submit", broken)
    reply = await CommandHandler(runtime).handle("run core.echo message=x", SLACK)
    assert not reply.ok
    assert "Something went wrong" in reply.text
    assert "boom" not in reply.text


async def test_rules_and_switching_them(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    listing = await handler.handle("rules", SLACK)
    assert "examples.greet_on_alert" in listing.text  # shipped by the example pack
    assert "(on)" in listing.text
    off = await handler.handle("rule disable examples.greet_on_alert", SLACK)
    assert off.ok, off.text
    assert (await runtime.automation.get_rule("examples.greet_on_alert")).enabled is False
    viewer = ChatContext(
        source="slack", sink="slack", user_id="U9", user_name="vic", role="viewer", channel_id="C1"
    )
    refused = await handler.handle("rule enable examples.greet_on_alert", viewer)
    assert not refused.ok
    assert "may not enable" in refused.text
    assert (await runtime.automation.get_rule("examples.greet_on_alert")).enabled is False
    on = await handler.handle("rule enable examples.greet_on_alert", SLACK)
    assert on.ok, on.text
    entries, _ = await runtime.audit.list(verb="rule enable")
    assert [e["outcome"] for e in entries] == ["accepted", "denied"]


async def test_a_pack_ships_its_triggers_and_rules(runtime: Runtime) -> None:
    trigger = trigger_view(await runtime.automation.get_trigger("examples.alert", reveal_key=True))
    assert trigger["type"] == "webhook"
    assert trigger["webhook_enabled"] is True
    assert trigger["webhook_key"].startswith("wh_")
    rule = rule_view(await runtime.automation.get_rule("examples.greet_on_alert"))
    assert rule["action_ref"] == "examples.greet"
    assert rule["action_params"] == {"name": "{{ event.payload.who }}"}
    # Loading the packs again keeps the webhook key (integrations keep working).
    await runtime.sync_packs()
    again = trigger_view(await runtime.automation.get_trigger("examples.alert", reveal_key=True))
    assert again["webhook_key"] == trigger["webhook_key"]
