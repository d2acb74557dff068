"""``history``, ``last``, ``help`` and "did you mean" through the command handler as the
terminal chat (``attune chat``) uses it, against a real runtime (SQLite, in-process broker, a
worker) whose viewer may view only ``core.*``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.handler import ChatContext, CommandHandler
from config import Settings
from engine.runtime import Runtime, build_runtime
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]


def terminal(user: str, role: str) -> ChatContext:
    return ChatContext(
        source="chat",
        sink="terminal",
        user_id=user,
        user_name=user,
        role=role,
        channel_id="terminal",
        session="s1",
    )


ADMIN = terminal("ana", "admin")
VIEWER = terminal("vic", "viewer")


async def finished(rt: Runtime, execution_id: int) -> None:
    await eventually(
        lambda: rt.service.get(execution_id),
        f"#{execution_id} to finish",
        10,
        interval_s=0.02,
        done=lambda r: r.status == "completed",
    )


@pytest.fixture(scope="module")
async def runtime(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Runtime]:
    tmp = tmp_path_factory.mktemp("chat-history")
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp}/t.db",
            data_dir=tmp,
            packs_path=str(ROOT / "packs"),
            admin_password="x" * 12,
            permissions={"viewer": {"view": ["core.*"]}},
        )
    )
    await rt.start_worker()
    handler = CommandHandler(rt)
    for text in ('run core.echo message="first"', "run examples.greet name=Ops"):
        reply = await handler.handle(text, ADMIN)
        assert reply.execution_id is not None, reply.text
        await finished(rt, reply.execution_id)
    yield rt
    await rt.close()


async def test_history_is_scoped_by_what_the_viewer_may_view(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    mine = (await handler.handle("history", ADMIN)).text.splitlines()
    assert mine[0] == "*Recent executions* (2 of 2, newest first):"
    assert mine[1].startswith("• #2 `examples.greet` completed in ")
    assert mine[1].endswith(" · ana · just now")
    assert mine[2].startswith("• #1 `core.echo` completed in ")

    seen = (await handler.handle("history", VIEWER)).text
    assert "#1 `core.echo`" in seen
    assert "examples.greet" not in seen
    assert "(1 of 1," in seen
    refused = await handler.handle("history examples.greet", VIEWER)
    assert not refused.ok
    assert "Not allowed: the viewer role lacks the 'view' permission on examples.greet" in (
        refused.text
    )
    by_pack = (await handler.handle("history examples 1", ADMIN)).text
    assert "#2 `examples.greet`" in by_pack
    assert "`history examples 50` shows up to 50." not in by_pack  # nothing more to show
    assert "No executions by bob" in (await handler.handle("history @bob", ADMIN)).text
    assert "#1 `core.echo`" in (await handler.handle("history @ana 5", ADMIN)).text


async def test_last_is_your_own_with_its_output(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    last = await handler.handle("last", ADMIN)
    assert last.ok
    assert last.execution_id == 2
    assert "*Your last execution*: #2 `examples.greet` completed" in last.text
    assert "Hello, Ops!" in last.text
    nothing = await handler.handle("last", VIEWER)
    assert "You have not run anything yet" in nothing.text


async def test_help_lists_what_you_may_run(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    listing = (await handler.handle("help", ADMIN)).text
    assert "*What you may run*" in listing
    assert "\n*core*\n• `core.ask`" in listing
    assert "\n*examples*\n• `examples." in listing
    assert "\n• `examples.disk_usage` — Report disk usage" in listing
    assert "`run <pack.action> key=value ...`" in listing
    assert "You may not run any action" in (await handler.handle("help", VIEWER)).text


@pytest.mark.parametrize(
    ("ctx", "text", "says"),
    [
        (ADMIN, "run core.ecoh message=x", "Did you mean `core.echo`?"),
        (ADMIN, "help examples.gret", "Did you mean `examples.greet`?"),
        (ADMIN, "history core.ehco", "Did you mean `core.echo`?"),
        (VIEWER, "history examples.gret", "Not allowed"),
        (ADMIN, "hsitory", "Did you mean `history`?"),
    ],
)
async def test_typos_get_did_you_mean(
    runtime: Runtime, ctx: ChatContext, text: str, says: str
) -> None:
    reply = await CommandHandler(runtime).handle(text, ctx)
    assert not reply.ok
    assert says in reply.text


async def test_a_viewer_is_offered_only_what_they_may_view(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("help examples.gret", VIEWER)
    assert "not found" in reply.text
    assert "examples.greet" not in reply.text


async def test_actions_and_help_of_an_action_show_only_what_the_viewer_may_view(
    runtime: Runtime,
) -> None:
    handler = CommandHandler(runtime)
    listed = (await handler.handle("actions", VIEWER)).text
    assert "`core.echo`" in listed
    assert "examples." not in listed  # the viewer may view core.* only
    assert "`examples.greet`" in (await handler.handle("actions", ADMIN)).text
    refused = await handler.handle("help examples.greet", VIEWER)
    assert not refused.ok
    assert "'view' permission on examples.greet" in refused.text
    assert "dotenv" not in refused.text  # nothing of the action is shown
    assert (await handler.handle("help core.echo", VIEWER)).ok


async def test_the_same_schedule_request_twice_makes_one_schedule(runtime: Runtime) -> None:
    """A Slack retry of ``schedule ...`` that reaches another process carries the same key."""
    handler = CommandHandler(runtime)
    text = "schedule every 1h run core.noop"
    first = await handler.handle(text, ADMIN, idempotency_key="slack-event:EvSched1")
    again = await handler.handle(text, ADMIN, idempotency_key="slack-event:EvSched1")
    other = await handler.handle(text, ADMIN, idempotency_key="slack-event:EvSched2")
    for reply in (first, again, other):
        assert reply.ok, reply.text
    numbers = [re.search(r"Schedule #(\d+)", r.text) for r in (first, again, other)]
    assert all(numbers), (first.text, again.text, other.text)
    ids = [int(n.group(1)) for n in numbers if n]
    assert ids[0] == ids[1] != ids[2]
    for schedule_id in {ids[0], ids[2]}:
        assert (await handler.handle(f"unschedule {schedule_id}", ADMIN)).ok
