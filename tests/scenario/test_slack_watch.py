"""What Slack shows while a run lasts and after, end to end: the live message in the card's
thread (first line before the run ends, edited in place within a rate per channel, 429s
honoured, turned into the final output, replaced after a restart), the mention of the requester
or the rule's owners on failure (once, even when the delivery is retried), one card edit for a
fast run, and the execution page's link (``ATTUNE_PUBLIC_URL``).

One ``attune serve`` (SQLite, in-process broker, its worker in the same process) for the
module, with its Slack Web API pointed at the stand-in; each test has its own channel.
"""

from __future__ import annotations

import contextlib
import itertools
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from bot.render import LIVE_WORD
from tests.conftest import AMQP_URL
from tests.e2e.conftest import (
    _LISTENING,
    _WORKER_UP,
    START_TIMEOUT_S,
    Server,
    _fresh_postgres_database,
    _private_exchange,
    spawn,
    stop,
    wait_for_line,
)
from tests.scenario.harness import (
    API_WAIT_S,
    POLL_S,
    admin_api,
    execution,
    new_channel,
    new_user,
    running_server,
    scenario_env,
    settle,
    slash,
    start_server,
    stop_server,
)
from tests.scenario.slack_standin import Call, Canned, SlackStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.e2e

PUBLIC_URL = "https://attune.watch.example"
#: The live scheduler's pace per channel (bot.slack_live's default).
INTERVAL_S = 1.0
#: Slack stamps calls on arrival: allow this much jitter on a gap.
JITTER_S = 0.15


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-watch")
    env = scenario_env(tmp, standin, ATTUNE_PUBLIC_URL=PUBLIC_URL)
    async with running_server("serve", env, tmp) as srv:
        yield srv


def ticking_script(lines: int, every_s: float = 0.2, code: int = 0) -> str:
    """An inline Python action printing ``tick <i> at <unix time>`` every ``every_s``."""
    return (
        "import sys, time\n"
        f"for i in range({lines}):\n"
        "    print(f'tick {i} at {time.time():.3f}', flush=True)\n"
        f"    time.sleep({every_s})\n"
        f"sys.exit({code})\n"
    )


async def inline_action(api: aiohttp.ClientSession, script: str) -> str:
    ref = f"watch_{uuid.uuid4().hex[:8]}.tick"
    body = {"ref": ref, "entrypoint": script, "runtime_ref": "core.python"}
    async with api.post("/api/v1/actions", json=body) as resp:
        assert resp.status == 201, await resp.text()
    return ref


def card_of(standin: SlackStandIn, channel: str, execution_id: int) -> Call:
    (card,) = [
        c
        for c in standin.find("chat.postMessage", target=channel, ok=True)
        if not c.params.get("thread_ts") and re.search(rf"#{execution_id}\b", c.all_text())
    ]
    return card


def thread(standin: SlackStandIn, channel: str, ts: str) -> list[Call]:
    return standin.find(
        "chat.postMessage", target=channel, ok=True, where=lambda c: c.params.get("thread_ts") == ts
    )


def is_live(call: Call) -> bool:
    return f"({LIVE_WORD} output)" in str(call.params.get("text") or "")


def is_output(call: Call) -> bool:
    return str(call.params.get("text") or "").startswith("Output of")


def edits_of(standin: SlackStandIn, channel: str, ts: str) -> list[Call]:
    return standin.find("chat.update", target=channel, where=lambda c: c.params.get("ts") == ts)


async def first_live_message(standin: SlackStandIn, channel: str, execution_id: int) -> Call:
    async def probe() -> Call | None:
        cards = [
            c
            for c in standin.find("chat.postMessage", target=channel, ok=True)
            if not c.params.get("thread_ts") and re.search(rf"#{execution_id}\b", c.all_text())
        ]
        if not cards:
            return None
        ts = cards[0].response["ts"]  # type: ignore[index]
        live = [c for c in thread(standin, channel, ts) if is_live(c)]
        return live[0] if live else None

    found: Call = await eventually(
        probe, f"the live message of #{execution_id}", API_WAIT_S, interval_s=0.02
    )
    return found


