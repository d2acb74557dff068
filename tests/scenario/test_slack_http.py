"""Scenarios of the Slack face in HTTP mode, driven over real HTTP.

One ``attune serve`` subprocess (SQLite, in-process broker) serves the module; its Web API client
points at a local stand-in of Slack (:mod:`tests.scenario.slack_standin`) which records every
call and injects faults. Slash commands are signed as Slack signs them. Every test uses its own
channel, so the stand-in's record and scripted faults of one test never touch another's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from bot.render import escape
from tests.e2e.conftest import Server, run_cli
from tests.scenario.harness import (
    API_WAIT_S,
    POLL_S,
    SIGNING_SECRET,
    SLACK_ACK_BUDGET_S,
    admin_api,
    deliveries,
    execution_count,
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


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-http")
    async with running_server("serve", scenario_env(tmp, standin), tmp) as srv:
        yield srv


# -- helpers ----------------------------------------------------------------------------------


def cards(standin: SlackStandIn, channel: str) -> list[Call]:
    """Successful top-level posts (status cards) in ``channel``."""
    return standin.find(
        "chat.postMessage", target=channel, ok=True, where=lambda c: not c.params.get("thread_ts")
    )


def replies(standin: SlackStandIn, channel: str, ts: str) -> list[Call]:
    """Successful thread replies under the message ``ts``."""
    return standin.find(
        "chat.postMessage", target=channel, ok=True, where=lambda c: c.params.get("thread_ts") == ts
    )


def is_mention(call: Call) -> bool:
    """The thread message telling the requester (or a rule's owners) that a run failed."""
    return str(call.params.get("text") or "").startswith(("<@", "@"))


def updates(standin: SlackStandIn, channel: str) -> list[Call]:
    return standin.find("chat.update", target=channel, ok=True)


def the_one(calls: list[Call], what: str) -> Call:
    assert len(calls) == 1, f"expected exactly one {what}, got {len(calls)}: " + "; ".join(
        f"{c.method} {c.params}" for c in calls
    )
    return calls[0]


def mentions(call: Call, execution_id: int) -> bool:
    return re.search(rf"#{execution_id}\b", call.all_text()) is not None


def assert_card_flow(
    standin: SlackStandIn, channel: str, execution_id: int, action_ref: str, final_word: str
) -> tuple[Call, list[Call], Call | None]:
    """The execution's card posted once in ``channel``, updated in place unless it was posted
    already in its final state (the last version says ``final_word``), and at most one thread
    reply, in that order.

    Returns (card, updates, reply)."""
    card = the_one(
        [c for c in cards(standin, channel) if mentions(c, execution_id)],
        f"status card of #{execution_id} in {channel}",
    )
    assert action_ref in card.all_text(), card.all_text()
    ts = card.response["ts"]  # type: ignore[index]
    ups = [u for u in updates(standin, channel) if u.params["ts"] == ts]
    assert all(mentions(u, execution_id) for u in ups)
    assert all(u.at > card.at for u in ups)
    last = ups[-1] if ups else card
    assert final_word in last.all_text(), last.all_text()
    thread = [r for r in replies(standin, channel, ts) if not is_mention(r)]
    assert len(thread) <= 1, f"output posted {len(thread)} times"
    reply = thread[0] if thread else None
    if reply is not None:
        assert reply.at > last.at, "the output came before the card said it finished"
    return card, ups, reply


def printing_script(line: str, count: int) -> str:
    """An inline Python action writing ``line.format(i=i)`` for i in range(count)."""
    return (
        "import sys\n"
        f"line = {line!r}\n"
        f"sys.stdout.write(''.join(line.format(i=i) for i in range({count})))\n"
    )


async def _inline_action(api: aiohttp.ClientSession, name: str, script: str) -> str:
    ref = f"adhoc_{uuid.uuid4().hex[:8]}.{name}"
    async with api.post(
        "/api/v1/actions", json={"ref": ref, "entrypoint": script, "runtime_ref": "core.python"}
    ) as resp:
        assert resp.status == 201, await resp.text()
    return ref


# -- the happy path ---------------------------------------------------------------------------


async def test_run_posts_card_updates_it_and_replies_in_thread(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    res = await slash(server.base_url, standin, 'run core.echo message="hello world"')
    assert res.status == 200, res.body
    assert res.elapsed_s < SLACK_ACK_BUDGET_S, f"ack took {res.elapsed_s:.2f} s"
    assert res.body["response_type"] == "ephemeral"
    execution_id = res.execution_id
    assert "core.echo" in res.text

    record, rows = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert record["requester"]["user_id"] == res.user
    assert record["requester"]["channel"] == res.channel
    events = [r["event"] for r in rows]
    assert events[0] == "created", events
    assert events[-1] == "completed", events
    assert {(r["target"], r["state"]) for r in rows} == {("slack", "delivered")}, rows

    card, ups, reply = assert_card_flow(
        standin, res.channel, execution_id, "core.echo", "completed"
    )
    assert card.params["channel"] == res.channel
    assert f"<@{res.user}>" in card.all_text()
    assert f"<@{res.user}>" in ups[-1].all_text()
    assert reply is not None, "no thread reply with the output"
    assert "hello world" in reply.all_text()
    # The card is posted with the bot token the server was given.
    assert card.headers.get("Authorization") == "Bearer xoxb-test"
    # Nothing more than one card and one reply ever reached the channel.
    assert len(standin.find("chat.postMessage", target=res.channel)) == 2
    # What Slack made of it is the Slack sink's own row; the execution keeps only its route.
    database = server.env["ATTUNE_DATABASE_URL"].removeprefix("sqlite+aiosqlite:///")
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        (chat,) = db.execute("SELECT chat FROM executions WHERE id = ?", (execution_id,)).fetchone()
        kept = db.execute(
            "SELECT channel, message_id, output_posted, fallback"
            " FROM chat_messages WHERE execution_id = ? AND sink = 'slack'",
            (execution_id,),
        ).fetchall()
    finally:
        db.close()
    assert not {"ts", "card_status", "output_posted", "mode"} & set(json.loads(chat)), chat
    assert kept == [(res.channel, card.response["ts"], 1, 0)]  # type: ignore[index]


async def test_failed_run_shows_the_error_and_stderr(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    res = await slash(server.base_url, standin, "run examples.fail code=4")
    assert res.status == 200, res.body
    assert res.elapsed_s < SLACK_ACK_BUDGET_S
    execution_id = res.execution_id

    record, rows = await settle(api, execution_id)
    assert record["status"] == "failed"
    assert all(r["state"] == "delivered" for r in rows), rows
    error = record["result"]["error"]
    assert error

    _card, ups, reply = assert_card_flow(
        standin, res.channel, execution_id, "examples.fail", "failed"
    )
    assert escape(error) in ups[-1].all_text()
    assert reply is not None, "no thread reply with the stderr"
    assert "something went wrong (exit 4)" in reply.all_text()


# -- requests that must not run anything ------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "secret", "age_s"),
    [
        ("forged", "not-the-signing-secret", 0),
        ("stale", SIGNING_SECRET, 5 * 60 + 30),
        ("from the future", SIGNING_SECRET, -(5 * 60 + 30)),
    ],
)
async def test_unverified_requests_are_refused_and_run_nothing(
    server: Server,
    standin: SlackStandIn,
    api: aiohttp.ClientSession,
    case: str,
    secret: str,
    age_s: int,
) -> None:
    before = await execution_count(api)
    res = await slash(
        server.base_url,
        standin,
        'run core.echo message="should not run"',
        secret=secret,
        timestamp=int(time.time()) - age_s,
    )
    assert res.status == 401, (case, res.body)
    assert await execution_count(api) == before
    assert not standin.find("chat.*", target=res.channel)


async def test_tampered_body_is_refused(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """A correct signature over one body does not cover another."""
    from tests.scenario.slack_signing import signed_request, slash_fields

    channel = new_channel()
    fields = slash_fields(
        "run core.echo message=harmless",
        channel_id=channel,
        user_id=new_user(),
        response_url=standin.response_url("tampered"),
    )
    body, headers = signed_request(SIGNING_SECRET, fields)
    tampered = body.replace(b"harmless", b"tampered")
    before = await execution_count(api)
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/slack/events", data=tampered, headers=headers) as resp,
    ):
        assert resp.status == 401
    headers.pop("X-Slack-Signature")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{server.base_url}/slack/events", data=body, headers=headers) as resp,
    ):
        assert resp.status == 401
    assert await execution_count(api) == before
    assert not standin.find("chat.*", target=channel)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("run nosuch.action", ["nosuch.action"]),
        # (``run examples.greet``, a required parameter missing, opens a form in Slack:
        # tests/scenario/test_slack_forms.py; the terminal chat answers with the usage)
        ('run core.echo message="hello', ["unbalanced"]),
        ("help", ["What you may run", "`core.echo`", "run <pack.action>"]),
        ("", ["What you may run", "Commands"]),
        ("help examples.greet", ["examples.greet", "`name`", "required"]),
        ("run core.echo message=hi bogus=1", ["bogus"]),
        ("frobnicate", ["Usage"]),
    ],
)
async def test_bad_commands_and_help_get_an_ephemeral_answer_and_post_nothing(
    server: Server,
    standin: SlackStandIn,
    api: aiohttp.ClientSession,
    text: str,
    expected: list[str],
) -> None:
    before = await execution_count(api)
    res = await slash(server.base_url, standin, text)
    assert res.status == 200, res.body
    assert res.elapsed_s < SLACK_ACK_BUDGET_S
    assert res.body["response_type"] == "ephemeral"
    for word in expected:
        assert word.lower() in res.text.lower(), (text, res.text)
    assert "Traceback" not in res.text
    assert await execution_count(api) == before  # no execution: nothing can be posted later
    assert not standin.find("chat.postMessage", target=res.channel)


