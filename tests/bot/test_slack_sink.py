"""What the Slack sink (:mod:`bot.slack_sink`) sends for an execution's news, against the Slack
stand-in: one card edit per status shown, a mention of the requester or the rule's owners once
when a run ends badly (a retried delivery too), the live message edited into the output, and
the execution page's link."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack_sink import SlackSink
from engine.chat_messages import ChatMessage
from engine.outbox import DeliveryFailed
from engine.records import Delivery, Execution, Route
from tests.scenario.harness import new_channel
from tests.scenario.slack_standin import Call, Canned, SlackStandIn

WHEN = datetime(2026, 11, 29, tzinfo=UTC)
_ids = itertools.count(5000)
_delivery_ids = itertools.count(1)


class Messages:
    def __init__(self) -> None:
        self.rows: dict[int, ChatMessage] = {}

    async def get(self, execution_id: int, sink: str) -> ChatMessage | None:
        return self.rows.get(execution_id)

    async def save(self, message: ChatMessage) -> None:
        self.rows[message.execution_id] = message

    async def set_live_message(self, execution_id: int, sink: str, message_id: str) -> None:
        self.rows[execution_id] = replace(self.rows[execution_id], live_message_id=message_id)

    async def of_statuses(
        self, sink: str, statuses: Sequence[str], limit: int
    ) -> list[ChatMessage]:
        return []


def execution(
    execution_id: int,
    status: str,
    *,
    requester: dict[str, Any] | None = None,
    enforcement: int | None = None,
    **result: Any,
) -> Execution:
    ended = status in {"completed", "failed", "timeout", "abandoned", "cancelled"}
    return Execution(
        id=execution_id,
        action_ref="ops.deploy",
        status=status,
        config={"env": "prod"},
        parent=None,
        enforcement=enforcement,
        result={"duration_ms": 900, "stdout": "", "stderr": "", **result} if ended else None,
        created=WHEN,
        updated=WHEN,
        started_at=WHEN,
        finished_at=WHEN if ended else None,
        executor=None,
        requester=requester
        if requester is not None
        else {"identity": "U1", "source": "slack", "user_id": "U1"},
    )


def delivery(record: Execution, event: str, attempts: int = 0) -> Delivery:
    return Delivery(
        id=next(_delivery_ids),
        execution_id=record.id,
        target="slack",
        event=event,
        state="sending",
        attempts=attempts,
        last_error=None,
        created=WHEN,
        next_attempt_at=WHEN,
        delivered_at=None,
    )


class Rig:
    def __init__(self, standin: SlackStandIn) -> None:
        self.standin = standin
        self.messages = Messages()
        self.client = AsyncWebClient(token="xoxb-test", base_url=standin.api_url)
        self.channel = new_channel()
        self.owners: dict[int, list[str]] = {}

    def sink(self, *, page: bool = False) -> SlackSink:
        async def owners(enforcement_id: int) -> list[str]:
            return self.owners.get(enforcement_id, [])

        def page_url(execution_id: int) -> str | None:
            return f"https://attune.example/ui/executions/{execution_id}?exp=1&sig=x"

        return SlackSink(
            self.client, self.messages, owners=owners, page_url=page_url if page else None
        )

    async def send(self, sink: SlackSink, record: Execution, event: str) -> None:
        route = Route({"sink": "slack", "channel": self.channel}, None)
        await sink.deliver(delivery(record, event), record, route)

    def calls(self, method: str = "chat.*") -> list[Call]:
        return self.standin.find(method, target=self.channel)

    def thread(self, card_ts: str) -> list[Call]:
        return [
            c
            for c in self.calls("chat.postMessage")
            if c.params.get("thread_ts") == card_ts and c.ok
        ]


@pytest.fixture
async def rig(standin: SlackStandIn) -> AsyncIterator[Rig]:
    r = Rig(standin)
    try:
        yield r
    finally:
        if r.client.session is not None:
            await r.client.session.close()


def card_ts(rig: Rig, execution_id: int) -> str:
    ts = rig.messages.rows[execution_id].message_id
    assert ts
    return ts


async def test_a_fast_run_edits_its_card_once(rig: Rig) -> None:
    """Started is delivered after the run ended (the batch loaded it completed): the card is
    edited once, by started; completed finds it showing ``completed`` already."""
    sink = rig.sink()
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "requested"), "created")
    done = execution(execution_id, "completed", stdout="ok\n")
    await rig.send(sink, done, "started")
    await rig.send(sink, done, "completed")
    edits = rig.calls("chat.update")
    assert len(edits) == 1, [e.params for e in edits]
    assert "completed" in edits[0].all_text()
    assert rig.messages.rows[execution_id].shows_status == "completed"
    # And the output, once.
    assert len(rig.thread(card_ts(rig, execution_id))) == 1


async def test_a_failed_run_mentions_its_requester_once_even_when_retried(rig: Rig) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    failed = execution(execution_id, "failed", stderr="boom\n", error="exit 3")
    # The output's post is rate limited once, after the mention went out.
    rig.standin.queue(
        "chat.postMessage",
        Canned.rate_limited(1),
        target=rig.channel,
        where=lambda c: str(c.params.get("text", "")).startswith("Output of"),
    )
    with pytest.raises(DeliveryFailed) as raised:
        await rig.send(sink, failed, "completed")
    assert raised.value.retry_after_s == 1.0
    await rig.send(sink, failed, "completed")  # the outbox's retry

    thread = rig.thread(card_ts(rig, execution_id))
    mentions = [c for c in thread if "<@U1>" in c.all_text()]
    assert len(mentions) == 1, [c.all_text() for c in thread]
    assert "failed" in mentions[0].all_text()
    assert "exit 3" in mentions[0].all_text()
    outputs = [c for c in thread if c.params.get("text", "").startswith("Output of")]
    assert len(outputs) == 1
    assert rig.messages.rows[execution_id].notified


@pytest.mark.parametrize("status", ["timeout", "abandoned"])
async def test_timeout_and_abandoned_mention_too(rig: Rig, status: str) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    await rig.send(sink, execution(execution_id, status), "completed")
    thread = rig.thread(card_ts(rig, execution_id))
    assert [c for c in thread if "<@U1>" in c.all_text() and status in c.all_text()]


@pytest.mark.parametrize("status", ["completed", "cancelled"])
async def test_success_and_cancel_mention_nobody(rig: Rig, status: str) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    await rig.send(sink, execution(execution_id, status, stdout="fine\n"), "completed")
    assert not [c for c in rig.calls("chat.postMessage") if "<@" in c.params.get("text", "")]
    assert not rig.messages.rows[execution_id].notified


async def test_a_rule_run_mentions_the_rules_owners(rig: Rig) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    rig.owners[77] = ["UOWNER1", "alice", "UOWNER1"]
    rule = {"identity": "rule:ops.on_alert", "source": "rule", "rule": "ops.on_alert", "event": 4}
    await rig.send(sink, execution(execution_id, "running", requester=rule), "created")
    failed = execution(execution_id, "failed", requester=rule, enforcement=77, error="exit 1")
    await rig.send(sink, failed, "completed")
    (mention,) = [c for c in rig.thread(card_ts(rig, execution_id)) if "ended" in c.all_text()]
    text = mention.params["text"]
    assert text.count("<@UOWNER1>") == 1
    assert "@alice" in text


async def test_a_rule_without_owners_mentions_nobody(rig: Rig) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    rule = {"identity": "rule:ops.quiet", "source": "rule", "rule": "ops.quiet", "event": 5}
    await rig.send(sink, execution(execution_id, "running", requester=rule), "created")
    failed = execution(execution_id, "failed", requester=rule, enforcement=78, error="exit 1")
    await rig.send(sink, failed, "completed")
    assert [c for c in rig.thread(card_ts(rig, execution_id)) if "ended" in c.all_text()] == []
    assert not rig.messages.rows[execution_id].notified


async def test_the_live_message_becomes_the_output(rig: Rig) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    rig.messages.rows[execution_id] = replace(
        rig.messages.rows[execution_id], live_message_id="1700000000.424200"
    )
    await rig.send(sink, execution(execution_id, "completed", stdout="all done\n"), "completed")
    (edit,) = [c for c in rig.calls("chat.update") if c.params["ts"] == "1700000000.424200"]
    assert "all done" in edit.all_text()
    assert "live" not in edit.params["text"]
    # No second copy of the output in the thread.
    assert rig.thread(card_ts(rig, execution_id)) == []


async def test_a_live_message_with_nothing_to_show_says_so(rig: Rig) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    rig.messages.rows[execution_id] = replace(
        rig.messages.rows[execution_id], live_message_id="1700000000.434300"
    )
    await rig.send(sink, execution(execution_id, "completed", stdout="  \n"), "completed")
    (edit,) = [c for c in rig.calls("chat.update") if c.params["ts"] == "1700000000.434300"]
    assert "no output" in edit.all_text()


async def test_a_deleted_live_message_gets_the_output_as_a_reply(rig: Rig) -> None:
    sink = rig.sink()
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    rig.messages.rows[execution_id] = replace(
        rig.messages.rows[execution_id], live_message_id="1700000000.444400"
    )
    rig.standin.queue(
        "chat.update",
        Canned.error("message_not_found"),
        target=rig.channel,
        where=lambda c: c.params.get("ts") == "1700000000.444400",
    )
    await rig.send(sink, execution(execution_id, "completed", stdout="the end\n"), "completed")
    (reply,) = rig.thread(card_ts(rig, execution_id))
    assert "the end" in reply.all_text()


async def test_card_and_output_link_to_the_page_when_there_is_one(rig: Rig) -> None:
    sink = rig.sink(page=True)
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    await rig.send(sink, execution(execution_id, "completed", stdout="x\n"), "completed")
    url = f"https://attune.example/ui/executions/{execution_id}?exp=1&sig=x"
    (card,) = [c for c in rig.calls("chat.postMessage") if not c.params.get("thread_ts")]
    assert f"<{url}|View run>" in card.all_text()
    assert f"<{url}|View run>" in rig.calls("chat.update")[-1].all_text()
    (reply,) = rig.thread(card_ts(rig, execution_id))
    assert f"<{url}|View run>" in reply.all_text()


async def test_no_page_link_without_a_public_url(rig: Rig) -> None:
    sink = rig.sink(page=False)
    execution_id = next(_ids)
    await rig.send(sink, execution(execution_id, "running"), "created")
    assert "View run" not in rig.calls("chat.postMessage")[0].all_text()
