"""A batch from chat: ``run`` with one action per line, or ``--each NAME`` over a list of
values. One reply with a row per execution; every item checked (permission, parameters,
confirmation) before any is recorded; each execution audited as a ``run``."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot import commands
from bot.commands import Run, RunMany, UsageError
from bot.handler import ChatContext, CommandHandler
from config import Settings
from engine.runtime import Runtime, build_runtime
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SLACK = ChatContext(
    source="slack",
    sink="slack",
    user_id="U1",
    user_name="ana",
    channel_id="C1",
    team_id="T1",
)
RISKY = """name: risky
description: Asks for confirmation in chat.
runner_type: shell
entry_point: greet.sh
confirm: true
parameters:
  name:
    type: string
"""


# -- parsing ----------------------------------------------------------------------------------


def test_each_makes_one_run_per_value() -> None:
    assert commands.parse("run ops.restart host=web1,web2,web3 --each host") == RunMany(
        (
            Run("ops.restart", {"host": "web1"}),
            Run("ops.restart", {"host": "web2"}),
            Run("ops.restart", {"host": "web3"}),
        )
    )
    assert commands.parse('run ops.restart host=["a", "b"] force=yes --each host') == RunMany(
        (
            Run("ops.restart", {"host": "a", "force": "yes"}),
            Run("ops.restart", {"host": "b", "force": "yes"}),
        )
    )


def test_one_run_per_line() -> None:
    text = 'run core.echo message=a\n\ncore.echo message="b c"\nrun examples.greet name=x'
    assert commands.parse(text) == RunMany(
        (
            Run("core.echo", {"message": "a"}),
            Run("core.echo", {"message": "b c"}),
            Run("examples.greet", {"name": "x"}),
        )
    )
    assert commands.parse("run\ncore.echo message=a\ncore.echo message=b") == RunMany(
        (Run("core.echo", {"message": "a"}), Run("core.echo", {"message": "b"}))
    )


def test_a_comma_without_each_is_a_plain_value() -> None:
    assert commands.parse("run core.echo message=a,b") == Run("core.echo", {"message": "a,b"})


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("run core.echo --each message", "`--each message`: give the values"),
        ("run core.echo message=a,,b --each message", "a value is empty"),
        ("run core.echo message=a\nnope", "line 2: `nope` is not an action reference"),
        ("run core.echo m=a,b --each m\ncore.echo m=1", "`--each` works on a single line"),
        ("run core.echo m=" + ",".join("x" * 101) + " --each m", "at most 100 runs, got 101"),
        ("run " + "\n".join(["core.echo m=1"] * 101), "at most 100 runs, got 101"),
    ],
)
def test_bad_batches_are_explained(text: str, says: str) -> None:
    with pytest.raises(UsageError) as caught:
        commands.parse(text)
    assert says in caught.value.message


# -- through the gate -------------------------------------------------------------------------


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    packs = tmp_path / "packs"
    shutil.copytree(ROOT / "packs", packs)
    (packs / "examples" / "actions" / "risky.yaml").write_text(RISKY)
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp_path}/t.db",
            data_dir=tmp_path / "data",
            packs_path=str(packs),
            admin_password="x" * 12,
            kill_grace_s=0.5,
        )
    )
    await rt.start_worker()
    yield rt
    await rt.close()


async def test_a_batch_replies_with_a_row_per_execution_and_runs_them(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle(
        "run examples.greet name=web1,web2,web3 --each name", SLACK, "slack-signature:v0=abc"
    )
    assert reply.ok, reply.text
    ids = reply.extra["execution_ids"]
    assert len(ids) == 3
    lines = reply.text.splitlines()
    assert lines[0] == "Batch of 3 queued:"
    for line, execution_id, host in zip(lines[1:], ids, ("web1", "web2", "web3"), strict=True):
        assert line == f"#{execution_id} `examples.greet` `name={host} shout=false`"
    for execution_id in ids:
        record = await eventually(
            lambda i=execution_id: runtime.service.get(i),
            f"execution {execution_id} to complete",
            20,
            interval_s=0.02,
            done=lambda r: r.status == "completed",
        )
        assert record.requester["identity"] == "U1"
        _, route = await runtime.service.get_with_route(execution_id)
        assert route.chat["channel"] == "C1"
    entries, _ = await runtime.audit.list(actor="U1", verb="run", outcome="accepted")
    assert sorted(e["execution_id"] for e in entries) == sorted(ids)
    # Slack sends the same signed request again: the same executions, nothing new.
    again = await CommandHandler(runtime).handle(
        "run examples.greet name=web1,web2,web3 --each name", SLACK, "slack-signature:v0=abc"
    )
    assert again.extra["execution_ids"] == ids
    assert "not run again" in again.text


async def test_a_bad_line_refuses_the_whole_batch(runtime: Runtime) -> None:
    before = await runtime.service.count_by_status()
    reply = await CommandHandler(runtime).handle(
        "run core.echo message=one\nexamples.wait seconds=soon\ncore.echo message=three", SLACK
    )
    assert not reply.ok
    assert reply.text.startswith("Invalid parameters: executions[1].parameters: "), reply.text
    assert await runtime.service.count_by_status() == before


async def test_a_confirmation_action_is_not_run_in_a_batch(runtime: Runtime) -> None:
    before = await runtime.service.count_by_status()
    reply = await CommandHandler(runtime).handle("run examples.risky name=a,b --each name", SLACK)
    assert not reply.ok
    assert reply.text.startswith("Refused: executions[0]: examples.risky asks for confirmation"), (
        reply.text
    )
    assert await runtime.service.count_by_status() == before
    # On its own it asks, as ever.
    alone = await CommandHandler(runtime).handle("run examples.risky name=a", SLACK)
    assert "confirm_code" in alone.extra


async def test_a_role_that_may_not_run_gets_nothing_run(runtime: Runtime) -> None:
    viewer = ChatContext(
        source="slack", sink="slack", user_id="U2", user_name="bo", role="viewer", channel_id="C1"
    )
    before = await runtime.service.count_by_status()
    reply = await CommandHandler(runtime).handle(
        "run core.echo message=a\ncore.echo message=b", viewer
    )
    assert not reply.ok
    assert reply.text.startswith("Not allowed: executions[0]: "), reply.text
    assert await runtime.service.count_by_status() == before
    entries, _ = await runtime.audit.list(actor="U2", outcome="denied")
    assert entries


def test_a_quoted_value_over_several_lines_is_still_one_run() -> None:
    assert commands.parse('run core.echo message="one\ntwo"') == Run(
        "core.echo", {"message": "one\ntwo"}
    )