# -- Slack misbehaving ------------------------------------------------------------------------


async def test_rate_limited_post_is_retried_after_retry_after_and_posted_once(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    standin.queue("chat.postMessage", Canned.rate_limited(1), target=channel)
    res = await slash(server.base_url, standin, "run core.echo message=throttled", channel=channel)
    assert res.status == 200
    execution_id = res.execution_id

    record, rows = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert all(r["state"] == "delivered" for r in rows), rows

    card, _ups, reply = assert_card_flow(standin, channel, execution_id, "core.echo", "completed")
    assert reply is not None
    assert "throttled" in reply.all_text()
    tries = standin.find(
        "chat.postMessage", target=channel, where=lambda c: "thread_ts" not in c.params
    )
    assert [c.status for c in tries] == [429, 200]
    assert card.at - tries[0].at >= 1.0, "Retry-After was not honoured"


async def test_post_failing_for_a_while_then_recovering_delivers_once_in_order(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    # The SDK retries a 500 once by itself; the ok:false answer to chat.update is not retried
    # by the SDK, so at least one delivery must fail a whole attempt, back off and come back.
    standin.queue("chat.postMessage", *[Canned.server_error()] * 3, target=channel)
    standin.queue("chat.update", Canned.error("internal_error"), target=channel)
    first = await slash(server.base_url, standin, "run core.echo message=first", channel=channel)
    second = await slash(server.base_url, standin, "run core.echo message=second", channel=channel)
    assert first.status == second.status == 200

    attempts = 0
    for res, word in ((first, "first"), (second, "second")):
        record, rows = await settle(api, res.execution_id, timeout_s=20)
        assert record["status"] == "completed"
        assert all(r["state"] == "delivered" for r in rows), rows
        attempts = max(attempts, *(r["attempts"] for r in rows))
        _card, _ups, reply = assert_card_flow(
            standin, channel, res.execution_id, "core.echo", "completed"
        )
        assert reply is not None
        assert word in reply.all_text()
    assert attempts >= 2, "the faults never made a delivery retry"
    assert len(standin.find("chat.postMessage", target=channel, ok=False)) == 3
    # The update fault is met only if a card was posted before its run ended (a card posted
    # in its final state is not edited).
    assert len(standin.find("chat.update", target=channel, ok=False)) <= 1


async def test_long_output_is_cut_in_the_thread_and_uploaded_whole(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    line = "{i:05d} <&> ```" + "y" * 32 + "```\n"
    expected = "".join(line.format(i=i) for i in range(250))
    assert len(expected) > 10_000
    ref = await _inline_action(api, "long_output", printing_script(line, 250))

    res = await slash(server.base_url, standin, f"run {ref}")
    assert res.status == 200, res.body
    execution_id = res.execution_id
    record, rows = await settle(api, execution_id, timeout_s=20)
    assert record["status"] == "completed", record
    assert record["result"]["stdout"] == expected
    assert all(r["state"] == "delivered" for r in rows), rows

    card, _ups, reply = assert_card_flow(standin, res.channel, execution_id, ref, "completed")
    assert reply is not None
    assert 0 < len(reply.blocks) <= 50
    for text in reply.block_texts():
        assert len(text) <= 3000, len(text)
    assert "00000 &lt;&amp;&gt;" in reply.all_text()  # escaped, not raw mrkdwn
    assert "cut after" in reply.all_text()

    filename = f"execution-{execution_id}-stdout.txt"
    url_call = the_one(
        standin.find(
            "files.getUploadURLExternal",
            ok=True,
            where=lambda c: c.params.get("filename") == filename,
        ),
        "upload URL request",
    )
    assert int(url_call.params["length"]) == len(expected.encode())
    file_id = url_call.response["file_id"]  # type: ignore[index]
    upload = the_one(standin.find("upload", target=file_id), "upload")
    assert upload.body == expected.encode()
    complete = the_one(
        standin.find(
            "files.completeUploadExternal",
            ok=True,
            where=lambda c: file_id in json.dumps(c.params.get("files")),
        ),
        "completeUploadExternal",
    )
    assert complete.params["channel_id"] == res.channel
    assert complete.params["thread_ts"] == card.response["ts"]  # type: ignore[index]
    assert complete.at > upload.at > url_call.at


async def test_not_in_channel_falls_back_to_the_response_url_with_a_hint(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    key = uuid.uuid4().hex
    standin.always("chat.postMessage", Canned.error("not_in_channel"), target=channel)
    res = await slash(
        server.base_url,
        standin,
        'run core.echo message="via the response url"',
        channel=channel,
        response_key=key,
    )
    assert res.status == 200
    execution_id = res.execution_id
    record, rows = await settle(api, execution_id)
    assert record["status"] == "completed"
    assert all(r["state"] == "delivered" for r in rows), rows

    posts = standin.find("response_url", target=key)
    assert len(posts) == 2, [p.body for p in posts]  # the card, then the result
    bodies = [p.json() for p in posts]
    everything = "\n".join(p.all_text() for p in posts)
    assert "/invite" in everything, everything
    assert f"#{execution_id}" in posts[0].all_text()
    assert "completed" in posts[-1].all_text()
    assert "via the response url" in posts[-1].all_text()
    assert all(b["response_type"] == "ephemeral" for b in bodies)
    assert not standin.find("chat.postMessage", target=channel, ok=True)
    assert not standin.find("chat.update", target=channel)


# -- restart ----------------------------------------------------------------------------------


async def test_pending_deliveries_survive_a_restart_and_are_delivered_once(
    tmp_path: Any,
) -> None:
    stand_in = await SlackStandIn().start()
    try:
        outage = stand_in.always("chat.*", Canned.server_error())
        env = scenario_env(tmp_path, stand_in)
        first = await start_server("serve-1", env, tmp_path)
        try:
            res = await slash(first.base_url, stand_in, "run core.echo message=survivor")
            assert res.status == 200, res.body
            execution_id = res.execution_id
            async with admin_api(first.base_url) as api:
                await eventually(
                    lambda: _status(api, execution_id),
                    f"#{execution_id} to complete",
                    API_WAIT_S,
                    interval_s=POLL_S,
                    done=lambda s: s == "completed",
                )
                rows = await eventually(
                    lambda: deliveries(api, execution_id),
                    "a failed attempt at the card",
                    API_WAIT_S,
                    interval_s=POLL_S,
                    done=lambda rows: (
                        bool(rows) and rows[0]["state"] == "pending" and rows[0]["attempts"] >= 1
                    ),
                )
                assert rows[0]["last_error"], rows
                assert rows[-1]["event"] == "completed"
                assert rows[-1]["state"] == "pending"
        finally:
            await stop_server(first)
        assert not stand_in.find("chat.*", ok=True)

        stand_in.remove(outage)
        second = await start_server("serve-2", env, tmp_path)
        try:
            async with admin_api(second.base_url) as api:
                record, rows = await settle(api, execution_id, timeout_s=20)
        finally:
            await stop_server(second)
        assert record["status"] == "completed"
        assert all(r["state"] == "delivered" for r in rows), rows
        _card, _ups, reply = assert_card_flow(
            stand_in, res.channel, execution_id, "core.echo", "completed"
        )
        assert reply is not None
        assert "survivor" in reply.all_text()
    finally:
        await stand_in.close()


async def _status(api: aiohttp.ClientSession, execution_id: int) -> str:
    async with api.get(f"/api/v1/executions/{execution_id}") as resp:
        return str((await resp.json())["data"]["status"])


# -- callback_url -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def callback_secret(server: Server) -> bytes:
    code, out, err = await run_cli(["callback-secret"], server.env, server.tmp)
    assert code == 0, err
    secret = out.strip().splitlines()[-1].strip()
    assert secret
    return secret.encode()


async def _execute_with_callback(api: aiohttp.ClientSession, url: str, message: str) -> int:
    body = {"action_ref": "core.echo", "parameters": {"message": message}, "callback_url": url}
    async with api.post("/api/v1/executions/execute", json=body) as resp:
        data = await resp.json()
        assert resp.status == 201, data
        return int(data["data"]["id"])


async def test_callback_is_signed_and_delivered_once(
    standin: SlackStandIn, api: aiohttp.ClientSession, callback_secret: bytes
) -> None:
    name = uuid.uuid4().hex
    execution_id = await _execute_with_callback(api, standin.hook_url(name), "called back")
    _record, rows = await settle(api, execution_id)
    row = the_one(rows, "callback delivery")
    assert (row["target"], row["state"], row["attempts"]) == ("callback", "delivered", 1)

    hook = the_one(standin.find("hook", target=name), "callback POST")
    expected = "sha256=" + hmac.new(callback_secret, hook.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(hook.headers["X-Attune-Signature"], expected)
    assert hook.headers["X-Attune-Delivery"] == str(row["id"])
    assert hook.headers["X-Attune-Event"] == "execution.completed"
    assert abs(int(hook.headers["X-Attune-Timestamp"]) - time.time()) < 60
    body = hook.json()
    assert body["id"] == execution_id
    assert body["status"] == "completed"
    assert body["result"]["stdout"].strip() == "called back"


async def test_callback_answered_500_is_retried_once_more(
    standin: SlackStandIn, api: aiohttp.ClientSession, callback_secret: bytes
) -> None:
    name = uuid.uuid4().hex
    standin.queue("hook", Canned.status_only(500), target=name)
    execution_id = await _execute_with_callback(api, standin.hook_url(name), "second time")
    _record, rows = await settle(api, execution_id, timeout_s=20)
    row = the_one(rows, "callback delivery")
    assert (row["state"], row["attempts"]) == ("delivered", 2), row

    hooks = standin.find("hook", target=name)
    assert [h.status for h in hooks] == [500, 200]
    assert len({h.headers["X-Attune-Delivery"] for h in hooks}) == 1  # stable across retries
    for hook in hooks:
        expected = "sha256=" + hmac.new(callback_secret, hook.body, hashlib.sha256).hexdigest()
        assert hook.headers["X-Attune-Signature"] == expected


async def test_callback_answered_404_fails_with_the_error_visible(
    standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    name = uuid.uuid4().hex
    standin.always("hook", Canned.status_only(404), target=name)
    execution_id = await _execute_with_callback(api, standin.hook_url(name), "nobody home")
    _record, rows = await settle(api, execution_id)
    row = the_one(rows, "callback delivery")
    assert row["state"] == "failed", row
    assert row["attempts"] == 1
    assert "404" in (row["last_error"] or ""), row
    assert len(standin.find("hook", target=name)) == 1


async def test_sigterm_during_a_slack_call_hands_the_delivery_back(tmp_path: Any) -> None:
    """A graceful stop while ``chat.postMessage`` is in flight must not leave the card stuck
    behind the 120 s lease of the process that is gone: the next process posts it promptly."""
    stand_in = await SlackStandIn().start()
    try:
        channel = new_channel()
        stand_in.queue("chat.postMessage", Canned.held(60), target=channel)
        env = scenario_env(tmp_path, stand_in)
        first = await start_server("serve-1", env, tmp_path)
        try:
            res = await slash(
                first.base_url, stand_in, "run core.echo message=in-flight", channel=channel
            )
            assert res.status == 200, res.body
            await eventually(
                lambda: stand_in.find("chat.postMessage", target=channel), "the held card post"
            )
        finally:
            stopping = time.monotonic()
            await stop_server(first)
        assert time.monotonic() - stopping < 10, "shutdown waited on the held Slack call"
        stand_in.release_held()

        second = await start_server("serve-2", env, tmp_path)
        try:
            async with admin_api(second.base_url) as api:
                _record, rows = await settle(api, res.execution_id, timeout_s=6)
        finally:
            await stop_server(second)
        assert all(r["state"] == "delivered" for r in rows), rows
        # The first post was cut off by the shutdown before Slack answered. Whether Slack kept
        # it cannot be known, so the next process posts the card again: at least once, never
        # stuck. The card it tracks ends "completed", with the output once in its thread.
        ours = [c for c in cards(stand_in, channel) if mentions(c, res.execution_id)]
        assert 1 <= len(ours) <= 2, ours
        ts = ours[-1].response["ts"]  # type: ignore[index]
        ups = [u for u in updates(stand_in, channel) if u.params["ts"] == ts]
        assert "completed" in (ups[-1] if ups else ours[-1]).all_text()
        assert len(replies(stand_in, channel, ts)) == 1
    finally:
        await stand_in.close()


async def test_plain_text_5xx_from_slack_is_a_clean_retryable_failure(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """Slack's edge can answer 5xx with a text/plain body; the delivery shows the HTTP failure
    (not an internal crash) and is retried."""
    channel = new_channel()
    outage = standin.always(
        "chat.postMessage",
        Canned(503, "upstream connect error or disconnect/reset before headers", {}, "text/plain"),
        target=channel,
    )
    res = await slash(server.base_url, standin, "run core.echo message=edge", channel=channel)
    assert res.status == 200
    try:
        rows = await eventually(
            lambda: deliveries(api, res.execution_id),
            "a failed attempt at the card",
            API_WAIT_S,
            interval_s=POLL_S,
            done=lambda rows: bool(rows) and rows[0]["attempts"] >= 1,
        )
    finally:
        standin.remove(outage)
    first = rows[0]
    assert first["state"] == "pending", first
    assert "internal error" not in (first["last_error"] or ""), first["last_error"]
    assert "503" in (first["last_error"] or ""), first["last_error"]
    _record, rows = await settle(api, res.execution_id)
    assert all(r["state"] == "delivered" for r in rows), rows
    assert_card_flow(standin, channel, res.execution_id, "core.echo", "completed")


async def test_markup_heavy_output_is_never_cut_silently(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """2,600 characters of HTML: under the inline limit, but it grows past Slack's 3,000 when
    escaped. The thread must show all of it, or say it was cut and attach the file."""
    line = "<tr><td>row {i:03d}</td></tr>\n"
    expected = "".join(line.format(i=i) for i in range(100))
    assert 2000 < len(expected) < 2800
    ref = await _inline_action(api, "html", printing_script(line, 100))
    res = await slash(server.base_url, standin, f"run {ref}")
    assert res.status == 200, res.body
    record, _rows = await settle(api, res.execution_id)
    assert record["result"]["stdout"] == expected

    _card, _ups, reply = assert_card_flow(standin, res.channel, res.execution_id, ref, "completed")
    assert reply is not None
    for text in reply.block_texts():
        assert len(text) <= 3000
    shown_whole = "row 099" in reply.all_text()
    uploads = standin.find(
        "files.getUploadURLExternal",
        ok=True,
        where=lambda c: c.params.get("filename") == f"execution-{res.execution_id}-stdout.txt",
    )
    assert shown_whole or (uploads and "cut" in reply.all_text()), (
        "the output was cut without a marker or a file: " + reply.all_text()[-200:]
    )


async def test_cancel_from_slack_turns_the_card_cancelled(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel, user = new_channel(), new_user()
    res = await slash(
        server.base_url, standin, "run examples.wait seconds=60", channel=channel, user=user
    )
    assert res.status == 200
    execution_id = res.execution_id
    await eventually(
        lambda: _status(api, execution_id),
        f"#{execution_id} to run",
        API_WAIT_S,
        interval_s=POLL_S,
        done=lambda s: s == "running",
    )
    cancel = await slash(
        server.base_url, standin, f"cancel {execution_id}", channel=channel, user=user
    )
    assert cancel.status == 200
    assert cancel.elapsed_s < SLACK_ACK_BUDGET_S
    assert f"#{execution_id}" in cancel.text
    assert "cancel" in cancel.text.lower()
    record, rows = await settle(api, execution_id, timeout_s=15)
    assert record["status"] == "cancelled", record
    assert all(r["state"] == "delivered" for r in rows), rows
    assert_card_flow(standin, channel, execution_id, "examples.wait", "cancelled")
    # The cancel command itself posts nothing: one card in the channel.
    assert len(cards(standin, channel)) == 1


async def test_status_from_slack_is_ephemeral(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    res = await slash(server.base_url, standin, "run core.echo message=state")
    await settle(api, res.execution_id)
    status = await slash(server.base_url, standin, f"status {res.execution_id}")
    assert status.status == 200
    assert status.body["response_type"] == "ephemeral"
    assert f"#{res.execution_id}" in status.text
    assert "completed" in status.text
    assert not standin.find("chat.postMessage", target=status.channel)


async def test_not_in_channel_with_long_output_does_not_promise_a_missing_file(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    channel = new_channel()
    key = uuid.uuid4().hex
    standin.always("chat.postMessage", Canned.error("not_in_channel"), target=channel)
    ref = await _inline_action(api, "long_fallback", "print('x' * 5000)\n")
    res = await slash(server.base_url, standin, f"run {ref}", channel=channel, response_key=key)
    assert res.status == 200
    _record, rows = await settle(api, res.execution_id)
    assert all(r["state"] in {"delivered", "failed"} for r in rows), rows
    posts = standin.find("response_url", target=key)
    assert posts
    last = posts[-1].all_text()
    uploads = standin.find(
        "files.completeUploadExternal",
        ok=True,
        where=lambda c: c.params.get("channel_id") == channel,
    )
    if "attached as a file" in last:
        assert uploads, "the reply says the output is attached as a file, but none was uploaded"


async def test_a_slow_slack_does_not_slow_the_ack(
    server: Server, standin: SlackStandIn, api: aiohttp.ClientSession
) -> None:
    """The ack waits on the database write only: with Slack's API hanging, commands are still
    answered at once, and the card follows when Slack answers again."""
    channel = new_channel()
    fault = standin.always("chat.postMessage", Canned.held(30), target=channel)
    try:
        results = [
            await slash(server.base_url, standin, f"run core.echo message=slow{i}", channel=channel)
            for i in range(3)
        ]
        for res in results:
            assert res.status == 200, res.body
            assert res.elapsed_s < 1.0, f"ack took {res.elapsed_s:.2f} s while Slack hangs"
            assert f"#{res.execution_id}" in res.text
        await eventually(
            lambda: standin.find("chat.postMessage", target=channel), "the held card post"
        )
    finally:
        standin.remove(fault)
        standin.release_held()
    for res in results:
        record, rows = await settle(api, res.execution_id)
        assert record["status"] == "completed"
        assert all(r["state"] == "delivered" for r in rows), rows
