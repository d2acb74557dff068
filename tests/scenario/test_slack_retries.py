"""Retries as Slack shows them, end to end: a run started by a slash command that times out
is retried in the same channel, and the retry's card names its chain ("retry 1 of 1 of #12").

One ``attune serve`` (SQLite, in-process broker, its worker and retry sweep in the same
process) with its Slack Web API pointed at the stand-in; a short back-off.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest

from tests.e2e.conftest import Server
from tests.scenario.harness import (
    API_WAIT_S,
    POLL_S,
    admin_api,
    get_json,
    new_channel,
    running_server,
    scenario_env,
    settle,
    slash,
)
from tests.scenario.slack_standin import Call, SlackStandIn
from tests.waiting import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
async def server(
    standin: SlackStandIn, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Server]:
    tmp = tmp_path_factory.mktemp("scenario-retries")
    env = scenario_env(
        tmp,
        standin,
        ATTUNE_RETRY_BACKOFF_BASE_S="0.3",
        ATTUNE_RETRY_BACKOFF_MAX_S="0.5",
        ATTUNE_RETRY_POLL_S="0.1",
        ATTUNE_KILL_GRACE_S="0.5",
    )
    async with running_server("serve", env, tmp) as srv:
        yield srv


def _says(call: Call, text: str) -> bool:
    return text in str(call.params.get("text", "")) or text in json.dumps(
        call.params.get("blocks") or []
    )


async def test_a_timed_out_run_is_retried_in_its_channel_with_a_card_naming_the_chain(
    server: Server, standin: SlackStandIn
) -> None:
    pack = f"sr_{uuid.uuid4().hex[:8]}"
    ref = f"{pack}.hang"
    async with admin_api(server.base_url) as api:
        async with api.post("/api/v1/packs", json={"ref": pack, "label": pack}) as resp:
            assert resp.status == 201, await resp.text()
        action = {
            "ref": ref,
            "pack_ref": pack,
            "label": "hang",
            "entrypoint": "sleep 30",
            "runtime_ref": "core.shell",
            "timeout_seconds": 0.5,
            "max_retries": 1,
        }
        async with api.post("/api/v1/actions", json=action) as resp:
            assert resp.status == 201, await resp.text()

        channel = new_channel()
        reply = await slash(server.base_url, standin, f"run {ref}", channel=channel)
        assert reply.status == 200, reply.body
        first = reply.execution_id

        async def retried() -> list[dict[str, object]]:
            body = await get_json(api, f"/api/v1/executions?original_execution={first}")
            return list(body["items"])

        [retry] = await eventually(
            retried, f"the retry of #{first}", API_WAIT_S, interval_s=POLL_S, done=bool
        )
        record, _ = await settle(api, int(str(retry["id"])), API_WAIT_S)
        assert (record["status"], record["retry_count"], record["original_execution"]) == (
            "timeout",
            1,
            first,
        )
        assert record["retry_due_at"] is None, "max_retries used up"

    chain = f"retry 1 of 1 of #{first}"
    # The retry's card: posted in the channel (not in a thread), then edited as it moves.
    cards = standin.find(
        "chat.*",
        target=channel,
        ok=True,
        where=lambda c: not c.params.get("thread_ts") and _says(c, f"#{retry['id']} "),
    )
    assert [c.method for c in cards][:1] == ["chat.postMessage"], cards
    assert all(_says(c, chain) for c in cards), [c.params.get("text") for c in cards]
    assert _says(cards[-1], "timeout")
