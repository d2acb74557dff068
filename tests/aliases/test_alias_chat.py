"""Action aliases in chat, through the command handler against a real runtime (SQLite, the
in-process broker, a worker): a match runs as ``run`` does, the ack and result formats, the
most specific alias, the ambiguity error, no match, ``help``, permissions, confirmation, and
a malformed alias file reported while its pack loads."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bot import alias_chat
from bot.handler import ChatContext, CommandHandler
from bot.terminal import TerminalSink
from config import Settings
from engine.records import Delivery
from engine.runtime import Runtime, build_runtime
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
SLACK = ChatContext(
    source="slack", sink="slack", user_id="U1", user_name="ana", channel_id="C1", team_id="T1"
)


def chat_pack(folder: Path) -> Path:
    """A pack with aliases of every kind, one malformed alias file and one bad format."""
    pack = folder / "chat"
    (pack / "actions").mkdir(parents=True)
    (pack / "aliases").mkdir()
    (pack / "pack.yaml").write_text("ref: chat\nversion: 1.0.0\n")
    (pack / "actions" / "show.sh").write_text("#!/bin/sh\ncat\n")
    (pack / "actions" / "show.sh").chmod(0o755)
    (pack / "actions" / "show.yaml").write_text(
        "name: show\nentry_point: show.sh\nrunner_type: shell\noutput_format: json\n"
        "parameters:\n"
        "  tags: {type: array}\n"
        "  count: {type: integer}\n"
        "  env: {type: string}\n"
    )
    (pack / "actions" / "danger.yaml").write_text(
        "name: danger\nentry_point: show.sh\nrunner_type: shell\nconfirm: true\n"
        "parameters:\n  target: {type: string, required: true}\n"
    )
    aliases = {
        "show.yaml": {
            "name": "show",
            "action_ref": "chat.show",
            "description": "Show tags",
            "formats": ["show {{tags}} times {{count=1}}"],
            "immutable_parameters": {"env": "{{ 'pro' ~ 'd' }}"},
            "ack": {"format": "showing {{ execution.parameters.tags | join('+') }}"},
            "result": {"format": "got {{ execution.result.data.tags | length }} tags"},
        },
        "say.yaml": {"name": "say", "action_ref": "core.echo", "formats": ["say {{message}}"]},
        "say_now.yaml": {
            "name": "say_now",
            "action_ref": "core.echo",
            "formats": ["say {{message}} now"],
        },
        "yell_a.yaml": {
            "name": "yell_a",
            "action_ref": "core.echo",
            "formats": ["yell {{message}}"],
        },
        "yell_b.yaml": {"name": "yell_b", "action_ref": "core.echo", "formats": ["yell {{text}}"]},
        "quiet.yaml": {
            "name": "quiet",
            "action_ref": "core.echo",
            "formats": ["quietly {{message}}"],
            "ack": {"enabled": False},
            "result": {"enabled": False},
        },
        "nuke.yaml": {"name": "nuke", "action_ref": "chat.danger", "formats": ["nuke {{target}}"]},
        "badformat.yaml": {
            "name": "badformat",
            "action_ref": "core.echo",
            "formats": ["(a)\\1 {{x}}"],
        },
    }
    for name, body in aliases.items():
        (pack / "aliases" / name).write_text(json.dumps(body))  # JSON is YAML
    (pack / "aliases" / "broken.yaml").write_text(
        'name: broken\naction_ref: core.echo\nformats:\n  - "say {{x}}"\n description: bad indent\n'
    )
    return pack


@pytest.fixture(scope="module")
async def runtime(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Runtime]:
    tmp = tmp_path_factory.mktemp("alias-chat")
    chat_pack(tmp / "packs")
    rt = await build_runtime(
        Settings(
            database_url=f"sqlite+aiosqlite:///{tmp}/t.db",
            data_dir=tmp / "data",
            packs_path=f"{ROOT / 'packs'}:{tmp / 'packs'}",
            admin_password="x" * 12,
            kill_grace_s=0.5,
        )
    )
    await rt.start_worker()
    yield rt
    await rt.close()


async def ended(rt: Runtime, execution_id: int) -> Any:
    return await eventually(
        lambda: rt.service.get(execution_id),
        f"execution {execution_id} to end",
        15,
        interval_s=0.02,
        done=lambda r: r.status in ("completed", "failed", "timeout", "abandoned"),
    )


async def test_a_malformed_alias_file_is_named_and_the_pack_still_loads(runtime: Runtime) -> None:
    problems = "\n".join(runtime.pack_errors)
    assert "aliases/broken.yaml:5:" in problems  # the line of the YAML error
    assert len([p for p in runtime.pack_errors if "broken.yaml" in p]) == 1
    assert "invalid YAML" in problems
    assert "aliases/badformat.yaml" in problems
    assert "RE2" in problems
    refs = {a.ref for a in await alias_chat.aliases_of(runtime).list_aliases("chat")}
    assert "chat.show" in refs
    assert "chat.say" in refs
    assert not refs & {"chat.broken", "chat.badformat"}
    assert (await runtime.catalog.action("chat.show")).ref == "chat.show"


async def test_an_alias_runs_its_action_with_cast_values_and_its_formats(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("show a, b ,c times 3", SLACK)
    assert reply.ok, reply.text
    assert reply.text == "showing a+b+c"  # the alias's ack format
    assert reply.extra["alias"] == "chat.show"
    record = await ended(runtime, reply.execution_id)
    assert record.status == "completed", record.result
    # cast by the action's schema; the immutable parameter rendered in the sandbox
    assert record.config == {"tags": ["a", "b", "c"], "count": 3, "env": "prod"}
    _, route = await runtime.service.get_with_route(reply.execution_id)
    assert route.chat["alias"] == "chat.show"
    said = await alias_chat.alias_result(runtime, record, route.chat)
    assert said == (True, "got 3 tags")


async def test_the_result_format_is_what_the_terminal_prints(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("show x times 2", SLACK)
    record = await ended(runtime, reply.execution_id)
    _, route = await runtime.service.get_with_route(reply.execution_id)
    out = io.StringIO()
    sink = TerminalSink(out, alias_result=lambda e, c: alias_chat.alias_result(runtime, e, c))
    now = record.updated
    delivery = Delivery(1, record.id, "terminal:x", "completed", "sending", 0, None, now, now, None)
    await sink.deliver(delivery, record, route)
    assert out.getvalue().splitlines()[-1] == "got 1 tags"
    assert '"tags"' not in out.getvalue()  # not the usual output


async def test_a_typed_immutable_parameter_cannot_be_given(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("show a times 1 env=dev", SLACK)
    assert not reply.ok
    assert "sets env itself" in reply.text


async def test_the_most_specific_alias_wins(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    now = await handler.handle("say hello now", SLACK)
    plain = await handler.handle("say hello there", SLACK)
    assert now.extra["alias"] == "chat.say_now"
    assert plain.extra["alias"] == "chat.say"
    assert (await ended(runtime, now.execution_id)).config == {"message": "hello"}
    assert (await ended(runtime, plain.execution_id)).config == {"message": "hello there"}
    # no ack format: the usual acknowledgement
    assert f"Execution #{now.execution_id} queued: `core.echo`" in now.text


async def test_two_aliases_that_match_equally_are_an_error_naming_both(runtime: Runtime) -> None:
    _, before = await runtime.service.list(per_page=1)
    reply = await CommandHandler(runtime).handle("yell fire", SLACK)
    assert not reply.ok
    assert "chat.yell_a" in reply.text
    assert "chat.yell_b" in reply.text
    assert reply.execution_id is None
    _, after = await runtime.service.list(per_page=1)
    assert after == before  # nothing ran


async def test_ack_and_result_can_be_switched_off(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("quietly psst", SLACK)
    assert reply.ok
    assert reply.text == ""
    record = await ended(runtime, reply.execution_id)
    _, route = await runtime.service.get_with_route(record.id)
    assert await alias_chat.alias_result(runtime, record, route.chat) == (False, None)


async def test_no_match_suggests_the_closest_and_help(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("reboot nginx on web1", SLACK)
    assert not reply.ok
    assert reply.text.startswith("Unknown command `reboot`.")
    assert "`restart {service} on {host}`" in reply.text
    assert "`help`" in reply.text
    typo = await CommandHandler(runtime).handle("stauts 4", SLACK)
    assert "status" in typo.text  # the command, from the aliases' or the grammar's "did you mean"


async def test_a_known_command_used_wrongly_keeps_its_usage_message(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("status abc", SLACK)
    assert "needs an execution number" in reply.text


async def test_help_lists_aliases_and_help_words_finds_them(runtime: Runtime) -> None:
    handler = CommandHandler(runtime)
    listing = (await handler.handle("help", SLACK)).text
    assert "*Aliases*" in listing
    assert "`restart {service} on {host}`" in listing
    assert "`show {tags} times {count}`" in listing
    found = (await handler.handle("help restart", SLACK)).text
    assert "`restart {service} on {host}`" in found
    assert "`restart {service}`" in found
    assert "say" not in found
    nothing = (await handler.handle("help frobnicate", SLACK)).text
    assert "No alias matches" in nothing


async def test_permission_and_confirmation_are_those_of_run(runtime: Runtime) -> None:
    viewer = ChatContext(
        source="slack", sink="slack", user_id="U2", user_name="vic", channel_id="C1", role="viewer"
    )
    denied = await CommandHandler(runtime).handle("say hi", viewer)
    assert not denied.ok
    assert "lacks the 'run' permission on core.echo" in denied.text
    assert "*Aliases*" not in (await CommandHandler(runtime).handle("help", viewer)).text
    asked = await CommandHandler(runtime).handle("nuke web1", SLACK)
    code = asked.extra["confirm_code"]
    ran = await CommandHandler(runtime).handle(f"confirm {code}", SLACK)
    record = await ended(runtime, ran.execution_id)
    assert record.config == {"target": "web1"}
    _, route = await runtime.service.get_with_route(record.id)
    assert route.chat["alias"] == "chat.nuke"  # the confirmed run keeps its alias


async def test_example_pack_restart_alias(runtime: Runtime) -> None:
    reply = await CommandHandler(runtime).handle("restart nginx on web1", SLACK)
    assert reply.ok, reply.text
    assert reply.text.startswith("Restarting *nginx* on *web1* (execution #")
    record = await ended(runtime, reply.execution_id)
    assert record.config == {"service": "nginx", "host": "web1"}
    _, route = await runtime.service.get_with_route(record.id)
    enabled, text = await alias_chat.alias_result(runtime, record, route.chat) or (None, None)
    assert enabled
    assert text is not None
    assert "restart of *nginx* on *web1*: completed" in text
    assert "would restart nginx on web1" in text


@pytest.mark.parametrize("text", ["restart nginx on web1", "hello there"])
async def test_the_none_role_typing_free_text_is_told_it_has_no_access(
    runtime: Runtime, text: str
) -> None:
    nobody = ChatContext(
        source="slack", sink="slack", user_id="U9NONE", user_name="nn", channel_id="C9", role="none"
    )
    _, before = await runtime.service.list(per_page=1)
    reply = await CommandHandler(runtime).handle(text, nobody)
    assert not reply.ok
    assert reply.text.startswith("You have no access to Attune"), reply.text
    assert "U9NONE" in reply.text  # what an administrator adds
    assert "restart" not in reply.text  # no alias of what they may not run is shown
    _, after = await runtime.service.list(per_page=1)
    assert after == before
    entries, _ = await runtime.audit.list(actor="U9NONE", outcome="denied")
    assert entries
