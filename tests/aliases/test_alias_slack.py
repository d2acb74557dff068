"""Action aliases through Slack: ``/attune <alias text>`` posted as Slack signs it to a real
``attune serve`` whose Web API client talks to the local Slack stand-in. The ack carries the
alias's ack format, the thread gets its result format, two equal aliases are an error naming
both, unknown text gets the closest matches, @mentions and DMs run aliases as well, and a
malformed alias file is reported by name and line while its pack (and its good aliases)
load."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.e2e.conftest import PACKS_PATH, Server
from tests.scenario.harness import (
    SLACK_ACK_BUDGET_S,
    new_channel,
    new_user,
    running_server,
    scenario_env,
    settle,
    slash,
)
from tests.scenario.slack_events import callback, direct, mention, post_event
from tests.scenario.slack_standin import SlackStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


def ops_pack(folder: Path) -> Path:
    pack = folder / "ops"
    (pack / "aliases").mkdir(parents=True)
    (pack / "pack.yaml").write_text("ref: ops\nversion: 1.0.0\n")
    for name, fmt in (("page_a", "page {{who}}"), ("page_b", "page {{person}}")):
        body = {"name": name, "action_ref": "core.echo", "formats": [fmt]}
        (pack / "aliases" / f"{name}.yaml").write_text(json.dumps(body))
    (pack / "aliases" / "echo.yaml").write_text(
        "name: echo\naction_ref: core.echo\nformats:\n  - 'echo {{message}}'\n"
        "result:\n  format: 'echoed: {{ execution.result.stdout | trim | upper }}'\n"
    )
    (pack / "aliases" / "hush.yaml").write_text(
        "name: hush\naction_ref: core.echo\nformats:\n  - 'hush {{message}}'\n"
        "ack:\n  enabled: false\n"
    )
    (pack / "aliases" / "broken.yaml").write_text(
        "name: broken\naction_ref: core.echo\nformats:\n  - ok\n  bad: [\n"
    )
    return pack


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("alias-slack")
    ops_pack(tmp / "more")
    env = scenario_env(tmp, standin, ATTUNE_PACKS_PATH=f"{PACKS_PATH}:{tmp / 'more'}")
    async with running_server("serve", env, tmp) as srv:
        yield srv


def said_in(standin: SlackStandIn, channel: str, text: str) -> bool:
    return any(
        text in call.all_text()
        for method in ("chat.postMessage", "chat.update")
        for call in standin.find(method, target=channel, ok=True)
    )


async def test_an_alias_runs_with_its_ack_and_result_formats(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    res = await slash(server.base_url, standin, "restart nginx on web1")
    assert res.status == 200, res.body
    assert res.elapsed_s < SLACK_ACK_BUDGET_S
    assert res.body["response_type"] == "ephemeral"
    assert res.text.startswith("Restarting *nginx* on *web1* (execution #"), res.text
    record, _ = await settle(api, res.execution_id)
    assert record["status"] == "completed"
    assert record["action_ref"] == "examples.restart_service"
    assert record["config"] == {"service": "nginx", "host": "web1"}
    assert record["requester"]["user_id"] == res.user  # run as the person, as `run` is
    assert record["requester"]["alias"] == "examples.restart_service"
    await eventually(
        lambda: said_in(standin, res.channel, "restart of *nginx* on *web1*: completed"),
        "the alias's result format in the channel",
        15,
        interval_s=0.05,
    )
    assert said_in(standin, res.channel, "would restart nginx on web1")


async def test_result_format_with_filters(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    res = await slash(server.base_url, standin, "echo hello there")
    assert "queued: `core.echo`" in res.text  # no ack format: the usual ack
    await settle(api, res.execution_id)
    await eventually(
        lambda: said_in(standin, res.channel, "echoed: HELLO THERE"),
        "the result format",
        15,
        interval_s=0.05,
    )


async def test_two_equal_aliases_are_an_error_naming_both(
    server: Server, standin: SlackStandIn
) -> None:
    res = await slash(server.base_url, standin, "page alice")
    assert res.status == 200
    assert "ops.page_a" in res.text
    assert "ops.page_b" in res.text
    assert "#" not in res.text  # nothing was queued


async def test_no_match_gets_the_closest_matches_and_help(
    server: Server, standin: SlackStandIn
) -> None:
    res = await slash(server.base_url, standin, "restrat nginx on web1")
    assert res.status == 200
    assert res.text.startswith("Unknown command `restrat`."), res.text
    assert "`restart {service} on {host}`" in res.text
    assert "`help`" in res.text


async def test_help_words_lists_matching_aliases(server: Server, standin: SlackStandIn) -> None:
    res = await slash(server.base_url, standin, "help restart")
    assert "`restart {service} on {host}`" in res.text
    assert "page" not in res.text


async def test_a_malformed_alias_file_is_named_and_its_pack_loads(server: Server) -> None:
    out = server.serve.stdout()
    assert "aliases/broken.yaml:5:" in out, out[-3000:]
    assert "invalid YAML" in out


async def test_the_good_aliases_of_that_pack_work(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    async with api.get("/api/v1/aliases?pack_ref=ops") as resp:
        refs = sorted(a["ref"] for a in (await resp.json())["items"])
    assert refs == ["ops.echo", "ops.hush", "ops.page_a", "ops.page_b"]


async def test_a_mention_and_a_dm_run_aliases_too(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel, user = new_channel(), new_user()
    event = mention(user, channel, "restart redis on cache1")
    assert (await post_event(server.base_url, callback(event)))[0] == 200
    await eventually(
        lambda: said_in(standin, channel, "Restarting *redis* on *cache1*"),
        "the alias's ack in the mention's thread",
        15,
        interval_s=0.05,
    )
    await eventually(
        lambda: said_in(standin, channel, "restart of *redis* on *cache1*: completed"),
        "the alias's result format",
        15,
        interval_s=0.05,
    )
    dm = "D" + channel[1:]
    assert (await post_event(server.base_url, callback(direct(user, dm, "page bob"))))[0] == 200
    await eventually(
        lambda: said_in(standin, dm, "ops.page_a"),
        "the ambiguity error in the DM",
        15,
        interval_s=0.05,
    )


async def test_a_mention_of_an_alias_without_ack_posts_no_empty_answer(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """``ack.enabled: false``: the run's card is all the channel gets (Slack refuses a
    message with no text, so an empty answer would only be an error in the log)."""
    channel, user = new_channel(), new_user()
    event = mention(user, channel, "hush psst")
    assert (await post_event(server.base_url, callback(event)))[0] == 200
    (card,) = await eventually(
        lambda: [
            c
            for c in standin.find("chat.postMessage", target=channel, ok=True)
            if "core.echo" in c.all_text()
        ],
        "the run's card in the channel",
        15,
        interval_s=0.05,
    )
    record, _ = await settle(api, int(card.all_text().split("#", 1)[1].split()[0].strip("*:")))
    assert record["config"] == {"message": "psst"}
    answers = standin.find(
        "chat.postMessage", target=channel, where=lambda c: c.params.get("thread_ts") == event["ts"]
    )
    assert [c for c in answers if not c.all_text().strip()] == []


async def test_what_a_run_holds_is_shown_as_text_not_slack_markup(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """A value typed (or printed by the action) such as ``<!channel>`` reaches Slack escaped
    in the alias's ack and result: it mentions nobody; the format's own markup stays."""
    res = await slash(server.base_url, standin, "restart <!channel> on web1")
    assert res.status == 200, res.body
    assert res.text.startswith("Restarting *&lt;!channel&gt;* on *web1*"), res.text
    record, _ = await settle(api, res.execution_id)
    assert record["config"]["service"] == "<!channel>"  # the run got what was typed
    await eventually(
        lambda: said_in(standin, res.channel, "would restart &lt;!channel&gt; on web1"),
        "the escaped output in the alias's result",
        15,
        interval_s=0.05,
    )
    assert not said_in(standin, res.channel, "<!channel>")