# -- the live message -------------------------------------------------------------------------


async def test_the_first_line_shows_live_before_the_run_ends_and_becomes_the_output(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    ref = await inline_action(api, ticking_script(15))  # 3 s
    res = await slash(server.base_url, standin, f"run {ref}")
    assert res.status == 200, res.body
    execution_id = res.execution_id

    live = await first_live_message(standin, res.channel, execution_id)
    assert "tick 0 at" in live.all_text()
    # Seen while the run still goes on.
    assert (await execution(api, execution_id))["status"] == "running"

    record, rows = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert all(r["state"] == "delivered" for r in rows), rows
    card = card_of(standin, res.channel, execution_id)
    live_ts = live.response["ts"]  # type: ignore[index]
    edits = edits_of(standin, res.channel, live_ts)
    assert edits, "the live message was never edited"
    # The live message ends as the final output: nothing in the thread says it still runs.
    final = edits[-1]
    assert is_output(final), final.all_text()
    assert "tick 14 at" in final.all_text()
    assert LIVE_WORD + ":" not in final.all_text()
    replies = thread(standin, res.channel, card.response["ts"])  # type: ignore[index]
    assert replies == [live], [r.all_text() for r in replies]
    # While it ran, it was edited in place, never faster than about once a second.
    during = [live, *(e for e in edits if is_live(e))]
    assert len(during) >= 2, [e.all_text() for e in edits]
    gaps = [b.at - a.at for a, b in itertools.pairwise(during)]
    assert min(gaps) >= INTERVAL_S - JITTER_S, gaps


async def test_runs_sharing_a_channel_share_its_rate(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    ref = await inline_action(api, ticking_script(20))  # 4 s
    channel = new_channel()
    ids = []
    for _ in range(3):
        res = await slash(server.base_url, standin, f"run {ref}", channel=channel)
        assert res.status == 200, res.body
        ids.append(res.execution_id)
    for execution_id in ids:
        await settle(api, execution_id)
    live_calls = [
        c
        for c in standin.find("chat.*", target=channel, ok=True)
        if is_live(c) and c.method in {"chat.postMessage", "chat.update"}
    ]
    assert len(live_calls) >= 3, "the runs were not shown live"
    gaps = [b.at - a.at for a, b in itertools.pairwise(live_calls)]
    assert min(gaps) >= INTERVAL_S - JITTER_S, gaps
    # Every run had its turn.
    for execution_id in ids:
        assert any(f"#{execution_id} " in c.all_text() for c in live_calls), execution_id


async def test_a_429_on_a_live_edit_pauses_the_channel(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    ref = await inline_action(api, ticking_script(25))  # 5 s
    channel = new_channel()
    standin.queue("chat.update", Canned.rate_limited(2), target=channel, where=is_live)
    res = await slash(server.base_url, standin, f"run {ref}", channel=channel)
    assert res.status == 200, res.body
    record, _rows = await settle(api, res.execution_id)
    assert record["status"] == "completed"
    limited = standin.find("chat.update", target=channel, where=lambda c: c.status == 429)
    assert len(limited) == 1, "the 429 never came"
    later = [
        c for c in standin.find("chat.*", target=channel) if c.at > limited[0].at and is_live(c)
    ]
    assert later, "no live edit after the pause"
    assert later[0].at - limited[0].at >= 2 - JITTER_S, "Retry-After not honoured"


async def test_a_live_message_is_not_left_running_after_a_restart(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    env = scenario_env(tmp_path, standin, ATTUNE_SHUTDOWN_GRACE_S="0")
    first = await start_server("serve-1", env, tmp_path)
    try:
        async with admin_api(first.base_url) as api:
            ref = await inline_action(api, ticking_script(40))  # 8 s
        res = await slash(first.base_url, standin, f"run {ref}")
        assert res.status == 200, res.body
        live = await first_live_message(standin, res.channel, res.execution_id)
    finally:
        await stop_server(first)
    second = await start_server("serve-2", env, tmp_path)
    try:
        async with admin_api(second.base_url) as api:
            record, rows = await settle(api, res.execution_id, timeout_s=30)
    finally:
        await stop_server(second)
    assert all(r["state"] == "delivered" for r in rows), rows
    live_ts = live.response["ts"]  # type: ignore[index]
    edits = [e for e in edits_of(standin, res.channel, live_ts) if e.ok]
    assert edits, "the live message was left as it was"
    assert not is_live(edits[-1]), edits[-1].all_text()
    assert record["status"] in edits[-1].all_text() or is_output(edits[-1])


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_worker_in_another_process_is_shown_live_too(
    standin: SlackStandIn, tmp_path: Path
) -> None:
    """The server reads the output a separate worker stores (no in-process wake-up)."""
    async with contextlib.AsyncExitStack() as stack:
        env = scenario_env(
            tmp_path,
            standin,
            ATTUNE_DATABASE_URL=await stack.enter_async_context(_fresh_postgres_database()),
            ATTUNE_AMQP_URL=AMQP_URL,
            ATTUNE_AMQP_EXCHANGE=await stack.enter_async_context(_private_exchange()),
        )
        serve = spawn("serve", ["serve", "--no-worker"], env, tmp_path)
        worker = None
        try:
            match = await wait_for_line(serve, _LISTENING, START_TIMEOUT_S)
            base_url = match.group(1).rstrip("/")
            worker = spawn("worker", ["worker"], env, tmp_path)
            await wait_for_line(worker, _WORKER_UP, START_TIMEOUT_S)
            async with admin_api(base_url) as api:
                ref = await inline_action(api, ticking_script(15))  # 3 s
                res = await slash(base_url, standin, f"run {ref}")
                assert res.status == 200, res.body
                live = await first_live_message(standin, res.channel, res.execution_id)
                assert "tick 0 at" in live.all_text()
                assert (await execution(api, res.execution_id))["status"] == "running"
                record, _rows = await settle(api, res.execution_id)
            assert record["status"] == "completed"
            final = edits_of(standin, res.channel, live.response["ts"])[-1]  # type: ignore[index]
            assert is_output(final)
            assert "tick 14 at" in final.all_text()
        finally:
            problems = [p for p in [await stop(proc) for proc in (serve, worker) if proc] if p]
        assert not problems, problems


# -- mentions ---------------------------------------------------------------------------------


def mentions_in(calls: list[Call], who: str) -> list[Call]:
    return [c for c in calls if who in str(c.params.get("text") or "")]


async def test_a_failed_run_mentions_its_requester_once_even_when_the_delivery_is_retried(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel, user = new_channel(), new_user()
    # The output's reply is refused once (after the mention went out): the delivery is retried.
    standin.queue("chat.postMessage", Canned.rate_limited(1), target=channel, where=is_output)
    res = await slash(
        server.base_url, standin, "run examples.fail code=4", channel=channel, user=user
    )
    assert res.status == 200, res.body
    record, rows = await settle(api, res.execution_id)
    assert record["status"] == "failed"
    completed = [r for r in rows if r["event"] == "completed"]
    assert completed[0]["attempts"] >= 1, rows  # it failed once, then went out
    assert standin.find("chat.postMessage", target=channel, where=lambda c: c.status == 429)
    assert all(r["state"] == "delivered" for r in rows), rows
    card = card_of(standin, channel, res.execution_id)
    replies = thread(standin, channel, card.response["ts"])  # type: ignore[index]
    told = mentions_in(replies, f"<@{user}>")
    assert len(told) == 1, [r.all_text() for r in replies]
    assert "failed" in told[0].all_text()
    assert len([r for r in replies if is_output(r)]) == 1


async def test_a_completed_run_mentions_nobody(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    res = await slash(server.base_url, standin, 'run core.echo message="all good"')
    record, _rows = await settle(api, res.execution_id)
    assert record["status"] == "completed"
    card = card_of(standin, res.channel, res.execution_id)
    replies = thread(standin, res.channel, card.response["ts"])  # type: ignore[index]
    assert replies
    assert not mentions_in(replies, f"<@{res.user}>")


async def test_a_rule_run_that_fails_mentions_the_rules_owners(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    trigger = f"watch_{uuid.uuid4().hex[:8]}.hook"
    async with api.post("/api/v1/triggers", json={"ref": trigger}) as resp:
        assert resp.status == 201, await resp.text()
    async with api.post(f"/api/v1/triggers/{trigger}/webhooks/enable") as resp:
        key = (await resp.json())["data"]["webhook_key"]
    rule = f"{trigger.split('.')[0]}.on_hook"
    body = {
        "ref": rule,
        "trigger_ref": trigger,
        "action_ref": "examples.fail",
        "action_params": {"code": 3},
        "chat_channel": channel,
        "owners": ["UOWNER42", "alice"],
    }
    async with api.post("/api/v1/rules", json=body) as resp:
        got = await resp.json()
        assert resp.status == 201, got
        assert got["data"]["owners"] == ["UOWNER42", "alice"]
    async with api.post(f"/api/v1/webhooks/{key}", json={"payload": {"hello": 1}}) as resp:
        assert resp.status == 200, await resp.text()

    async def execution_of_rule() -> int | None:
        async with api.get("/api/v1/enforcements", params={"rule_ref": rule}) as resp:
            rows = (await resp.json())["items"]
        return next((r["execution_id"] for r in rows if r.get("execution_id")), None)

    execution_id: int = await eventually(
        execution_of_rule, "the rule's execution", API_WAIT_S, interval_s=POLL_S
    )
    record, _rows = await settle(api, execution_id)
    assert record["status"] == "failed"
    card = card_of(standin, channel, execution_id)
    (told,) = mentions_in(thread(standin, channel, card.response["ts"]), "<@UOWNER42>")  # type: ignore[index]
    assert "@alice" in told.all_text()


async def test_rule_owners_are_checked(api: aiohttp.ClientSession) -> None:
    body = {
        "ref": f"watch_{uuid.uuid4().hex[:8]}.bad",
        "trigger_ref": "core.intervaltimer",
        "action_ref": "core.noop",
        "owners": ["not an id"],
    }
    async with api.post("/api/v1/rules", json=body) as resp:
        got = await resp.json()
        assert resp.status == 400, got
    assert "owners" in got["error"], got


# -- the card ---------------------------------------------------------------------------------


async def test_a_fast_run_edits_its_card_at_most_once(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    ids = []
    for i in range(5):
        res = await slash(
            server.base_url, standin, f"run core.echo message=fast{i}", channel=channel
        )
        assert res.status == 200, res.body
        ids.append(res.execution_id)
    for execution_id in ids:
        await settle(api, execution_id)
        card = card_of(standin, channel, execution_id)
        edits = edits_of(standin, channel, card.response["ts"])  # type: ignore[index]
        assert len(edits) <= 1, [e.all_text() for e in edits]


async def test_card_and_output_link_to_the_execution_page(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    res = await slash(server.base_url, standin, 'run core.echo message="linked"')
    await settle(api, res.execution_id)
    card = card_of(standin, res.channel, res.execution_id)
    page = re.escape(f"{PUBLIC_URL}/ui/executions/{res.execution_id}")
    pattern = re.compile(rf"<{page}\?exp=\d+&sig=[\w-]+\|View run>")
    assert pattern.search(card.all_text()), card.all_text()
    (reply,) = [
        r
        for r in thread(standin, res.channel, card.response["ts"])  # type: ignore[index]
        if is_output(r)
    ]
    assert pattern.search(reply.all_text()), reply.all_text()
